"""``framecast.forecast(module, frames, horizon, samples=K)``: the future of a clip, past its end.

One rollout of the model (:meth:`framecast.models.Predictor.rollout`) from the context, any horizon, each
predicted frame fed back as the next input: the *mean* forecast (the head's frame). With ``samples=K`` (a model
with a per-pixel distribution, ``head: logistic_mixture``) also ``K`` sampled futures, by ancestral sampling
through the same rollout (``feed="sample"``: every frame is a draw of 8-bit levels from the model's
distribution, and that draw is what the next step reads), and their per-pixel spread.

:func:`forecast_metrics` scores a forecast against the truth (where the video goes on) with the metric
registry (:func:`framecast.evaluation.score`), beside the copy-last baseline on the same frames.

Frames are ``(T, C, H, W)`` tensors: float in [0, 1], or uint8 levels (divided by 255).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from framecast.errors import InputError

FORECAST_METRICS = ("mse_frame", "mae_frame", "psnr", "ssim")  # + bits_per_pixel for a distribution model
SAMPLE_BATCH = 8  # sampled futures rolled out together


@dataclass
class Forecast:
    """A forecast: the context it started from, the mean future and, where asked, sampled futures.

    Attributes:
        context: ``(T_ctx, C, H, W)`` the frames the model read, float in [0, 1].
        frames: ``(horizon, C, H, W)`` the mean forecast (each predicted frame fed back), clipped to [0, 1].
        params: ``(horizon, P, H, W)`` the model's distribution at each step of the mean forecast (a
            ``logistic_mixture`` head), else ``None``.
        samples: ``(K, horizon, C, H, W)`` sampled futures (8-bit levels in [0, 1]), else ``None``.
        temperature: the temperature the samples were drawn at.
        fps: frames per second of the clip (``None``: time in frames).
        start: seconds into the video of the first forecast frame, where known.
    """

    context: Tensor
    frames: Tensor
    params: Tensor | None = None
    samples: Tensor | None = None
    temperature: float = 1.0
    fps: float | None = None
    start: float | None = None

    @property
    def horizon(self) -> int:
        return len(self.frames)

    @property
    def spread(self) -> Tensor | None:
        """Per-pixel standard deviation across the samples ``(horizon, C, H, W)`` (population, so one sample
        gives 0); ``None`` without samples."""
        return None if self.samples is None else self.samples.std(0, correction=0)

    def seconds_ahead(self) -> list[float] | None:
        """Seconds from the last context frame to each forecast frame (``None`` without an fps)."""
        return [(k + 1) / self.fps for k in range(self.horizon)] if self.fps else None

    def uint8(self, frames: Tensor | None = None) -> np.ndarray:
        """``frames`` (default: the mean forecast) as uint8 levels, same shape (``(T, C, H, W)``)."""
        frames = self.frames if frames is None else frames
        return (frames.detach().float().clamp(0, 1).cpu() * 255).round().to(torch.uint8).numpy()


def predictor_of(module):
    """The predictor of a :class:`~framecast.module.FramePredictionModule` (or the predictor itself)."""
    model = getattr(module, "model", module)
    if not hasattr(model, "rollout"):
        raise InputError(f"{type(model).__name__} has no rollout: forecast needs a framecast predictor")
    return model


def has_distribution(module) -> bool:
    """Whether the module's predictor has a per-pixel distribution to sample from (``head: logistic_mixture``)."""
    return hasattr(getattr(predictor_of(module), "head", None), "sample")


def as_frames(frames, name: str = "frames") -> Tensor:
    """``(T, C, H, W)`` float in [0, 1] from a float or uint8 tensor or array."""
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, Tensor):
        raise InputError(f"{name} must be a (T, C, H, W) tensor, got {type(frames).__name__}")
    if frames.dim() != 4:
        raise InputError(f"{name} must be (T, C, H, W), got shape {tuple(frames.shape)}")
    if frames.dtype == torch.uint8:
        return frames.float().div(255)
    return frames.float()


