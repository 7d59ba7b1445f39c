"""The three SSIM conventions against scikit-image itself, called exactly as each peer calls it.

- ``ssim_skimage`` is PredRNN's (thuml/predrnn-pytorch ``core/trainers/trainer.py``): predictions clipped to
  [0, 1], both frames cast with ``np.uint8(x * 255)``, then ``structural_similarity(pred, true, full=True,
  multichannel=True)`` on (H, W, C) uint8 arrays (data range 255 from the dtype).
- ``ssim_openstl`` is OpenSTL's (``openstl/core/metrics.py``): ``structural_similarity(pred.swapaxes(0, 2),
  true.swapaxes(0, 2), multichannel=True)`` on float frames in [0, 1] with scikit-image <= 0.19, whose default
  data range for floats was 2 (the dtype range -1..1); current scikit-image needs ``data_range=2`` to say so.
"""

import numpy as np
import pytest
import torch

from framecast.metrics import METRICS, ssim, ssim_openstl, ssim_skimage

skimage_metrics = pytest.importorskip("skimage.metrics")


def predictions(channels: int, seed: int = 0):
    """Moving-MNIST-like frames: sparse bright strokes, and a blurred and shifted prediction of them."""
    g = torch.Generator().manual_seed(seed)
    target = (torch.rand(2, 3, channels, 32, 36, generator=g) > 0.8).float()
    target = torch.nn.functional.avg_pool2d(target.flatten(0, 1), 3, 1, 1).view_as(target).clamp(0, 1)
    blurred = torch.nn.functional.avg_pool2d(target.flatten(0, 1), 5, 1, 2).view_as(target)
    pred = torch.roll(blurred, shifts=1, dims=-1) + 0.05 * torch.randn(target.shape, generator=g)
    return pred, target


def predrnn_ssim(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    p = np.minimum(np.maximum(pred.numpy(), 0), 1)
    out = np.zeros(pred.shape[:2])
    for b in range(pred.shape[0]):
        for t in range(pred.shape[1]):
            p8 = np.uint8(p[b, t].transpose(1, 2, 0) * 255)
            t8 = np.uint8(target[b, t].numpy().transpose(1, 2, 0) * 255)
            out[b, t], _ = skimage_metrics.structural_similarity(p8, t8, full=True, channel_axis=-1)
    return out


def openstl_ssim(pred: torch.Tensor, target: torch.Tensor) -> np.ndarray:
    p = np.minimum(np.maximum(pred.numpy().astype(np.float64), 0), 1)
    y = target.numpy().astype(np.float64)
    out = np.zeros(pred.shape[:2])
    for b in range(pred.shape[0]):
        for t in range(pred.shape[1]):
            out[b, t] = skimage_metrics.structural_similarity(p[b, t].swapaxes(0, 2), y[b, t].swapaxes(0, 2),
                                                              channel_axis=-1, data_range=2.0)
    return out


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_skimage_is_predrnns_call(channels):
    pred, target = predictions(channels)
    np.testing.assert_allclose(ssim_skimage(pred, target).double().numpy(), predrnn_ssim(pred, target), atol=1e-6)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_openstl_is_openstls_call(channels):
    pred, target = predictions(channels, seed=1)
    np.testing.assert_allclose(ssim_openstl(pred, target).double().numpy(), openstl_ssim(pred, target), atol=1e-6)


def test_the_three_conventions_differ_as_much_as_the_tables_do():
    pred, target = predictions(1, seed=2)
    values = {f.__name__: float(f(pred, target).mean()) for f in (ssim, ssim_skimage, ssim_openstl)}
    assert values["ssim_openstl"] > values["ssim"]  # data range 2 makes C1 and C2 four times larger: higher scores
    assert max(values.values()) - min(values.values()) > 0.01
    for name in values:
        assert name in METRICS and METRICS[name].tables


def test_perfect_frames_score_one_in_every_convention():
    _, target = predictions(3, seed=3)
    for f in (ssim, ssim_skimage, ssim_openstl):
        torch.testing.assert_close(f(target, target), torch.ones(2, 3))
