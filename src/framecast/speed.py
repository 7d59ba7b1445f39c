"""``framecast speed``: training and inference speed of a model, measured side by side with a plain reference.

    framecast speed --config FILE [--batch-size B] [--precision 32|bf16-mixed] [--steps N] [--warmup W]
                    [--compile] [--json OUT] [--device cpu|cuda] [--model.KEY VALUE ...] [--data.KEY VALUE ...]

The model is built from the config's ``model:`` section exactly as ``framecast fit`` builds it (a
:class:`~framecast.module.FramePredictionModule`), and the input shape (context and horizon frames, size,
channels) from its ``data:`` section; the input is random, no data is read. What is timed:

* **training step**: what Lightning runs for one optimizer step of ``framecast fit``: the module's own
  ``training_step`` under Lightning's precision plugin (``bf16-mixed``: ``torch.autocast`` in bfloat16, so
  the convolutions run in bfloat16 and the loss in float32), ``backward``, the module's
  ``on_before_optimizer_step`` hook, the optimizer (and LR schedule) step and ``zero_grad``;
* **inference**: a rollout of the horizon from the context under ``torch.inference_mode``;
* **reference**: for a ``convlstm`` model, a literal float32 eager ConvLSTM of the same configuration and
  weights with eight convolutions per cell (:mod:`framecast.reference`), timed in the same rounds;
* **convolution peak**: the model's own largest convolution (by FLOPs) alone, forward and forward+backward,
  in the chosen precision and at the same batch, timed in the same rounds: what this machine can do right
  now on the work the model consists of, so ``fraction_of_conv_peak`` says how close the model runs to it.

Every round times each candidate once, in alternating order (A B C, C B A, ...), so a change in the
machine's load hits all of them alike; the first ``--warmup`` rounds are not counted. Statistics are the
median, min, max and quartiles over the ``--steps`` counted rounds. FLOPs are counted with
``torch.utils.flop_counter.FlopCounterMode`` (convolutions and matrix products; a multiply-add is 2 FLOPs)
on one clip and scaled by the batch; ``frames_per_s`` counts the context and horizon frames of each clip.
Peak memory (``peak_memory_bytes``) is the candidate's own tensors kept between calls (weights, optimizer
state, inputs: ``state_bytes``) plus the working memory of one call (``peak_memory_rise_bytes``:
activations, gradients, temporaries), on CUDA from the allocator's peak, on the CPU from the allocation
events of ``torch.profiler`` (an extra untimed call after the warm-up), so each candidate is measured on
its own although all share one process.

Written: JSON to stdout and to ``--json OUT``; a short table to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

PRECISIONS = ("32", "bf16-mixed")
REFERENCE_NAME = "reference ConvLSTM (float32, eager, 8 convolutions per cell)"


class SpeedError(ValueError):
    """A problem with what the user asked for, reported as one message (exit code 2)."""


# --- configuration ----------------------------------------------------------------------------------


def split_overrides(argv: list[str]) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """Take ``--model.KEY VALUE`` and ``--data.KEY VALUE`` (or ``=VALUE``; values are YAML) out of ``argv``."""
    found: dict[str, dict[str, Any]] = {"model": {}, "data": {}}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        section = next((s for s in found if a.startswith(f"--{s}.") and len(a) > len(s) + 3), None)
        if section is None:
            rest.append(a)
            i += 1
            continue
        key, eq, value = a[len(section) + 3:].partition("=")
        if not eq:
            if i + 1 >= len(argv):
                raise SpeedError(f"{a} needs a value")
            value = argv[i + 1]
            i += 1
        found[section][key.removeprefix("init_args.")] = yaml.safe_load(value)
        i += 1
    return found["model"], found["data"], rest


def load_setup(config: str | Path, model_overrides: dict[str, Any], data_overrides: dict[str, Any]):
    """``(model hparams, input dims)`` from a ``framecast fit`` config; input dims are
    ``{"context", "horizon", "channels", "height", "width"}``, read from the instantiated data module."""
    from framecast.loading import datamodule_from_config

    path = Path(config)
    if not path.is_file():
        raise SpeedError(f"config {path} does not exist")
    cfg = yaml.safe_load(path.read_text()) or {}
    model = dict(cfg.get("model") or {})
    model.update(model_overrides)
    try:
        dm = datamodule_from_config(path, **data_overrides)
    except (TypeError, ValueError) as e:
        raise SpeedError(f"cannot build the data module of {path}: {e}") from e
    height, width = tuple(dm.size)
    dims = {"context": int(dm.context_frames), "horizon": int(dm.horizon_frames), "channels": int(dm.channels),
            "height": int(height), "width": int(width)}
    model["channels"] = dims["channels"]  # linked to the data's channels, as the CLI does
    return model, dims


def build_module(model_hparams: dict[str, Any]):
    from framecast.module import FramePredictionModule

    hp = {k: v for k, v in model_hparams.items() if k != "compile"}
    try:
        return FramePredictionModule(**hp)
    except TypeError as e:
        raise SpeedError(f"bad model options {hp}: {e}") from e


def precision_plugin(precision: str, device: str):
    """Lightning's own precision plugin, so the autocast settings are exactly those of ``framecast fit``."""
    from lightning.pytorch.plugins.precision import MixedPrecision, Precision

    return Precision() if precision == "32" else MixedPrecision(precision, device)


