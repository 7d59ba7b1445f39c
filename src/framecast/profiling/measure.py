"""The benchmark of ``framecast speed``: what is built, timed in which rounds, and the JSON result.

:class:`Settings` is what the command asked for; :func:`measure` builds the module from the model's
hyper-parameters, counts its FLOPs per clip and finds its largest convolution, makes a :class:`Variant` (the
training step, inference and convolution-peak candidates) for each precision and the reference ConvLSTM's
candidates, times them in the same interleaved rounds (training first, then inference) and assembles the
result (fields described in ``docs/performance.md``).
"""

from __future__ import annotations

import copy
import datetime as _dt
import statistics
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from framecast.errors import InputError
from framecast.profiling.flops import ConvPeak, conv_dtypes, count_flops, dominant_conv, runs_per_gate
from framecast.profiling.harness import Candidate, Memory, random_batch, run_rounds, to_channels_last
from framecast.profiling.report import finish_machine, machine, phase_result
from framecast.profiling.training import (
    REFERENCE_NAME,
    attach,
    configure_optimizer,
    lightning_trainer,
    reference_available,
    reference_candidates,
    train_step_fn,
)


@dataclass
class Settings:
    """What ``framecast speed`` was asked to do (``framecast.profiling.command`` fills it from the options)."""

    config: str | None
    batch_size: int
    inference_batch_size: int
    precision: str = "32"
    extra_precision: list[str] = field(default_factory=list)
    steps: int = 5
    warmup: int = 1
    compile: bool = False
    compile_mode: str | None = None
    channels_last: bool = False
    device: str = "cpu"
    threads: int | None = None
    no_reference: bool = False
    no_inference: bool = False
    conv_reps: int = 2
    seed: int = 0
    json: str | None = None
    no_progress: bool = False
    gradient_clip_val: float | None = None
    gradient_clip_algorithm: str | None = None


def build_module(model_hp: dict[str, Any]):
    """The training module of ``model_hp`` (``compile`` is :class:`Settings`' business, applied per variant).

    ``reverse_input`` (the official PredRNN training: a second optimizer step on the time-reversed clip of every
    batch) is timed as one plain optimizer step: the training step reported is one optimizer step, and
    ``fit`` with ``reverse_input`` makes two per batch."""
    from framecast.cli.grammar import instantiate_module

    return instantiate_module({"model": {**model_hp, "compile": False, "reverse_input": False}})


class Variant:
    """framecast at one precision: its training step, inference and convolution-peak candidates."""

    def __init__(self, s: Settings, base, dims: dict[str, int], precision: str, device: torch.device,
                 dominant: tuple[str, nn.Module, tuple[int, ...], float]):
        from framecast.module import compile_predictor

        self.precision = precision
        b, bi, horizon = s.batch_size, s.inference_batch_size, dims["horizon"]
        module = copy.deepcopy(base).to(device)
        if s.channels_last:
            to_channels_last(module)
        module.train()
        trainer = lightning_trainer(precision, device, s.gradient_clip_val, s.gradient_clip_algorithm)
        plugin = trainer.precision_plugin
        if s.compile:
            compile_predictor(module.model, s.compile_mode)
        batch = random_batch(b, dims, device, s.seed + 1)
        opt, sched = configure_optimizer(module, s.warmup + s.steps)
        attach(module, trainer)
        ctx = random_batch(bi, dims, device, s.seed + 2)["context"]

        cudagraphs = s.compile and s.compile_mode == "reduce-overhead"

        def infer():
            if cudagraphs:
                torch.compiler.cudagraph_mark_step_begin()
            with torch.inference_mode(), plugin.forward_context():
                return module(ctx, horizon)

        self.module = module
        self.conv_dtypes = conv_dtypes(module, infer)
        name, conv, shape, share = dominant
        per_gate = runs_per_gate(module.model, plugin, name, b, dims["height"], dims["width"])
        self.train = Candidate(f"framecast {precision}", train_step_fn(module, trainer, batch, opt, sched, cudagraphs),
                               state=(module, opt, batch))
        self.infer = Candidate(f"framecast {precision}", infer, state=(module, ctx))
        self.peak = ConvPeak(name, conv, shape, share, per_gate, precision, plugin, device, s.channels_last, b, bi,
                             s.conv_reps)