def _device_of(model) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def forecast(module, frames, horizon: int, samples: int = 0, *, context: int | None = None,
             temperature: float = 1.0, seed: int | None = None, generator: torch.Generator | None = None,
             batch: int = SAMPLE_BATCH, fps: float | None = None, start: float | None = None,
             progress: Callable[[int], None] | None = None) -> Forecast:
    """Forecast ``horizon`` frames past the end of ``frames`` (``(T, C, H, W)``), and ``samples`` sampled futures.

    Args:
        module: a :class:`~framecast.module.FramePredictionModule` (e.g. from :func:`framecast.loading.load_module`)
            or a predictor; it runs where its parameters are, in eval mode, under ``torch.inference_mode``.
        frames: the clip, float in [0, 1] or uint8; the context is its last ``context`` frames (all: None).
        horizon: frames to forecast, any number ``>= 1`` (the rollout is autoregressive).
        samples: sampled futures ``K``; needs a per-pixel distribution (``head: logistic_mixture``).
        temperature: scales the logistic scales of the samples (1: the model's distribution).
        seed: seeds the samples' random stream (same seed, same samples); ``generator`` gives the stream
            itself (on the model's device); with neither, the global one.
        batch: sampled futures rolled out together.
        fps, start: stored in the :class:`Forecast` (time labels).
        progress: called with the number of futures rolled out after each rollout (1 for the mean).

    ``forecast(m, frames, n).frames`` equals ``m(context[None], n)[0]`` clipped to [0, 1].
    """
    model = predictor_of(module)
    frames = as_frames(frames)
    if not isinstance(horizon, int) or horizon < 1:
        raise InputError(f"horizon must be an int >= 1, got {horizon!r}")
    if samples < 0:
        raise InputError(f"samples must be >= 0, got {samples}")
    if samples and not has_distribution(model):
        raise InputError("samples need a model with a per-pixel distribution (head: logistic_mixture); this "
                         "model's head is deterministic")
    if not temperature > 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    if batch < 1:
        raise InputError(f"batch must be >= 1, got {batch}")
    if context is not None:
        if not 1 <= context <= len(frames):
            raise InputError(f"context must be 1 .. {len(frames)} frames (the clip's length), got {context}")
        frames = frames[-context:]
    if len(frames) < 1:
        raise InputError("frames is empty: the context needs at least one frame")
    device = _device_of(model)
    if generator is None and seed is not None:
        generator = torch.Generator(device=device).manual_seed(int(seed))
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            ctx = frames.to(device)[None]
            roll = model.rollout(ctx, horizon)
            mean = roll.prediction()[0].clamp(0, 1).cpu()
            params = roll.prediction_params()
            params = None if params is None else params[0].cpu()
            if progress is not None:
                progress(1)
            drawn = []
            for first in range(0, samples, batch):
                k = min(batch, samples - first)
                roll = model.rollout(ctx.expand(k, -1, -1, -1, -1), horizon, feed="sample", generator=generator,
                                     temperature=temperature)
                drawn.append(roll.prediction().cpu())
                if progress is not None:
                    progress(k)
    finally:
        model.train(was_training)
    return Forecast(context=frames.cpu(), frames=mean, params=params,
                    samples=torch.cat(drawn) if drawn else None, temperature=float(temperature), fps=fps,
                    start=start)


def forecast_metrics(result: Forecast, truth, module=None, metrics: tuple[str, ...] = FORECAST_METRICS
                     ) -> dict[str, object]:
    """Per-step metrics of the mean forecast and of copy-last against ``truth`` (``(T, C, H, W)``, the frames
    after the context as far as known; the first ``min(T, horizon)`` are scored).

    Through :func:`framecast.evaluation.score` and the metric registry, with ``bits_per_pixel`` where
    ``module`` has a per-pixel distribution. Returns ``{"steps": n, "model": {metric: [n values]},
    "copy_last": {...}, "mean": {"model": {...}, "copy_last": {...}}, "unavailable": {...}}``."""
    from framecast.evaluation import score
    from framecast.metrics import MetricAccumulator, pixel_metrics
    from framecast.models import CopyLast

    truth = as_frames(truth, "truth")
    n = min(len(truth), result.horizon)
    if n < 1:
        raise InputError("no truth to score: the video ends where the forecast starts")
    target = truth[:n][None]
    head = getattr(predictor_of(module), "head", None) if module is not None else None
    distribution = head is not None and hasattr(head, "bits") and result.params is not None
    names = list(metrics) + (["bits_per_pixel"] if distribution else [])
    accs = {"model": MetricAccumulator(), "copy_last": MetricAccumulator()}
    with torch.inference_mode():
        score(accs["model"], result.frames[:n][None], target, names,
              head=head if distribution else None, params=result.params[:n][None] if distribution else None)
        baseline = CopyLast()(result.context[None], n)
        score(accs["copy_last"], baseline, target, [m for m in names if m in pixel_metrics()])
    out: dict[str, object] = {"steps": n, "mean": {}, "unavailable": {}}
    for who, acc in accs.items():
        out[who] = {name: acc.per_step(name).tolist() for name in acc.names()}
        out["mean"][who] = {name: acc.mean(name) for name in acc.names()}
        out["unavailable"].update({f"{who}/{k}": v for k, v in acc.unavailable.items()})
    return out