# --- measurement helpers ----------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def stats(values: list[float]) -> dict[str, Any]:
    """Median, min, max and quartiles of ``values``."""
    v = sorted(values)
    if len(v) >= 2:
        q1, _, q3 = statistics.quantiles(v, n=4, method="inclusive")
    else:
        q1 = q3 = v[0]
    return {"median": statistics.median(v), "min": v[0], "max": v[-1], "q1": q1, "q3": q3, "n": len(v),
            "all": list(values)}


@contextlib.contextmanager
def _quiet_stderr():
    """Silence C-level writes to stderr (the profiler's notes about absent GPUs) for the block."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def tensor_bytes(*objs: Any) -> int:
    """Bytes of the distinct tensor storages in ``objs`` (tensors, modules, optimizers, dicts, lists)."""
    seen: set[int] = set()
    total = 0

    def visit(o: Any) -> None:
        nonlocal total
        if isinstance(o, Tensor):
            st = o.untyped_storage()
            if st.data_ptr() not in seen:
                seen.add(st.data_ptr())
                total += st.nbytes()
        elif isinstance(o, nn.Module):
            for t in list(o.parameters()) + list(o.buffers()):
                visit(t)
        elif isinstance(o, torch.optim.Optimizer):
            for state in o.state.values():
                visit(state)
        elif isinstance(o, dict):
            for v in o.values():
                visit(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                visit(v)

    for o in objs:
        visit(o)
    return total


class Memory:
    """The working memory of one call: the peak of the tensor memory it allocates above what was allocated
    before it (activations, gradients, temporaries). CUDA: ``torch.cuda.max_memory_allocated`` minus
    ``memory_allocated`` before; CPU: the allocation and free events of ``torch.profiler`` with
    ``profile_memory`` (allocations counted at the start of an op, frees at its end), on an extra untimed call."""

    def __init__(self, device: torch.device):
        self.device = device
        self.method = (
            "CUDA allocator: max_memory_allocated during one call minus memory_allocated before it"
            if device.type == "cuda" else
            "torch.profiler(profile_memory=True): peak of the tensor allocations of one call above those alive before it"
        )

    def rise(self, fn: Callable[[], Any]) -> int:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            before = torch.cuda.memory_allocated(self.device)
            fn()
            synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) - before
        from torch.profiler import ProfilerActivity, profile

        with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        changes = []
        for e in prof.events():
            m = e.self_cpu_memory_usage if e.name != "[memory]" else e.cpu_memory_usage
            if m:
                changes.append((e.time_range.start if m > 0 else e.time_range.end, m))
        cur = peak = 0
        for _, m in sorted(changes):
            cur += m
            peak = max(peak, cur)
        return peak


class Candidate:
    """Something timed once per round: a name, a zero-argument callable and the tensors it keeps between calls
    (parameters, optimizer state, inputs), whose bytes plus the working memory make its peak memory."""

    def __init__(self, name: str, fn: Callable[[], Any], state: tuple = ()):
        self.name, self.fn, self.state = name, fn, state
        self.times: list[float] = []
        self.peak_rise_bytes: int | None = None

    def run(self, device: torch.device, record: bool) -> None:
        synchronize(device)
        t0 = time.perf_counter()
        self.fn()
        synchronize(device)
        if record:
            self.times.append(time.perf_counter() - t0)

    def measure_memory(self, mem: Memory) -> None:
        self.peak_rise_bytes = mem.rise(self.fn)

    @property
    def state_bytes(self) -> int:
        return tensor_bytes(*self.state)


def run_rounds(candidates: list[Candidate], rounds: int, warmup: int, device: torch.device, mem: Memory | None,
               desc: str, progress: bool) -> None:
    """``warmup + rounds`` rounds; every round runs each candidate once, the order reversed every other round.
    After the warm-up, one extra untimed call of each candidate with a state measures its memory."""
    from tqdm.auto import tqdm

    for r in tqdm(range(warmup + rounds), desc=desc, disable=not progress, file=sys.stderr, leave=False):
        if r == warmup and mem is not None:
            for c in candidates:
                if c.state:
                    c.measure_memory(mem)
        order = candidates if r % 2 == 0 else candidates[::-1]
        for c in order:
            c.run(device, record=r >= warmup)


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
        raise SpeedError("the model has no Conv2d layer to measure the convolution peak on")
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


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device) -> dict[str, Any]:
    import lightning

    info: dict[str, Any] = {
        "device": device.type,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "python": platform.python_version(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
        info["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    with contextlib.suppress(OSError):
        info["load_average_start"] = list(os.getloadavg())
    return info


# --- the benchmark ----------------------------------------------------------------------------------


def random_batch(b: int, dims: dict[str, int], device: torch.device, seed: int = 0) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (dims["channels"], dims["height"], dims["width"])
    return {"context": torch.rand(b, dims["context"], *shape, generator=g).to(device),
            "target": torch.rand(b, dims["horizon"], *shape, generator=g).to(device)}


def configure_optimizer(module, total_steps: int):
    """The module's own ``configure_optimizers`` (a schedule asks the trainer for the step count)."""
    from types import SimpleNamespace

    module._trainer = SimpleNamespace(estimated_stepping_batches=total_steps)
    try:
        out = module.configure_optimizers()
    finally:
        module._trainer = None
    if isinstance(out, dict):
        return out["optimizer"], out["lr_scheduler"]["scheduler"]
    return out, None


