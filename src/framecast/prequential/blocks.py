"""The blocks of a prequential code: the training rule, and every block of every predictor, resumably.

* :class:`Recipe`: how long block ``k``'s fit trains (steps proportional to the data, with a cap) and how
  often it validates on the held-out tail;
* :class:`ModelEntry`: a registered model, one ``framecast fit`` per block (``--ckpt_path last`` where an
  interrupted fit of that block left a checkpoint), the checkpoint with the lowest ``val/loss`` codes;
* :class:`BaselineEntry`: a baseline, Laplace scales fitted on every transmitted clip;
* :func:`run_blocks`: block-major over the entries, loading ``DIR/<name>/block_<k>/result.json`` where a
  block was done earlier and writing it (first process only) when one is done now.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framecast.errors import ConfigError, InputError

DATA_CLASS = "framecast.prequential.stream.StreamDataModule"

@dataclass
class Recipe:
    """How many steps a block's fit trains and how often it validates (see the module docstring)."""

    epochs: float
    min_steps: int
    max_steps: int | None
    validations: int
    val_fraction: float
    batch_size: int
    processes: int = 1

    def __post_init__(self):
        if not self.epochs > 0:
            raise ConfigError(f"--epochs must be > 0, got {self.epochs}")
        if self.min_steps < 1 or self.validations < 1:
            raise ConfigError(f"--min-steps and --validations must be >= 1, got {self.min_steps} and {self.validations}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"--val-fraction must be in (0, 1), got {self.val_fraction}")

    def steps(self, train_clips: int) -> tuple[int, int]:
        """``(training steps, validation interval in steps)`` of a fit on ``train_clips`` clips."""
        s = max(self.min_steps, math.ceil(self.epochs * train_clips / (self.batch_size * self.processes)))
        if self.max_steps:
            s = min(s, self.max_steps)
        interval = max(1, s // self.validations)
        return interval * (s // interval), interval

    def rule(self, seed: Any) -> str:
        cap = f"at most trainer.max_steps {self.max_steps}" if self.max_steps else "no cap (trainer.max_steps -1)"
        return (f"a fresh model (seed {seed}) trained with the config's recipe on the clips transmitted before the "
                f"block except a held-out tail of round({self.val_fraction:g} x clips seen) clips (at least 1); "
                f"steps = ceil({self.epochs:g} epochs x training clips / (batch {self.batch_size} x "
                f"{self.processes} process(es))), at least {self.min_steps}, {cap}, rounded down to a multiple of "
                f"the validation interval (steps // {self.validations}); it validates on the tail every interval "
                f"and the checkpoint with the lowest val/loss codes the block (early stopping).")

    def describe(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "min_steps": self.min_steps, "max_steps": self.max_steps,
                "validations": self.validations, "val_fraction": self.val_fraction, "batch_size": self.batch_size}


def is_main() -> bool:
    """Whether this is the first process (the one that writes files) of a distributed run, or the only one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    if "RANK" in os.environ:
        return int(os.environ["RANK"]) == 0
    return int(os.environ.get("LOCAL_RANK") or 0) == 0 and int(os.environ.get("NODE_RANK") or 0) == 0


def say(*args: Any) -> None:
    if is_main():
        print(*args, flush=True)


def best_checkpoint(ckpt_dir: Path) -> tuple[Path, int]:
    """``(the checkpoint with the lowest val/loss, the steps trained)`` of a block's fit, from its ``last.ckpt``
    (saved at every validation, the last one at the fit's final step)."""
    from framecast.checkpoints import safe_load

    last = ckpt_dir / "last.ckpt"
    if not last.is_file():
        raise InputError(f"the fit wrote no {last}")
    state = safe_load(last)
    for key, value in (state.get("callbacks") or {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(value, dict) and value.get("best_model_path"):
            best = Path(value["best_model_path"])
            if best.is_file():
                return best, int(state.get("global_step", 0))
    raise InputError(f"{last} names no best checkpoint that exists: did the fit validate on the held-out tail?")


def prune(ckpt_dir: Path, keep: Path) -> None:
    """Delete the validation checkpoints of a finished fit but ``keep`` (the best) and ``last.ckpt``."""
    for p in ckpt_dir.glob("step=*.ckpt"):
        if p.resolve() != keep.resolve():
            p.unlink(missing_ok=True)


def step_of(path: Path) -> int | None:
    match = re.search(r"step=(\d+)", path.name)
    return int(match.group(1)) if match else None


class BaselineEntry:
    """A baseline: nothing trained; Laplace scales fitted on every transmitted clip."""

    kind = "baseline"

    def __init__(self, name: str, device: str):
        self.name, self.device = name, device

    def plan(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name}

    def prepare(self, ctx: Context, k: int, start: int):
        from framecast.models import build_model
        from framecast.prequential.coding import NextFrameCoder, batches

        coder = NextFrameCoder(self.name, build_model(self.name), device=self.device)
        coder.fit_scales(batches(ctx.stream, range(start), ctx.batch_size, "scales"))
        return coder, {"train_clips": 0, "val_clips": 0, "train_steps": 0, "train_seconds": 0.0, "checkpoint": None}


class ModelEntry:
    """A registered model: a ``framecast fit`` per block on the transmitted clips, the best checkpoint codes."""

    kind = "model"

    def __init__(self, name: str, model: dict[str, Any], device: str, fit: Callable[[list[str]], Any]):
        self.name, self.model, self.device, self.fit = name, model, device, fit

    def plan(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "model": self.model}

    def fit_argv(self, ctx: Context, run_dir: Path, seen: int, val: int, steps: int, interval: int) -> list[str]:
        spec = {"class_path": DATA_CLASS, "init_args": {"data": ctx.data, "seen": seen, "val_clips": val}}
        argv = ["fit", *ctx.fit_options, f"--data={json.dumps(spec)}", "--model.model", self.name,
                "--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1",
                "--trainer.check_val_every_n_epoch", "null", "--trainer.val_check_interval", str(interval),
                "--trainer.default_root_dir", str(run_dir), "--checkpoint.dirpath", str(run_dir / "checkpoints"),
                "--checkpoint.filename", "{step:06d}", "--checkpoint.monitor", "val/loss", "--checkpoint.mode", "min",
                "--checkpoint.save_top_k", "-1", "--checkpoint.save_last", "true",
                "--checkpoint.every_n_train_steps", "null", "--checkpoint.every_n_epochs", "null",
                "--checkpoint.train_time_interval", "null"]
        if (run_dir / "checkpoints" / "last.ckpt").is_file():
            argv += ["--ckpt_path", "last"]  # an interrupted fit of this block: continue it
        return argv

    def prepare(self, ctx: Context, k: int, start: int):
        from framecast.loading import load_module
        from framecast.prequential.coding import NextFrameCoder, batches
        from framecast.prequential.stream import tail_size

        val = tail_size(start, ctx.recipe.val_fraction)
        steps, interval = ctx.recipe.steps(start - val)
        run_dir = ctx.out / self.name / f"block_{k}"
        argv = self.fit_argv(ctx, run_dir, start, val, steps, interval)
        say(f"--- block {k}: training {self.name} on clips 0..{start - val - 1} ({start - val}), validating on "
            f"{start - val}..{start - 1}, {steps} steps -> {run_dir}")
        t0 = time.perf_counter()
        self.fit(argv)
        seconds = time.perf_counter() - t0
        best, trained = best_checkpoint(run_dir / "checkpoints")
        if is_main():
            prune(run_dir / "checkpoints", best)
        module = load_module(best, map_location="cpu")
        coder = NextFrameCoder(self.name, module.model, device=self.device)
        coder.fit_scales(batches(ctx.stream, range(start - val, start), ctx.batch_size, "scales"))
        info = {"train_clips": start - val, "val_clips": val, "train_steps": trained, "train_seconds": seconds,
                "best_step": step_of(best), "checkpoint": str(best), "resumed": "--ckpt_path" in argv}
        return coder, info


@dataclass
class Context:
    stream: Any
    ends: list[int]
    out: Path
    batch_size: int
    recipe: Recipe
    data: dict[str, Any]
    fit_options: list[str]


def block_record(k: int, start: int, end: int, code, coder=None, info: dict | None = None,
                 code_seconds: float = 0.0) -> dict[str, Any]:
    info = info or {"train_clips": 0, "val_clips": 0, "train_steps": 0, "train_seconds": 0.0, "checkpoint": None}
    scales = None if coder is None or coder.scales is None else [float(s) for s in coder.scales]
    return {"block": k, "start": start, "end": end, "clips": code.clips, "frames": code.frames, "pixels": code.pixels,
            "bits": code.bits, "bits_per_pixel": code.bits_per_pixel, "first_frame_bits": code.first_frame_bits,
            **info, "code_seconds": code_seconds,
            "codelength": "uniform (8 bits per sub-pixel)" if coder is None else coder.codelength, "scales": scales}


def run_blocks(ctx: Context, entries: Sequence, on_block: Callable[[dict], None] | None = None) -> dict[str, list]:
    """Every block for every entry (block-major), loading the blocks done earlier; ``{name: block records}``."""
    from framecast.prequential.coding import batches, code_block, uniform_block
    from framecast.prequential.report import write_atomic

    records: dict[str, list] = {e.name: [] for e in entries}
    s = ctx.stream
    per_frame = s.channels * s.size[0] * s.size[1]
    for k, end in enumerate(ctx.ends):
        start = ctx.ends[k - 1] if k else 0
        for e in entries:
            path = ctx.out / e.name / f"block_{k}" / "result.json"
            if k == 0:
                rec = block_record(0, 0, end, uniform_block(end, s.frames_per_clip, per_frame))
            elif path.is_file():
                rec = json.loads(path.read_text())
                say(f"block {k} ({e.name}): done earlier, {rec['bits_per_pixel']:.4f} bits per pixel ({path})")
            else:
                coder, info = e.prepare(ctx, k, start)
                t0 = time.perf_counter()
                code = code_block(coder, batches(s, range(start, end), ctx.batch_size, "code"))
                rec = block_record(k, start, end, code, coder, info, time.perf_counter() - t0)
                if is_main():
                    write_atomic(path, json.dumps(rec, indent=2) + "\n")
                say(f"block {k} ({e.name}): clips {start}..{end - 1}, {code.bits:,.0f} bits, "
                    f"{code.bits_per_pixel:.4f} bits per pixel")
            records[e.name].append(rec)
        if on_block is not None:
            on_block(records)
    return records