def measure(s: Settings, model_hp: dict[str, Any], dims: dict[str, int], command: str) -> dict[str, Any]:
    """Time the model of ``model_hp`` on random input of shape ``dims`` as ``s`` asks: the JSON result."""
    device = torch.device(s.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is available (use --device cpu)")
        torch.backends.cudnn.benchmark = True
    if s.threads:
        torch.set_num_threads(s.threads)
    b, bi = s.batch_size, s.inference_batch_size
    progress = not s.no_progress
    mem = Memory(device)
    info = machine(device)

    torch.manual_seed(s.seed)
    base = build_module(model_hp)
    n_params = sum(p.numel() for p in base.parameters())

    # FLOPs per clip (batch 1, float32, eager): forward rollout, and forward + backward of a training step.
    one = random_batch(1, dims, torch.device("cpu"), s.seed)
    probe = copy.deepcopy(base)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        with torch.no_grad():
            fwd_flops = count_flops(lambda: probe.model.rollout(one["context"], dims["horizon"]))
        train_flops = count_flops(lambda: probe.training_step(one, 0).backward())
    dominant = dominant_conv(probe.model, lambda: probe.model.rollout(one["context"], dims["horizon"]))

    precisions = list(dict.fromkeys([s.precision, *s.extra_precision]))
    variants = [Variant(s, base, dims, p, device, dominant) for p in precisions]
    probe = None  # free it

    why_not = "--no-reference" if s.no_reference else reference_available(model_hp)
    ref_train = ref_infer = None
    if why_not is None:
        ref_train, ref_infer = reference_candidates(base, dims, device, b, bi, s.seed)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        cands = [ref_train] if ref_train else []
        for v in variants:
            cands += [v.train, v.peak.train]
        run_rounds(cands, s.steps, s.warmup, device, mem, "training", progress)
    if not s.no_inference:
        cands = [ref_infer] if ref_infer else []
        for v in variants:
            cands += [v.infer, v.peak.forward]
        run_rounds(cands, s.steps, s.warmup, device, mem, "inference", progress)

    def report(v: Variant) -> dict[str, Any]:
        peak = v.peak.result(not s.no_inference)
        out = {"conv_dtypes": v.conv_dtypes, "conv_peak": peak,
               "train": phase_result(v.train, b, dims, train_flops, peak["train"]["flops_per_s"], "step_time_s")}
        if not s.no_inference:
            out["inference"] = phase_result(v.infer, bi, dims, fwd_flops, peak["forward"]["flops_per_s"], "time_s")
        if ref_train is not None:
            out["train_speedup"] = statistics.median(ref_train.times) / out["train"]["step_time_s"]["median"]
            if not s.no_inference:
                out["inference_speedup"] = statistics.median(ref_infer.times) / out["inference"]["time_s"]["median"]
        return out

    main_report = report(variants[0])
    result: dict[str, Any] = {
        "command": command,
        "config": s.config,
        "time": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": info,
        "model": {**dict(base.hparams), "parameters": n_params},
        "input": {**dims, "frames_per_clip": dims["context"] + dims["horizon"],
                  "rollout_steps": dims["context"] + dims["horizon"] - 1},
        "settings": {"precision": s.precision, "compile": s.compile, "compile_mode": s.compile_mode,
                     "channels_last": s.channels_last, "steps": s.steps, "warmup": s.warmup,
                     "batch_size": b, "inference_batch_size": bi, "threads": torch.get_num_threads(),
                     "conv_dtypes": main_report.pop("conv_dtypes"), "memory": mem.method},
        "flops": {"forward_per_clip": fwd_flops, "train_per_clip": train_flops,
                  "counted_with": "torch.utils.flop_counter.FlopCounterMode (multiply-add = 2 FLOPs)"},
        **main_report,
    }
    if ref_train is not None:
        ref_res = {"description": REFERENCE_NAME, "precision": "32",
                   "train": phase_result(ref_train, b, dims, train_flops, None, "step_time_s")}
        if not s.no_inference:
            ref_res["inference"] = phase_result(ref_infer, bi, dims, fwd_flops, None, "time_s")
        result["reference"] = ref_res
    else:
        result["reference"] = None
        result["reference_skipped"] = why_not
    result["extra"] = {v.precision: report(v) for v in variants[1:]}
    finish_machine(result["machine"])
    return result