def train_step_fn(module, plugin, batch: dict[str, Tensor], optimizer, scheduler,
                  cudagraphs: bool = False) -> Callable[[], Tensor]:
    """One optimizer step as Lightning's automatic optimization runs it for ``framecast fit``
    (``cudagraphs``: tell torch.compile's CUDA graphs that a new iteration begins)."""

    def step() -> Tensor:
        if cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        with plugin.forward_context():
            loss = module.training_step(batch, 0)
        module.on_before_backward(loss)
        plugin.backward(loss, module, optimizer)
        module.on_after_backward()
        module.on_before_optimizer_step(optimizer)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)  # (Lightning zeroes before the step: the same in a loop)
        return loss

    return step


def reference_available(hp: dict[str, Any]) -> str | None:
    """``None`` when the reference ConvLSTM matches the model; else why not."""
    if hp.get("model", "convlstm") != "convlstm":
        return f"the reference is a ConvLSTM; the model is {hp.get('model')!r}"
    if hp.get("head", "deterministic") != "deterministic":
        return "the reference has a deterministic head only"
    if hp.get("teacher_forcing", "none") != "none":
        return "the reference has no teacher forcing"
    loss = hp.get("loss", "mse")
    if loss not in ("mse", {"mse": 1.0}, {"mse": 1}) or hp.get("loss_frames", "all") != "all":
        return "the reference trains on the mse of all next-frame predictions only"
    if (hp.get("model_options") or {}):
        return "the reference has no model_options"
    return None


