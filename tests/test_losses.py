import pytest
import torch

from framecast.losses import FrameLoss, gdl, parse_loss


def test_parse_loss_forms():
    assert parse_loss("mse") == {"mse": 1.0}
    assert parse_loss("mse+gdl") == {"mse": 1.0, "gdl": 1.0}
    assert parse_loss({"mse": 1, "gdl": 0.5}) == {"mse": 1.0, "gdl": 0.5}
    with pytest.raises(ValueError, match="loss names are"):
        parse_loss("mse+psnr")
    with pytest.raises(ValueError, match="weights"):
        parse_loss({"mse": -1})


def test_known_answers():
    target = torch.zeros(1, 1, 1, 2, 2)
    pred = torch.tensor([0.0, 1.0, 0.0, 0.5]).view(1, 1, 1, 2, 2)
    total, parts = FrameLoss("mse+l1")(pred, target)
    assert parts["mse"].item() == pytest.approx((1 + 0.25) / 4)
    assert parts["l1"].item() == pytest.approx(1.5 / 4)
    assert total.item() == pytest.approx((1.25 + 1.5) / 4)


def test_gdl_known_answer_and_invariance():
    target = torch.zeros(1, 1, 1, 3, 3)
    pred = torch.zeros(1, 1, 1, 3, 3)
    pred[..., 1, 1] = 1.0  # a single bright pixel: 2 vertical and 2 horizontal edges of size 1
    assert gdl(pred, target).item() == pytest.approx(2 / 6 + 2 / 6)
    assert gdl(target + 0.3, target).item() == 0.0  # a constant shift has the same gradients


def test_bits_needs_distribution():
    with pytest.raises(ValueError, match="logistic_mixture"):
        FrameLoss("bits")(torch.zeros(1, 1, 1, 2, 2), torch.zeros(1, 1, 1, 2, 2))


def test_ssim_loss_zero_for_identical():
    x = torch.rand(2, 3, 1, 16, 16)
    total, _ = FrameLoss("ssim")(x, x)
    assert total.item() == pytest.approx(0.0, abs=1e-5)
