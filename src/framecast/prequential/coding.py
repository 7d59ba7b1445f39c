"""What a block costs: the codelength of its clips under a predictor trained on the blocks before it.

What is coded. Every frame of every clip of the stream. Block 0 with the uniform code: 8 bits per sub-pixel.
In a later block, the first frame of each clip uniformly (8 bits per sub-pixel: nothing precedes it), then
each frame ``t >= 2`` with the predictor's distribution for it *given the true frames 1 .. t-1 of the clip*
(the receiver has decoded those already). A framecast predictor gives these next-frame predictions in one
rollout over the clip's first ``T - 1`` frames fed in as context (:meth:`NextFrameCoder.predict`); a baseline
is asked ``T - 1`` times, once per prefix. So the code is decodable frame by frame, and the sum over
blocks is the length of a real code of the whole stream.

The distribution. A model with a per-pixel distribution (``head: logistic_mixture``) codes with it, exactly.
A deterministic model or a baseline codes with a discretized Laplace around its clipped prediction, one
scale per frame position ``2 .. T`` (:class:`framecast.codelength.LaplaceFit`, exact MLE) fitted on clips
already transmitted: a trained model's held-out tail (data it was not trained on), a baseline's every
transmitted clip (it trains on nothing). Sums are in float64.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

UNIFORM_BITS = math.log2(256)  # 8 bits per sub-pixel: the uniform code of an 8-bit value


def batches(stream, indices: Sequence[int], batch_size: int, purpose: str) -> Iterator[Tensor]:
    """Stream clips ``indices`` in order, ``(B, T, C, H, W)`` float32 batches."""
    indices = list(indices)
    for a in range(0, len(indices), batch_size):
        yield torch.stack([stream.clip(i, purpose) for i in indices[a : a + batch_size]])


class NextFrameCoder:
    """A predictor as a code of frames ``2 .. T`` of a clip, each given the true frames before it.

    ``model``: a framecast predictor (``rollout``) or a baseline (``model(context, horizon)``). ``scales``:
    the discretized-Laplace scales ``(T - 1,)`` of a predictor without a distribution (:meth:`fit_scales`).
    """

    def __init__(self, name: str, model: nn.Module, scales: Tensor | None = None, device: str | torch.device = "cpu"):
        self.name, self.device = name, torch.device(device)
        self.model = model.to(self.device).eval()
        self.scales = scales
        self.scale_clips = 0

    @property
    def head(self):
        return getattr(self.model, "head", None)

    @property
    def has_distribution(self) -> bool:
        return hasattr(self.head, "bits")

    @property
    def codelength(self) -> str:
        if self.has_distribution:
            return "model distribution (logistic mixture), exact"
        return f"discretized Laplace, scales fitted on {self.scale_clips} transmitted clips"

    @torch.inference_mode()
    def predict(self, clips: Tensor) -> tuple[Tensor, Tensor | None]:
        """``clips (B, T, C, H, W)`` -> predictions of frames ``2 .. T`` ``(B, T - 1, C, H, W)`` and their
        distribution parameters (or None); prediction ``t`` sees only frames ``1 .. t``."""
        clips = clips.to(self.device)
        if hasattr(self.model, "rollout"):
            roll = self.model.rollout(clips[:, :-1], 1)  # every input is a true frame: no own prediction fed back
            return roll.frames, roll.params
        return torch.cat([self.model(clips[:, :t], 1) for t in range(1, clips.shape[1])], 1), None

    @torch.inference_mode()
    def bits(self, clips: Tensor) -> Tensor:
        """Codelength in bits (float64) of every sub-pixel of frames ``2 .. T``: ``(B, T - 1, C, H, W)``."""
        from framecast.codelength import laplace_bits

        pred, params = self.predict(clips)
        truth = clips[:, 1:].to(self.device)
        if self.has_distribution and params is not None:
            return self.head.bits(params, truth).double().cpu()
        if self.scales is None:
            raise ValueError(f"{self.name}: a deterministic prediction needs Laplace scales (fit_scales first)")
        return laplace_bits(pred.clamp(0, 1).cpu(), truth.cpu(), self.scales)

    @torch.inference_mode()
    def fit_scales(self, clip_batches: Iterable[Tensor]) -> Tensor | None:
        """Fit (and set) the Laplace scales on ``clip_batches``, where the predictor has no distribution."""
        from framecast.codelength import LaplaceFit

        if self.has_distribution:
            return None
        fit, n = LaplaceFit(), 0
        for clips in clip_batches:
            pred, _ = self.predict(clips)
            fit.add(pred.clamp(0, 1).cpu(), clips[:, 1:].cpu())
            n += len(clips)
        if n == 0:
            raise ValueError(f"{self.name}: no transmitted clips to fit the Laplace scales on")
        self.scales, self.scale_clips = fit.scales(), n
        return self.scales


@dataclass
class BlockCode:
    """The codelength of one block: ``bits`` of its ``pixels`` sub-pixels (``first_frame_bits`` of them the
    uniform first frames)."""

    clips: int
    frames: int
    pixels: int
    bits: float
    first_frame_bits: float

    @property
    def bits_per_pixel(self) -> float:
        return self.bits / self.pixels if self.pixels else float("nan")


def uniform_block(clips: int, frames_per_clip: int, subpixels_per_frame: int) -> BlockCode:
    """Block 0: every sub-pixel of every frame at 8 bits."""
    pixels = clips * frames_per_clip * subpixels_per_frame
    return BlockCode(clips, clips * frames_per_clip, pixels, UNIFORM_BITS * pixels,
                     UNIFORM_BITS * clips * subpixels_per_frame)


def code_block(coder, clip_batches: Iterable[Tensor]) -> BlockCode:
    """A later block: each clip's first frame uniformly, frames ``2 .. T`` by ``coder.bits``."""
    clips = frames = pixels = 0
    bits = first = 0.0
    for batch in clip_batches:
        b, t = batch.shape[:2]
        per_frame = int(batch[0, 0].numel())
        rest = coder.bits(batch)
        if tuple(rest.shape) != (b, t - 1, *batch.shape[2:]):
            raise ValueError(f"{coder.name}: bits of shape {tuple(rest.shape)} for clips {tuple(batch.shape)}")
        first_bits = UNIFORM_BITS * b * per_frame
        bits += first_bits + float(rest.double().sum())
        first += first_bits
        clips, frames, pixels = clips + b, frames + b * t, pixels + b * t * per_frame
    return BlockCode(clips, frames, pixels, bits, first)


def totals(blocks: Sequence[dict]) -> dict:
    """The sums over a predictor's block records (``clips``, ``pixels``, ``bits``, train steps and seconds)."""
    out = {key: sum(b.get(key) or 0 for b in blocks) for key in ("clips", "frames", "pixels", "bits", "train_steps")}
    out["train_seconds"] = sum(b.get("train_seconds") or 0.0 for b in blocks)
    out["bits_per_pixel"] = out["bits"] / out["pixels"] if out["pixels"] else float("nan")
    out["blocks"] = len(blocks)
    return out
