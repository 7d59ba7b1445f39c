"""What a model does on clips: one rollout (``framecast.models.Rollout``), surprise maps, the PCA view of its
hidden state and the error curves against copy-last.

:func:`rollout` is the one place that runs a predictor for a picture: a recurrent predictor through its own
``rollout`` (every step, distribution parameters, hidden state), a baseline (``forward`` only) through its
prediction. :func:`error_curves` scores through :func:`framecast.evaluation.evaluate`, the evaluation every
tool uses, so the curves are the numbers ``framecast benchmark`` gives on the same clips.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from framecast.models import Rollout
from framecast.viz.style import BASELINE_NAME

CURVE_METRICS = ("mse_frame", "ssim")


def predictor_of(model):
    """The predictor of a :class:`~framecast.module.FramePredictionModule` (``module.model``), or ``model``."""
    return getattr(model, "model", model)


def model_name(model) -> str:
    """The registered name of a module's predictor (``convlstm``, ...), else its class name."""
    hp = getattr(model, "hparams", None) or {}
    return str(hp.get("model") or type(predictor_of(model)).__name__)


def device_of(model) -> torch.device:
    """The device of a model's parameters (the CPU for a parameter-free baseline)."""
    p = next(predictor_of(model).parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def rollout(model, context: Tensor, horizon: int, hidden: bool = True) -> Rollout:
    """Roll ``model`` out ``horizon`` frames from ``context (N, T_ctx, C, H, W)`` in eval mode, under
    ``torch.inference_mode()``, on the model's device.

    Returns a :class:`~framecast.models.Rollout` on the CPU in float32, frames clamped to [0, 1]: ``frames
    (N, T_ctx + horizon - 1, C, H, W)`` (step ``s`` read frame ``s`` and predicts frame ``s + 1``), ``params``
    of a distribution head, ``hidden`` the top layer's state per step (where asked for; a window predictor's:
    its translator's features, and ``NaN`` one-step predictions of the context). A baseline without
    ``rollout`` gives its prediction; its one-step predictions of the context frames are ``NaN`` (none) and
    it has no parameters or hidden state.
    """
    predictor = predictor_of(model)
    device = device_of(model)
    was_training = predictor.training
    predictor.eval()
    try:
        with torch.inference_mode():
            ctx = context.to(device)
            if hasattr(predictor, "rollout"):
                roll = predictor.rollout(ctx, horizon, return_hidden=hidden)
                frames, params, state = roll.steps(), roll.params, roll.hidden  # (a window predictor: NaN context)
            else:
                n, t_ctx, c, h, w = ctx.shape
                none = torch.full((n, t_ctx - 1, c, h, w), float("nan"), device=device)
                frames, params, state = torch.cat([none, predictor(ctx, horizon).to(none.dtype)], 1), None, None
    finally:
        predictor.train(was_training)
    return Rollout(frames=frames.float().clamp(0, 1).cpu(),
                   params=None if params is None else params.float().cpu(),
                   hidden=None if state is None or not hidden else state.float().cpu(),
                   horizon=horizon)


def inputs_read(roll: Rollout, context: Tensor) -> Tensor:
    """The frame each step read ``(N, S, C, H, W)``: the true context, then the model's own predictions."""
    t_ctx = context.shape[1]
    return torch.cat([context.cpu().float(), roll.frames[:, t_ctx - 1 : -1]], 1)


def surprise_maps(model, roll: Rollout, target: Tensor) -> tuple[Tensor, str, str]:
    """Per-pixel surprise of the true future frames ``(N, T, H, W)``, its unit (short, for a colour bar) and
    what it is (a sentence): bits of the 8-bit truth under the model's distribution (``-log2 p``, summed
    over channels) when the model has one, else the squared error summed over channels."""
    head = getattr(predictor_of(model), "head", None)
    params = roll.prediction_params()
    if params is not None and hasattr(head, "bits"):
        with torch.inference_mode():
            device = device_of(model)
            bits = head.bits(params.to(device), target.to(device)).float().cpu()
        what = ("surprise = bits of the true 8-bit pixel under the model's distribution (-log2 p), "
                "\u03a3 = bits of the frame")
        return bits.sum(2), "bits / pixel", what
    sq = (roll.prediction() - target.cpu().float()).pow(2).sum(2)
    what = ("surprise = squared error per pixel (the model has no per-pixel distribution), "
            "\u03a3 = mse_frame")
    return sq, "squared error\n/ pixel", what


def pca_rgb(hidden: Tensor, k: int = 3) -> tuple[Tensor, Tensor]:
    """Project ``hidden (S, F, h, w)`` on its first ``k`` principal components over all steps and positions.

    Deterministic: the components come from ``torch.linalg.eigh`` of the feature covariance (float64), each
    signed so that its largest-magnitude loading is positive. Each component is mapped to [0, 1] by its
    1st..99th percentile over the clip (clipped), so colours mean the same at every step.
    Returns ``(S, k, h, w)`` in [0, 1] and the fraction of the variance each component explains ``(k,)``
    (zeros for components beyond the number of features).
    """
    s, f, h, w = hidden.shape
    x = hidden.detach().double().cpu().permute(0, 2, 3, 1).reshape(-1, f)
    x = x - x.mean(0)
    cov = x.T @ x / max(1, len(x) - 1)
    vals, vecs = torch.linalg.eigh(cov)  # ascending
    order = torch.argsort(vals, descending=True)
    vals, vecs = vals[order].clamp(min=0), vecs[:, order]
    m = min(k, f)
    vecs = vecs[:, :m]
    top = vecs.abs().argmax(0)
    sign = torch.sign(vecs[top, torch.arange(m)])
    vecs = vecs * torch.where(sign == 0, torch.ones_like(sign), sign)
    proj = x @ vecs  # (S*h*w, m)
    lo = torch.quantile(proj, 0.01, dim=0)
    hi = torch.quantile(proj, 0.99, dim=0)
    proj = ((proj - lo) / (hi - lo).clamp(min=1e-12)).clamp(0, 1)
    if m < k:
        proj = torch.cat([proj, torch.zeros(len(proj), k - m, dtype=proj.dtype)], 1)
    total = float(vals.sum())
    explained = torch.zeros(k, dtype=torch.float64)
    if total > 0:
        explained[:m] = vals[:m] / total
    return proj.reshape(s, h, w, k).permute(0, 3, 1, 2).float(), explained.float()


@dataclass
class ErrorCurves:
    """Metrics per frame ahead: ``per_step[metric][predictor]`` (one value per horizon step, averaged over
    ``clips`` clips)."""

    per_step: dict[str, dict[str, list[float]]]
    clips: int
    predictors: list[str] = field(default_factory=list)

    def curves(self, fps: float | None = None) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
        """``{metric: {predictor: (x, y)}}`` for :func:`~framecast.viz.figures.curves_figure`: ``x`` in frames
        ahead, or seconds ahead given ``fps``."""
        out = {}
        for metric, lines in self.per_step.items():
            out[metric] = {}
            for who, y in lines.items():
                x = [(k + 1) / fps if fps else float(k + 1) for k in range(len(y))]
                out[metric][who] = (x, list(y))
        return out

    @staticmethod
    def xlabel(fps: float | None = None) -> str:
        return "seconds ahead" if fps else "frames ahead"

    def to_dict(self) -> dict:
        """Plain data for JSON (a non-finite value, the inf PSNR of a perfect frame, as a string)."""
        def plain(v: float):
            return v if math.isfinite(v) else str(v)

        return {"clips": self.clips, "metrics": {m: {w: [plain(v) for v in ys] for w, ys in lines.items()}
                                                for m, lines in self.per_step.items()}}


def num_batches(loader, clips: int) -> int | None:
    """How many batches of ``loader`` hold its first ``clips`` clips (None where it cannot say)."""
    size = getattr(loader, "batch_size", None)
    try:
        n = min(clips, len(loader.dataset))
    except (AttributeError, TypeError):
        n = clips
    return math.ceil(n / size) if size else None


def error_curves(model, loader, clips: int, metrics=CURVE_METRICS, name: str | None = None,
                 device: str | torch.device | None = None, progress: bool = True) -> ErrorCurves:
    """``metrics`` per frame ahead of ``model`` and of the copy-last baseline, on the same first ``clips``
    clips of ``loader``, from :func:`framecast.evaluation.evaluate` (``name``: the model's curve, default its
    registered name)."""
    from framecast.evaluation import Candidate, evaluate, limit

    name = name or model_name(model)
    candidates = [Candidate.for_model(name, predictor_of(model))]
    if name != BASELINE_NAME:
        candidates.append(Candidate.baseline(BASELINE_NAME))
    accs = evaluate(candidates, limit(loader, clips), metrics=list(metrics),
                    device=device if device is not None else device_of(model),
                    progress="error curves" if progress else None, total=num_batches(loader, clips))
    per_step = {m: {who: [float(v) for v in acc.per_step(m)] for who, acc in accs.items()} for m in metrics}
    used = next(iter(accs.values())).clips
    return ErrorCurves(per_step, used, list(accs))
