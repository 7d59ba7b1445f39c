"""FLOPs and the convolution peak of ``framecast speed``.

:func:`count_flops` counts what a call computes (``torch.utils.flop_counter.FlopCounterMode``: convolutions
and matrix products, a multiply-add is 2 FLOPs) and :func:`conv_flops` is the formula for one convolution;
:func:`largest_conv` finds the model's ``Conv2d`` with the most FLOPs per call and :func:`conv_dtypes` the
dtypes its convolutions compute in (both with forward hooks, the cells in their fused layout, see
:func:`fused_layout`); :class:`ConvPeak` times that convolution alone (forward, and forward+backward), in the
model's precision, batch and memory format: what the machine can do on the work the model consists of.
"""

from __future__ import annotations

import contextlib
import copy
import statistics
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from framecast.errors import ConfigError
from framecast.profiling.harness import Candidate, stats


def count_flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def conv_flops(conv: nn.Conv2d, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs of ``conv`` on ``input_shape``: ``2 * Cin/groups * Cout * kh * kw * Hout * Wout * B``."""
    b, _, h, w = input_shape
    kh, kw = conv.kernel_size
    (ph, pw), (sh, sw), (dh, dw) = conv.padding, conv.stride, conv.dilation
    hout = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wout = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    return 2 * (conv.in_channels // conv.groups) * conv.out_channels * kh * kw * hout * wout * b


@contextlib.contextmanager
def fused_layout(model: nn.Module):
    """Run the model's cells as their ``Conv2d`` modules (a ConvLSTM in its per-gate layout calls
    ``F.conv2d`` on weight pieces, which module hooks do not see); the function is the same."""
    saved = [(m, m.layout) for m in model.modules() if hasattr(m, "layout")]
    for m, _ in saved:
        m.layout = "fused"
    try:
        yield
    finally:
        for m, layout in saved:
            m.layout = layout


def runs_per_gate(model: nn.Module, plugin) -> bool:
    """Whether ``model`` (a ConvLSTM) runs its gates as eight convolutions under ``plugin``'s precision."""
    if not hasattr(model, "runs_per_gate"):
        return False
    like = next(model.parameters())
    with plugin.forward_context():
        return model.runs_per_gate(like)


def largest_conv(model: nn.Module, run: Callable[[], Any]) -> tuple[str, nn.Conv2d, tuple[int, ...]]:
    """The ``Conv2d`` of ``model`` with the most FLOPs per call while ``run()`` runs: ``(name, module, input shape)``."""
    seen: dict[str, tuple[nn.Conv2d, tuple[int, ...]]] = {}
    hooks = []

    def hook(name: str):
        def record(mod: nn.Module, args: tuple, out: Tensor) -> None:
            seen.setdefault(name, (mod, tuple(args[0].shape)))

        return record

    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(hook(name)))
    try:
        with fused_layout(model):
            run()
    finally:
        for h in hooks:
            h.remove()
    if not seen:
        raise ConfigError("model.model: the model has no Conv2d layer to measure the convolution peak on")
    name = max(seen, key=lambda n: conv_flops(*seen[n]))
    return name, seen[name][0], seen[name][1]


def conv_dtypes(model: nn.Module, run: Callable[[], Any]) -> list[str]:
    """The dtypes the model's ``Conv2d`` layers compute in (their outputs) while ``run()`` runs."""
    out: set[str] = set()
    hooks = [m.register_forward_hook(lambda mod, args, o: out.add(str(o.dtype).replace("torch.", "")))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        with fused_layout(model):  # (the layout does not change the dtype: autocast decides it)
            run()
    finally:
        for h in hooks:
            h.remove()
    return sorted(out)


_GRADS: dict[tuple, Tensor] = {}


def conv_call(layer: nn.Conv2d, x: Tensor, plugin, backward: bool) -> None:
    """One call of the convolution alone: forward, or forward and backward (gradients of input and weight, as
    in the model, where the input holds the hidden state) with a ready-made output gradient."""
    if backward:
        with plugin.forward_context():
            y = layer(x)
        key = (tuple(y.shape), y.dtype, y.device, y.is_contiguous(memory_format=torch.channels_last))
        if key not in _GRADS:
            _GRADS.clear()
            _GRADS[key] = torch.ones_like(y)
        y.backward(_GRADS[key])
        x.grad = None
        layer.weight.grad = None
        if layer.bias is not None:
            layer.bias.grad = None
    else:
        with torch.inference_mode(), plugin.forward_context():
            layer(x)


class ConvPeak:
    """The model's largest convolution ``conv`` (input ``shape``, found by :func:`largest_conv`) alone, at one
    precision: a forward+backward candidate at the training batch and a forward one at the inference batch,
    each ``reps`` calls per round. A model that runs its gates as eight convolutions (``per_gate``) is measured
    on the largest of those pieces instead."""

    def __init__(self, name: str, conv: nn.Conv2d, shape: tuple[int, ...], per_gate: bool, precision: str,
                 plugin, device: torch.device, fmt: torch.memory_format, train_batch: int, infer_batch: int,
                 reps: int):
        if per_gate:  # the cells run eight convolutions per layer: the peak is that of the largest piece
            n = conv.out_channels // 4
            cin = max(conv.in_channels - n, n)
            conv = nn.Conv2d(cin, n, conv.kernel_size, padding=conv.padding)
            shape = (shape[0], cin, *shape[2:])
            name = f"{name}, one of its per-gate pieces"
        self.name, self.precision, self.reps = name, precision, reps
        self.shape, self.weight_shape = shape, list(conv.weight.shape)
        self.train_batch, self.infer_batch = train_batch, infer_batch
        self.train, self.train_flops = self._candidate(conv, train_batch, plugin, device, fmt, True)
        self.forward, self.forward_flops = self._candidate(conv, infer_batch, plugin, device, fmt, False)

    def _candidate(self, conv, batch, plugin, device, fmt, backward) -> tuple[Candidate, int]:
        """The convolution alone, same precision, batch and memory format, ``reps`` calls: the candidate and
        the FLOPs of its ``reps`` calls."""
        layer = copy.deepcopy(conv).to(device).to(memory_format=fmt)
        x = torch.randn(batch, *self.shape[1:], device=device).contiguous(memory_format=fmt)
        x.requires_grad_(backward)
        flops = count_flops(lambda: conv_call(layer, x, plugin, backward))
        reps = self.reps

        def call():
            for _ in range(reps):
                conv_call(layer, x, plugin, backward)

        return Candidate("conv", call), flops * reps

    def result(self, inference: bool) -> dict[str, Any]:
        """The ``conv_peak`` of the JSON: the layer, shapes, and per phase the time per call and FLOP/s."""
        reps = self.reps
        out: dict[str, Any] = {"layer": self.name, "input_shape_per_clip": list(self.shape[1:]),
                               "weight_shape": self.weight_shape, "precision": self.precision,
                               "calls_per_round": reps}
        for key, cand, flops, batch, used in (("train", self.train, self.train_flops, self.train_batch, True),
                                              ("forward", self.forward, self.forward_flops, self.infer_batch,
                                               inference)):
            if used and cand.times:
                out[key] = {"batch_size": batch, "flops_per_call": flops // reps,
                            "time_s": stats([t / reps for t in cand.times]),
                            "flops_per_s": flops / statistics.median(cand.times)}
        return out
