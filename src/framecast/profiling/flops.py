"""FLOPs and the convolution peak of ``framecast speed``.

:func:`count_flops` counts what a call computes (``torch.utils.flop_counter.FlopCounterMode``: convolutions
and matrix products, a multiply-add is 2 FLOPs) and :func:`conv_flops` is the formula for one call of any
convolution (1-, 2- or 3-d, grouped, transposed); :func:`dominant_conv` finds the model's convolution module
that computes the most FLOPs in a run (all its calls together) and :func:`conv_dtypes` the dtypes its
convolutions compute in (both with forward hooks, the cells in their fused layout, see
:func:`fused_layout`); :class:`ConvPeak` times that convolution alone (forward, and forward+backward), in the
model's precision, batch and memory format: what the machine can do on the work the model consists of.
"""

from __future__ import annotations

import contextlib
import copy
import math
import statistics
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from framecast.errors import ConfigError
from framecast.profiling.harness import Candidate, memory_format, stats, to_channels_last


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                         _output_padding, _groups, output_mask, out_shape=None) -> int:
    """FLOPs of a convolution's backward: each gradient asked for (input, weight) costs what the forward costs.
    (``FlopCounterMode``'s own formula counts the weight gradient of a grouped convolution ``groups`` times
    over: it convolves as if every input channel met every output channel; for SimVP's and TAU's depthwise
    convolutions that is hundreds of times too much.)"""
    from torch.utils.flop_counter import conv_flop_count

    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def count_flops(fn: Callable[[], Any]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {torch.ops.aten.convolution_backward: _conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return int(counter.get_total_flops())


CONVS = (nn.modules.conv._ConvNd,)
"""What counts as a convolution: ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d``."""


def conv_flops(conv: nn.modules.conv._ConvNd, input_shape: tuple[int, ...],
               output_shape: tuple[int, ...] | None = None) -> int:
    """Forward FLOPs of one call of ``conv`` on ``input_shape``, as ``FlopCounterMode`` counts them: ``2 x B x
    (weight's first two sizes) x kernel volume x`` the output's spatial size (of a transposed convolution: the
    input's), i.e. ``2 * Cin/groups * Cout * kh * kw * Hout * Wout * B`` for a ``Conv2d``. ``output_shape``:
    worked out (on the meta device, nothing computed) where not given."""
    if output_shape is None:
        meta = {k: torch.empty_like(v, device="meta") for k, v in conv.named_parameters()}
        x = torch.empty(input_shape, device="meta")
        output_shape = tuple(torch.func.functional_call(conv, meta, (x,)).shape)
    spatial = (input_shape if conv.transposed else output_shape)[2:]
    w = conv.weight.shape
    return 2 * input_shape[0] * w[0] * w[1] * math.prod(w[2:]) * math.prod(spatial)


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


def runs_per_gate(model: nn.Module, plugin, conv_name: str, batch: int, height: int, width: int) -> bool:
    """Whether the ConvLSTM cell holding the convolution ``conv_name`` (as :func:`dominant_conv` names it) runs
    its gates as eight convolutions under ``plugin``'s precision, at ``batch`` x ``height`` x ``width`` frames."""
    if not hasattr(model, "cell_layouts"):
        return False
    like = next(model.parameters())
    p = model.patch_size
    with plugin.forward_context():
        layouts = model.cell_layouts(batch, height // p, width // p, like)
    owner = model.get_submodule(conv_name.split(" ")[0].rpartition(".")[0])
    cells = list(model.cells)
    return owner in cells and layouts[cells.index(owner)] == "per_gate"


def _signature(mod: nn.Module, shape: tuple[int, ...]) -> tuple:
    """What makes two convolution calls the same work: the kind, weight, input shape and geometry."""
    return (type(mod).__name__, tuple(mod.weight.shape), shape, mod.stride, mod.padding, mod.dilation, mod.groups,
            mod.bias is not None)


def dominant_conv(model: nn.Module, run: Callable[[], Any]) -> tuple[str, nn.Module, tuple[int, ...], float]:
    """The convolution that computes the most FLOPs while ``run()`` runs, all calls of the same shape together
    (the layers of a stack are alike: their FLOPs add up): ``(name, module, input shape, its share of all
    convolution FLOPs)``; the name is the first such module's, with the count of the others alike."""
    total: dict[tuple, int] = {}
    first: dict[tuple, tuple[str, nn.Module, tuple[int, ...]]] = {}
    names: dict[tuple, set[str]] = {}
    hooks = []

    def hook(name: str):
        def record(mod: nn.Module, args: tuple, out: Tensor) -> None:
            shape = tuple(args[0].shape)
            key = _signature(mod, shape)
            total[key] = total.get(key, 0) + conv_flops(mod, shape, tuple(out.shape))
            first.setdefault(key, (name, mod, shape))
            names.setdefault(key, set()).add(name)

        return record

    for name, m in model.named_modules():
        if isinstance(m, CONVS):
            hooks.append(m.register_forward_hook(hook(name)))
    try:
        with fused_layout(model):
            run()
    finally:
        for h in hooks:
            h.remove()
    if not total:
        raise ConfigError("model.model: the model has no convolution to measure the convolution peak on")
    key = max(total, key=total.get)
    name, mod, shape = first[key]
    others = len(names[key]) - 1
    if others:
        name += f" (and {others} more alike)"
    return name, mod, shape, total[key] / sum(total.values())


def conv_dtypes(model: nn.Module, run: Callable[[], Any]) -> list[str]:
    """The dtypes the model's convolutions compute in (their outputs) while ``run()`` runs."""
    out: set[str] = set()
    hooks = [m.register_forward_hook(lambda mod, args, o: out.add(str(o.dtype).replace("torch.", "")))
             for m in model.modules() if isinstance(m, CONVS)]
    try:
        with fused_layout(model):  # (the layout does not change the dtype: autocast decides it)
            run()
    finally:
        for h in hooks:
            h.remove()
    return sorted(out)


_GRADS: dict[tuple, Tensor] = {}


def conv_call(layer: nn.Module, x: Tensor, plugin, backward: bool) -> None:
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
    """The model's dominant convolution ``conv`` (input ``shape``, found by :func:`dominant_conv`, which holds
    ``share`` of the model's convolution FLOPs) alone, at one precision: a forward+backward candidate at the
    training batch and a forward one at the inference batch, each ``reps`` calls per round. A model that runs
    its gates as eight convolutions (``per_gate``) is measured on the largest of those pieces instead."""

    def __init__(self, name: str, conv: nn.Module, shape: tuple[int, ...], share: float, per_gate: bool,
                 precision: str, plugin, device: torch.device, channels_last: bool, train_batch: int,
                 infer_batch: int, reps: int):
        if per_gate:  # the cells run eight convolutions per layer: the peak is that of the largest piece
            n = conv.out_channels // 4
            cin = max(conv.in_channels - n, n)
            conv = nn.Conv2d(cin, n, conv.kernel_size, padding=conv.padding)
            shape = (shape[0], cin, *shape[2:])
            name = f"{name}, one of its per-gate pieces"
        self.name, self.kind, self.share, self.precision, self.reps = name, type(conv).__name__, share, precision, reps
        self.shape, self.weight_shape = shape, list(conv.weight.shape)
        self.train_batch, self.infer_batch = train_batch, infer_batch
        self.train, self.train_flops = self._candidate(conv, train_batch, plugin, device, channels_last, True)
        self.forward, self.forward_flops = self._candidate(conv, infer_batch, plugin, device, channels_last, False)

    def _candidate(self, conv, batch, plugin, device, channels_last, backward) -> tuple[Candidate, int]:
        """The convolution alone, same precision, batch and memory format, ``reps`` calls: the candidate and
        the FLOPs of its ``reps`` calls."""
        layer = copy.deepcopy(conv).to(device)
        if channels_last:
            to_channels_last(layer)
        x = torch.randn(batch, *self.shape[1:], device=device)
        x = x.contiguous(memory_format=memory_format(x.dim(), channels_last))
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
        out: dict[str, Any] = {"layer": self.name, "kind": self.kind, "share_of_conv_flops": self.share,
                               "input_shape_per_clip": list(self.shape[1:]),
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
