"""Training losses: a name or a weighted mix, e.g. ``"mse"``, ``"mse+gdl"`` or ``{mse: 1.0, gdl: 0.5}``.

Each term is computed in float32 and averaged over every predicted sub-pixel of ``(B, T, C, H, W)``:
- ``mse``: squared error; ``l1``: absolute error;
- ``gdl``: gradient difference loss (Mathieu, Couprie, LeCun, "Deep multi-scale video prediction beyond
  mean square error", ICLR 2016), alpha = 1: ``| |dy(target)| - |dy(pred)| | + | |dx(target)| - |dx(pred)| |``
  with ``dx, dy`` the differences of horizontally / vertically neighbouring pixels;
- ``ssim``: ``1 - SSIM`` (Gaussian window 11, sigma 1.5, see :mod:`framecast.metrics`);
- ``bits``: negative log-likelihood of the 8-bit target frames under the model's per-pixel distribution,
  in bits per sub-pixel (needs ``head: logistic_mixture``).
"""

from __future__ import annotations

from torch import Tensor

from framecast.metrics import ssim_map

NAMES = ("mse", "l1", "gdl", "ssim", "bits")


def parse_loss(spec: str | dict[str, float], field: str = "model.loss") -> dict[str, float]:
    """``"mse"``, ``"mse+gdl"`` or ``{"mse": 1, "gdl": 0.5}`` -> ``{name: weight}``, validated; an error names
    ``field``, where the spec was given."""
    if isinstance(spec, str):
        weights = {name.strip(): 1.0 for name in spec.split("+")}
    elif isinstance(spec, dict):
        weights = {str(k): float(v) for k, v in spec.items()}
    else:
        raise ValueError(f"{field}: must be a name like 'mse', a mix like 'mse+gdl' or a dict of weights, got {spec!r}")  # noqa: TRY004 (a bad config value)
    bad = [n for n in weights if n not in NAMES]
    if bad or not weights:
        raise ValueError(f"{field}: unknown loss {bad or spec!r}; loss names are {list(NAMES)}")
    if any(w < 0 for w in weights.values()) or not any(w > 0 for w in weights.values()):
        raise ValueError(f"{field}: loss weights must be >= 0 with at least one > 0, got {weights}")
    return weights


def parse_loss_stages(stages: dict[int, str | dict[str, float]] | None) -> list[tuple[int, FrameLoss]]:
    """``model.loss_stages`` ``{step: loss}`` -> ``[(step, FrameLoss)]`` by step; a step must be an integer > 0."""
    out = []
    for step, spec in (stages or {}).items():
        if isinstance(step, bool) or not str(step).strip().isdigit() or int(step) <= 0:
            raise ValueError(f"model.loss_stages: the step {step!r} is not an integer > 0; give {{step: loss}}, e.g. "
                             f"{{1500: l1}} (from optimizer step 1500 on, train on l1)")
        out.append((int(step), FrameLoss(spec, field=f"model.loss_stages, step {step}")))
    return sorted(out, key=lambda s: s[0])


def gdl(pred: Tensor, target: Tensor) -> Tensor:
    dy = ((target[..., 1:, :] - target[..., :-1, :]).abs() - (pred[..., 1:, :] - pred[..., :-1, :]).abs()).abs()
    dx = ((target[..., :, 1:] - target[..., :, :-1]).abs() - (pred[..., :, 1:] - pred[..., :, :-1]).abs()).abs()
    return dy.mean() + dx.mean()


def ssim_loss(pred: Tensor, target: Tensor) -> Tensor:
    return 1 - ssim_map(pred.flatten(0, 1), target.flatten(0, 1)).mean()


class FrameLoss:
    """A weighted sum of loss terms. ``loss(pred, target, bits=None) -> (total, {name: value})``.

    ``pred, target (B, T, C, H, W)``; ``bits`` is the per-sub-pixel codelength ``(B, T, C, H, W)`` of the
    target under the model's distribution (required by the ``bits`` term).
    """

    def __init__(self, spec: str | dict[str, float] = "mse", field: str = "model.loss"):
        self.weights = parse_loss(spec, field)

    @property
    def needs_distribution(self) -> bool:
        return self.weights.get("bits", 0) > 0

    def __call__(self, pred: Tensor, target: Tensor, bits: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        pred, target = pred.float(), target.float()
        parts: dict[str, Tensor] = {}
        for name, w in self.weights.items():
            if w == 0:
                continue
            if name == "mse":
                v = (pred - target).pow(2).mean()
            elif name == "l1":
                v = (pred - target).abs().mean()
            elif name == "gdl":
                v = gdl(pred, target)
            elif name == "ssim":
                v = ssim_loss(pred, target)
            else:
                if bits is None:
                    raise ValueError("loss 'bits' needs a model with a per-pixel distribution: set model head: logistic_mixture")
                v = bits.float().mean()
            parts[name] = v
        total = sum(self.weights[n] * v for n, v in parts.items())
        return total, parts