def phase_result(c: Candidate, b: int, dims: dict[str, int], flops_per_clip: int, peak_flops_per_s: float | None,
                 key: str) -> dict[str, Any]:
    s = stats(c.times)
    t = s["median"]
    clips = b / t
    out = {
        key: s,
        "batch_size": b,
        "clips_per_s": clips,
        "frames_per_s": clips * (dims["context"] + dims["horizon"]),
        "flops_per_clip": flops_per_clip,
        "flops_per_s": flops_per_clip * b / t,
        "fraction_of_conv_peak": (flops_per_clip * b / t) / peak_flops_per_s if peak_flops_per_s else None,
        "peak_memory_bytes": None if c.peak_rise_bytes is None else c.state_bytes + c.peak_rise_bytes,
        "peak_memory_rise_bytes": c.peak_rise_bytes,
        "state_bytes": c.state_bytes,
    }
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="framecast speed",
        description="Training step time, clips/s and frames/s, inference clips/s, peak memory, FLOPs per clip "
                    "and achieved FLOP/s of a model and input size, next to a plain float32 reference ConvLSTM and "
                    "the machine's measured peak on the model's largest convolution, all timed in the same "
                    "interleaved rounds. JSON to stdout (and --json OUT), a table to stderr.",
        epilog="Options of the config can be overridden: --model.KEY VALUE (e.g. --model.hidden [32,32]) and "
               "--data.KEY VALUE (e.g. --data.context_frames 4); values are YAML.",
    )
    p.add_argument("--config", required=True, help="a framecast fit YAML config (model: and data: sections)")
    p.add_argument("--batch-size", type=int, default=None, help="training batch (default: the config's data batch_size, else 16)")
    p.add_argument("--inference-batch-size", type=int, default=None, help="inference batch (default: --batch-size)")
    p.add_argument("--precision", choices=PRECISIONS, default="32", help="framecast's precision (Lightning's names)")
    p.add_argument("--extra-precision", choices=PRECISIONS, action="append", default=[],
                   help="also time framecast at this precision in the same rounds (reported under 'extra'); repeatable")
    p.add_argument("--steps", type=int, default=5, help="counted rounds (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="rounds run first and not counted (default 1)")
    p.add_argument("--compile", action="store_true", help="torch.compile the predictor's recurrent step (model option compile)")
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode with --compile: default, reduce-overhead (CUDA graphs), max-autotune")
    p.add_argument("--channels-last", action="store_true", help="convolution weights in channels-last memory format")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--no-reference", action="store_true", help="do not time the reference ConvLSTM")
    p.add_argument("--no-inference", action="store_true", help="time training only")
    p.add_argument("--conv-reps", type=int, default=2, help="convolution-peak calls per round (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="OUT", help="also write the JSON here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


class Variant:
    """framecast at one precision: its training step, inference and convolution-peak candidates."""

    def __init__(self, args, base, dims: dict[str, int], precision: str, device: torch.device, conv: nn.Conv2d,
                 conv_shape: tuple[int, ...]):
        from framecast.module import compile_predictor

        self.precision = precision
        fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        b, bi, horizon = args.batch_size, args.inference_batch_size, dims["horizon"]
        module = copy.deepcopy(base).to(device).to(memory_format=fmt)
        module.train()
        plugin = precision_plugin(precision, device.type)
        if args.compile:
            compile_predictor(module.model, args.compile_mode)
        batch = random_batch(b, dims, device, args.seed + 1)
        opt, sched = configure_optimizer(module, args.warmup + args.steps)
        ctx = random_batch(bi, dims, device, args.seed + 2)["context"]

        cudagraphs = args.compile and args.compile_mode == "reduce-overhead"

        def infer():
            if cudagraphs:
                torch.compiler.cudagraph_mark_step_begin()
            with torch.inference_mode(), plugin.forward_context():
                return module(ctx, horizon)

        self.module = module
        self.conv_dtypes = conv_dtypes(module, infer)
        self.per_gate = runs_per_gate(module.model, plugin)
        if self.per_gate:  # the cells run eight convolutions per layer: the peak is that of the largest piece
            n = conv.out_channels // 4
            cin = max(conv.in_channels - n, n)
            conv = nn.Conv2d(cin, n, conv.kernel_size, padding=conv.padding)
            conv_shape = (conv_shape[0], cin, *conv_shape[2:])
        self.train = Candidate(f"framecast {precision}", train_step_fn(module, plugin, batch, opt, sched, cudagraphs),
                               state=(module, opt, batch))
        self.infer = Candidate(f"framecast {precision}", infer, state=(module, ctx))
        self.conv_shape, self.conv_weight_shape = conv_shape, list(conv.weight.shape)
        self.conv_train, self.conv_train_flops = self._conv(args, conv, conv_shape, b, plugin, device, fmt, True)
        self.conv_fwd, self.conv_fwd_flops = self._conv(args, conv, conv_shape, bi, plugin, device, fmt, False)

    @staticmethod
    def _conv(args, conv, shape, batch, plugin, device, fmt, backward) -> tuple[Candidate, int]:
        """The largest convolution alone, same precision, batch and memory format, ``args.conv_reps`` calls."""
        layer = copy.deepcopy(conv).to(device).to(memory_format=fmt)
        x = torch.randn(batch, *shape[1:], device=device).contiguous(memory_format=fmt).requires_grad_(backward)
        flops = count_flops(lambda: _conv_call(layer, x, plugin, backward))

        def call():
            for _ in range(args.conv_reps):
                _conv_call(layer, x, plugin, backward)

        return Candidate("conv", call), flops * args.conv_reps

    def conv_peak(self, args, name: str, inference: bool) -> dict[str, Any]:
        reps = args.conv_reps
        if self.per_gate:
            name = f"{name}, one of its per-gate pieces"
        out: dict[str, Any] = {"layer": name, "input_shape_per_clip": list(self.conv_shape[1:]),
                               "weight_shape": self.conv_weight_shape, "precision": self.precision,
                               "calls_per_round": reps}
        for key, cand, flops, batch, used in (("train", self.conv_train, self.conv_train_flops, args.batch_size, True),
                                              ("forward", self.conv_fwd, self.conv_fwd_flops,
                                               args.inference_batch_size, inference)):
            if used and cand.times:
                out[key] = {"batch_size": batch, "flops_per_call": flops // reps,
                            "time_s": stats([t / reps for t in cand.times]),
                            "flops_per_s": flops / statistics.median(cand.times)}
        return out


def measure(args: argparse.Namespace, model_hp: dict[str, Any], dims: dict[str, int], command: str) -> dict[str, Any]:
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SpeedError("--device cuda: no CUDA device is available")
        torch.backends.cudnn.benchmark = True
    if args.threads:
        torch.set_num_threads(args.threads)
    args.inference_batch_size = args.inference_batch_size or args.batch_size
    b, bi = args.batch_size, args.inference_batch_size
    progress = not args.no_progress
    mem = Memory(device)
    info = machine(device)

    torch.manual_seed(args.seed)
    base = build_module(model_hp)
    n_params = sum(p.numel() for p in base.parameters())

    # FLOPs per clip (batch 1, float32, eager): forward rollout, and forward + backward of a training step.
    one = random_batch(1, dims, torch.device("cpu"), args.seed)
    probe = copy.deepcopy(base)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        with torch.no_grad():
            fwd_flops = count_flops(lambda: probe.model.rollout(one["context"], dims["horizon"]))
        train_flops = count_flops(lambda: probe.training_step(one, 0).backward())
    conv_name, conv, conv_shape = largest_conv(probe.model, lambda: probe.model.rollout(one["context"], 1))

    precisions = list(dict.fromkeys([args.precision, *args.extra_precision]))
    variants = [Variant(args, base, dims, p, device, conv, conv_shape) for p in precisions]
    probe = None  # free it

    why_not = "--no-reference" if args.no_reference else reference_available(model_hp)
    ref_train = ref_infer = None
    if why_not is None:
        from framecast.reference import ReferenceConvLSTM

        ref = ReferenceConvLSTM.like(base.model).to(device)
        ref_opt = torch.optim.AdamW(ref.parameters(), lr=base.hparams.lr, weight_decay=base.hparams.weight_decay,
                                    betas=tuple(base.hparams.betas))
        rbatch = random_batch(b, dims, device, args.seed + 1)
        rctx = random_batch(bi, dims, device, args.seed + 2)["context"]

        def ref_step():
            loss = ref.training_loss(rbatch["context"], rbatch["target"])
            loss.backward()
            ref_opt.step()
            ref_opt.zero_grad(set_to_none=True)

        def ref_inference():
            with torch.inference_mode():
                return ref(rctx, dims["horizon"])

        ref_train = Candidate("reference", ref_step, state=(ref, ref_opt, rbatch))
        ref_infer = Candidate("reference", ref_inference, state=(ref, rctx))

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        cands = [ref_train] if ref_train else []
        for v in variants:
            cands += [v.train, v.conv_train]
        run_rounds(cands, args.steps, args.warmup, device, mem, "training", progress)
    if not args.no_inference:
        cands = [ref_infer] if ref_infer else []
        for v in variants:
            cands += [v.infer, v.conv_fwd]
        run_rounds(cands, args.steps, args.warmup, device, mem, "inference", progress)

    def report(v: Variant) -> dict[str, Any]:
        peak = v.conv_peak(args, conv_name, not args.no_inference)
        out = {"conv_dtypes": v.conv_dtypes, "conv_peak": peak,
               "train": phase_result(v.train, b, dims, train_flops, peak["train"]["flops_per_s"], "step_time_s")}
        if not args.no_inference:
            out["inference"] = phase_result(v.infer, bi, dims, fwd_flops, peak["forward"]["flops_per_s"], "time_s")
        if ref_train is not None:
            out["train_speedup"] = statistics.median(ref_train.times) / out["train"]["step_time_s"]["median"]
            if not args.no_inference:
                out["inference_speedup"] = statistics.median(ref_infer.times) / out["inference"]["time_s"]["median"]
        return out

    main_report = report(variants[0])
    result: dict[str, Any] = {
        "command": command,
        "config": str(args.config),
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": info,
        "model": {**dict(base.hparams), "parameters": n_params},
        "input": {**dims, "frames_per_clip": dims["context"] + dims["horizon"],
                  "rollout_steps": dims["context"] + dims["horizon"] - 1},
        "settings": {"precision": args.precision, "compile": args.compile, "compile_mode": args.compile_mode,
                     "channels_last": args.channels_last, "steps": args.steps, "warmup": args.warmup,
                     "batch_size": b, "inference_batch_size": bi, "threads": torch.get_num_threads(),
                     "conv_dtypes": main_report.pop("conv_dtypes"), "memory": mem.method},
        "flops": {"forward_per_clip": fwd_flops, "train_per_clip": train_flops,
                  "counted_with": "torch.utils.flop_counter.FlopCounterMode (multiply-add = 2 FLOPs)"},
        **main_report,
    }
    if ref_train is not None:
        ref_res = {"description": REFERENCE_NAME, "precision": "32",
                   "train": phase_result(ref_train, b, dims, train_flops, None, "step_time_s")}
        if not args.no_inference:
            ref_res["inference"] = phase_result(ref_infer, bi, dims, fwd_flops, None, "time_s")
        result["reference"] = ref_res
    else:
        result["reference"] = None
        result["reference_skipped"] = why_not
    result["extra"] = {v.precision: report(v) for v in variants[1:]}
    with contextlib.suppress(OSError):
        result["machine"]["load_average_end"] = list(os.getloadavg())
    with contextlib.suppress(ImportError, OSError):
        import resource

        result["machine"]["process_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


_GRADS: dict[tuple, Tensor] = {}


def _conv_call(layer: nn.Conv2d, x: Tensor, plugin, backward: bool) -> None:
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
        layer.weight.grad = layer.bias.grad = None
    else:
        with torch.inference_mode(), plugin.forward_context():
            layer(x)


def _ms(s: float) -> str:
    return f"{s * 1e3:,.0f} ms" if s < 10 else f"{s:,.1f} s"


def table(result: dict[str, Any]) -> str:
    """A short human-readable summary."""
    rows = [("", "time (median [min-max])", "clips/s", "GFLOP/s", "of conv peak", "speed-up", "peak mem (rise)")]

    def add(name: str, r: dict[str, Any]) -> None:
        for phase, key, label in (("train", "step_time_s", name + " train step"),
                                  ("inference", "time_s", "  inference")):
            if phase not in r:
                continue
            t = r[phase]
            s = t[key]
            frac = t["fraction_of_conv_peak"]
            speedup = r.get(f"{phase}_speedup")
            rows.append((f"{label} (batch {t['batch_size']})", f"{_ms(s['median'])} [{_ms(s['min'])}-{_ms(s['max'])}]",
                         f"{t['clips_per_s']:.2f}", f"{t['flops_per_s'] / 1e9:,.1f}",
                         "-" if frac is None else f"{100 * frac:.0f} %",
                         "-" if speedup is None else f"{speedup:.2f}x",
                         f"{t['peak_memory_bytes'] / 2**20:,.0f} MiB ({t['peak_memory_rise_bytes'] / 2**20:,.0f})"))

    st = result["settings"]
    add(f"framecast {st['precision']}{' compiled' if st['compile'] else ''}", result)
    for p, r in result.get("extra", {}).items():
        add(f"framecast {p}{' compiled' if st['compile'] else ''}", r)
    if result.get("reference"):
        add("reference 32", result["reference"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    for p, r in [(st["precision"], result), *result.get("extra", {}).items()]:
        cp = r["conv_peak"]
        lines.append(f"conv peak {p} ({cp['layer']} alone): forward+backward {cp['train']['flops_per_s'] / 1e9:,.1f} "
                     "GFLOP/s" + (f", forward {cp['forward']['flops_per_s'] / 1e9:,.1f} GFLOP/s" if "forward" in cp else ""))
    if not result.get("reference"):
        lines.append(f"reference not timed: {result.get('reference_skipped')}")
    lines.append(f"convolutions computed in {', '.join(st['conv_dtypes'])}; {result['flops']['train_per_clip'] / 1e9:,.2f} "
                 f"GFLOP per training clip, {result['flops']['forward_per_clip'] / 1e9:,.2f} per inference clip; "
                 f"{st['threads']} threads; load average {result['machine'].get('load_average_start', ['?'])[0]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        model_over, data_over, rest = split_overrides(argv)
        args = parser().parse_args(rest)
        if args.steps < 1 or args.warmup < 0 or args.conv_reps < 1:
            raise SpeedError("--steps and --conv-reps must be >= 1 and --warmup >= 0")
        model_hp, dims = load_setup(args.config, model_over, data_over)
        if args.batch_size is None:
            cfg = yaml.safe_load(Path(args.config).read_text()) or {}
            args.batch_size = int(((cfg.get("data") or {}).get("init_args") or {}).get("batch_size", 16))
        if args.batch_size < 1 or (args.inference_batch_size is not None and args.inference_batch_size < 1):
            raise SpeedError("batch sizes must be >= 1")
        if (args.compile_mode or model_hp.get("compile")) and not args.compile:
            args.compile = True
        threads, cudnn_benchmark = torch.get_num_threads(), torch.backends.cudnn.benchmark
        try:
            result = measure(args, model_hp, dims, command="framecast speed " + " ".join(argv))
        finally:  # leave the process as it was (the command may run inside a test session)
            torch.set_num_threads(threads)
            torch.backends.cudnn.benchmark = cudnn_benchmark
    except SpeedError as e:
        print(f"framecast speed: {e}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2, default=str)
    print(text)
    print(table(result), file=sys.stderr)
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
