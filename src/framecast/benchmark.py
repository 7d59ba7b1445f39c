"""``framecast benchmark``: every metric per horizon step for checkpoints and baselines, on the same clips.

    framecast benchmark --ckpt CKPT [CKPT ...] [--baselines copy_last,linear]
                        [--config FILE | --video PATH] --out DIR [--clips N] [--batch-size B] [--split test]
                        [--data.KEY VALUE ...]

Every checkpoint and baseline predicts the same clips of the data's test split (the data's own horizon)
under ``torch.inference_mode``; the metrics of :mod:`framecast.metrics` are averaged exactly over those
clips, per horizon step and over the steps. The codelength (``bits_per_pixel``) of a deterministic
predictor uses a discretized Laplace whose scales (one per step) are fitted by maximum likelihood on the
validation split of the same data (:mod:`framecast.codelength`); a checkpoint with a per-pixel
distribution (``head: logistic_mixture``) uses its own distribution.

Written to ``DIR``: ``results.md`` (tables), ``results.csv`` (one row per predictor and step, plus a
``mean`` row), ``results.json`` (everything, with the data description, clip count, seed and versions)
and ``curves.png`` (one panel per metric, frames ahead on x, one line per predictor).

Layout. ``results.csv``: one row per predictor and horizon step, then a row with ``step`` = ``mean``
(the average over the steps, which is the average over every clip and step); columns ``predictor, kind,
step, seconds_ahead`` (empty without an fps) and one per metric; numbers at full precision, ``inf`` spelled
out, ``unavailable`` where a metric cannot be computed here. ``results.json``: ``command``, ``created``,
``versions`` (framecast, torch, torchmetrics, python), ``seed``, ``device``, ``data`` (class, options,
channels, size, context_frames, horizon_frames, fps, split, clips, fit_split, fit_clips), ``horizon``,
``steps``, ``seconds_ahead``, ``metrics`` (per metric: better, unit, definition) and ``predictors``: a list
of ``{name, kind, checkpoint, model, codelength, laplace_scales, metrics}`` with, per metric, either
``{"available": true, "mean": x, "per_step": [...]}`` or ``{"available": false, "reason": "..."}``;
non-finite numbers are the strings ``"inf"`` / ``"nan"`` (strict JSON has none), which ``float()`` reads.
``results.md``: the averaged table, one per-step table per metric, and notes (unavailable metrics with
their reasons, how each predictor's codelength was obtained).

Data: ``--config`` takes the ``data:`` section of a ``framecast fit`` config; ``--video`` clips a video
file or folder like the first checkpoint's training clips (fps, clip lengths, size, channels); with
neither, the data the first checkpoint was trained on. ``--data.KEY VALUE`` (or
``--data.init_args.KEY VALUE``) overrides an option of the data module, e.g. ``--data.test_size 64``.

Several processes: ``--trainer.strategy ddp --trainer.devices N [--trainer.accelerator cpu|gpu]
[--trainer.num_nodes M]``, as for ``framecast fit``. Each process evaluates every N-th clip and the exact
sums behind every metric (and the Laplace fit) are merged, so the numbers are those of one process
(:mod:`framecast.processes`); the first process writes the files.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import platform
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from tqdm.auto import tqdm

from framecast.loading import (
    batches,
    datamodule_for_video,
    datamodule_from_checkpoint,
    datamodule_from_config,
    frame_size_of,
    load_module,
    shrink,
)
from framecast.metrics import (
    LPIPS,
    METRICS,
    MetricAccumulator,
    laplace_bits_per_clip,
    mixture_bits_per_clip,
)
from framecast.processes import TRAINER_FLAGS, Processes, start

DEFAULT_BASELINES = "copy_last,linear"


class BenchmarkError(ValueError):
    """A problem with what the user asked for, reported as one clear message (exit code 2)."""


# --- predictors -------------------------------------------------------------------------------------


@dataclass
class Entry:
    """One predictor of the benchmark: a checkpoint's model or a baseline."""

    name: str
    kind: str  # "checkpoint" or "baseline"
    model: nn.Module
    checkpoint: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    data_hparams: dict[str, Any] = field(default_factory=dict)
    scales: Tensor | None = None  # fitted Laplace scales (T,), deterministic predictors only

    @property
    def has_distribution(self) -> bool:
        return self.hparams.get("head") == "logistic_mixture"

    @property
    def codelength(self) -> str:
        return "model distribution (logistic mixture)" if self.has_distribution else "discretized Laplace"

    def predict(self, context: Tensor, horizon: int) -> tuple[Tensor, Tensor | None]:
        """``(prediction (B, horizon, C, H, W), distribution params or None)``."""
        if self.kind == "baseline":
            return self.model(context, horizon), None
        roll = self.model.rollout(context, horizon)
        return roll.prediction(), roll.prediction_params()

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "codelength": self.codelength}
        if self.checkpoint:
            out["checkpoint"] = self.checkpoint
            out["model"] = {k: v for k, v in self.hparams.items() if not k.startswith("_")}
        else:
            out["model"] = {"model": self.name}
        out["laplace_scales"] = None if self.scales is None else [float(s) for s in self.scales]
        return out


def parse_checkpoints(specs: list[str]) -> list[tuple[str | None, Path]]:
    """``PATH`` or ``NAME=PATH`` -> ``(name or None, path)``."""
    out = []
    for spec in specs:
        name, path = None, spec
        if "=" in spec and not Path(spec).exists():
            name, path = spec.split("=", 1)
        out.append((name or None, Path(path)))
    return out


def load_predictors(checkpoints: list[tuple[str | None, Path]], baselines: list[str],
                    device: str | torch.device = "cpu") -> list[Entry]:
    """Load every checkpoint (named ``NAME=`` or by its model and file) and build the baselines."""
    from framecast.models import BASELINES, build_model

    entries: list[Entry] = []
    for name, path in checkpoints:
        try:
            module = load_module(path, map_location=device)
        except (FileNotFoundError, ValueError) as e:
            raise BenchmarkError(str(e)) from e
        hp = dict(module.hparams)
        label = f"{path.parent.parent.name}/{path.stem}" if path.parent.name == "checkpoints" else path.stem
        entries.append(Entry(name=name or f"{hp.get('model', 'model')}:{label}", kind="checkpoint",
                             model=module.model.eval(), checkpoint=str(path), hparams=hp,
                             data_hparams=module.data_hparams))
    _unique_names([e for e in entries if e.kind == "checkpoint"])
    for b in baselines:
        if b not in BASELINES:
            raise BenchmarkError(f"unknown baseline {b!r}; baselines are {sorted(BASELINES)}")
        entries.append(Entry(name=b, kind="baseline", model=build_model(b).eval()))
    names = [e.name for e in entries]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise BenchmarkError(f"two predictors are named {dup}: name checkpoints with NAME=PATH")
    if not entries:
        raise BenchmarkError("nothing to benchmark: give --ckpt and/or --baselines")
    return entries


def _unique_names(entries: list[Entry]) -> None:
    """Checkpoints with the same default name get a counter."""
    names = [e.name for e in entries]
    for i, e in enumerate(entries):
        if names.count(e.name) > 1:
            e.name = f"{e.name} #{i + 1}"


def check_compatible(entries: list[Entry], dm) -> None:
    """Every checkpoint's channels and frame size (as trained) must be the data's."""
    c, size = int(dm.channels), tuple(int(s) for s in dm.size)
    problems = []
    for e in entries:
        if e.kind != "checkpoint":
            continue
        ec = int(e.hparams.get("channels", c))
        esize = frame_size_of(e.data_hparams) or size
        if ec != c or tuple(esize) != size:
            problems.append(f"checkpoint {e.checkpoint} was trained on {ec}-channel {esize[0]}x{esize[1]} frames, "
                            f"but the data has {c}-channel {size[0]}x{size[1]} frames")
            continue
        p = int(e.hparams.get("patch_size", 1))
        if size[0] % p or size[1] % p:
            problems.append(f"checkpoint {e.checkpoint}: frame size {size[0]}x{size[1]} is not divisible by its "
                            f"patch_size {p}")
    if problems:
        raise BenchmarkError("checkpoint and data do not match:\n  " + "\n  ".join(problems))


# --- data ---------------------------------------------------------------------------------------------


def split_data_overrides(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Take ``--data.KEY VALUE``, ``--data.init_args.KEY VALUE`` (or ``=VALUE``) out of ``argv``; values are
    YAML (``8``, ``[64,64]``, ``null``). Returns ``(overrides, the other args)``."""
    overrides: dict[str, Any] = {}
    rest: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--data.") and a != "--data.":
            key, eq, value = a[len("--data."):].partition("=")
            if not eq:
                if i + 1 >= len(argv):
                    raise BenchmarkError(f"{a} needs a value")
                value = argv[i + 1]
                i += 1
            key = key.removeprefix("init_args.")
            overrides[key] = yaml.safe_load(value)
        else:
            rest.append(a)
        i += 1
    return overrides, rest


def build_datamodule(config: str | Path | None = None, video: str | Path | None = None,
                     entries: list[Entry] = (), overrides: dict[str, Any] | None = None):
    """The data to benchmark on: a config's ``data:``, clips of ``video`` or the first checkpoint's data."""
    overrides = dict(overrides or {})
    first = next((e for e in entries if e.kind == "checkpoint" and e.data_hparams), None)
    try:
        if config is not None:
            return datamodule_from_config(config, **overrides)
        if video is not None:
            like = first or (entries[0] if entries and entries[0].kind == "checkpoint" else None)
            return datamodule_for_video(video, like=like, **overrides)
        if first is None:
            raise BenchmarkError("no data: give --config FILE or --video PATH (no checkpoint records its data)")
        return datamodule_from_checkpoint(first.checkpoint, first.data_hparams, **overrides)
    except BenchmarkError:
        raise
    except (FileNotFoundError, ValueError, TypeError) as e:
        raise BenchmarkError(f"cannot build the data: {e}") from e


def _num_batches(loader, clips: int | None) -> int | None:
    try:
        n = len(loader)
    except TypeError:
        return None
    bs = getattr(loader, "batch_size", None)
    if clips is not None and bs:
        n = min(n, math.ceil(clips / bs))
    return n


def describe_data(dm, split: str, clips: int, fit_clips: int | None) -> dict[str, Any]:
    options = {k: v for k, v in dict(getattr(dm, "hparams", {})).items() if not k.startswith("_")}
    return {
        "class": f"{type(dm).__module__}.{type(dm).__name__}",
        "options": options,
        "channels": int(dm.channels),
        "size": [int(s) for s in dm.size],
        "context_frames": int(dm.context_frames),
        "horizon_frames": int(dm.horizon_frames),
        "fps": getattr(dm, "fps", None),
        "split": split,
        "clips": clips,
        "fit_split": "val" if fit_clips is not None else None,
        "fit_clips": fit_clips,
    }


# --- running ------------------------------------------------------------------------------------------


def _loader(dm, split: str):
    try:
        loader = getattr(dm, f"{split}_dataloader")()
    except ValueError as e:  # e.g. fewer clips than processes
        raise BenchmarkError(str(e)) from e
    if isinstance(loader, list) and not loader:
        raise BenchmarkError(f"the data has no {split} split (its split fraction is 0)")
    return loader


def _clips(dm, split: str, clips: int | None, procs: Processes, desc: str,
           progress: bool) -> Iterator[tuple[Tensor, Tensor]]:
    """``(context, target)`` on the process's device, batch by batch, for at most ``clips`` clips of ``split``
    (this process's share of them when there are several processes)."""
    loader = _loader(dm, split)
    if procs.world > 1:
        loader, clips = procs.shard(loader, clips), None
    for batch in tqdm(batches(loader, clips), total=_num_batches(loader, clips), desc=desc, unit="batch",
                      disable=not (progress and procs.is_main), file=sys.stderr):
        yield batch["context"].to(procs.device), batch["target"].to(procs.device)


@torch.inference_mode()
def fit_laplace(entries: list[Entry], dm, clips: int | None, procs: Processes, progress: bool = True) -> int:
    """Fit each deterministic predictor's Laplace scales on the validation split; returns the clip count."""
    from framecast.codelength import LaplaceFit

    need = [e for e in entries if not e.has_distribution]
    if not need:
        return 0
    fits = {e.name: LaplaceFit() for e in need}
    n = 0
    for context, target in _clips(dm, "val", clips, procs, "fitting Laplace scales (val)", progress):
        horizon = target.shape[1]
        n += len(context)
        for e in need:
            pred, _ = e.predict(context, horizon)
            fits[e.name].add(pred.clamp(0, 1).cpu(), target.cpu())
    if procs.world > 1:  # every process fits the same scales to everyone's pairs
        gathered = procs.gather((n, fits))
        n, fits = 0, {e.name: LaplaceFit() for e in need}
        for n_r, fits_r in gathered:
            n += n_r
            for name, fit in fits_r.items():
                fits[name].merge(fit)
    if n == 0:
        raise BenchmarkError("the validation split has no clips to fit the Laplace scales on")
    for e in need:
        e.scales = fits[e.name].scales()
    return n


@torch.inference_mode()
def evaluate(entries: list[Entry], dm, split: str, clips: int | None, procs: Processes, lpips: LPIPS,
             progress: bool = True) -> tuple[dict[str, MetricAccumulator], int]:
    """Every metric of every predictor on the same clips of ``split``; ``({name: accumulator}, clips)``."""
    accs = {e.name: MetricAccumulator() for e in entries}
    lpips_reason = lpips.unavailable_for(tuple(dm.size))
    n = 0
    for context, target in _clips(dm, split, clips, procs, f"benchmark ({split})", progress):
        horizon = target.shape[1]
        n += len(context)
        for e in entries:
            acc = accs[e.name]
            pred, params = e.predict(context, horizon)
            acc.add_pixel_metrics(pred, target)
            if e.has_distribution:
                acc.add("bits_per_pixel", mixture_bits_per_clip(e.model.head, params, target))
            else:
                acc.add("bits_per_pixel", laplace_bits_per_clip(pred, target, e.scales))
            if lpips_reason is None:
                try:
                    acc.add("lpips", lpips(pred, target))
                except Exception as err:  # noqa: BLE001  (an optional metric never stops the benchmark)
                    lpips_reason = f"LPIPS failed: {type(err).__name__}: {err}"
    if procs.world > 1:  # the sums of every process; LPIPS is reported only where every process had it
        gathered = procs.gather((n, accs, lpips_reason))
        n, accs = 0, {e.name: MetricAccumulator() for e in entries}
        for n_r, accs_r, reason_r in gathered:
            n += n_r
            for name, acc in accs_r.items():
                accs[name].merge(acc)
            lpips_reason = lpips_reason or reason_r
    if n == 0:
        raise BenchmarkError(f"the {split} split has no clips")
    for acc in accs.values():
        if lpips_reason is not None:
            acc.sums.pop("lpips", None)
            acc.set_unavailable("lpips", lpips_reason)
    return accs, n


def versions() -> dict[str, str]:
    import framecast

    out = {"framecast": framecast.__version__, "torch": torch.__version__, "python": platform.python_version()}
    try:
        import torchmetrics

        out["torchmetrics"] = torchmetrics.__version__
    except ImportError:  # pragma: no cover
        pass
    return out


def results_dict(entries: list[Entry], accs: dict[str, MetricAccumulator], data: dict[str, Any],
                 seed: int, device, command: str) -> dict[str, Any]:
    """Everything a benchmark found, as plain data (what ``results.json`` holds, before encoding)."""
    horizon = data["horizon_frames"]
    fps = data.get("fps")
    predictors = []
    for e in entries:
        acc = accs[e.name]
        metrics = {}
        for m in METRICS:
            if m in acc.unavailable:
                metrics[m] = {"available": False, "reason": acc.unavailable[m]}
            else:
                metrics[m] = {"available": True, "mean": acc.mean(m),
                              "per_step": [float(v) for v in acc.per_step(m)]}
        predictors.append({**e.describe(), "metrics": metrics})
    return {
        "benchmark": "framecast benchmark",
        "command": command,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": versions(),
        "seed": seed,
        "device": str(device),
        "data": data,
        "horizon": horizon,
        "steps": list(range(1, horizon + 1)),
        "seconds_ahead": [k / fps for k in range(1, horizon + 1)] if fps else None,
        "metrics": {m: dict(info) for m, info in METRICS.items()},
        "predictors": predictors,
    }


# --- writing ------------------------------------------------------------------------------------------


def fmt(v: float) -> str:
    """A number for the Markdown table: 5 significant digits, ``inf`` spelled out."""
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if math.isnan(v):
        return "nan"
    return f"{v:.5g}"


def exact(v: float) -> str:
    """A number for CSV: shortest round-trip repr, ``inf``/``nan`` spelled out (``float()`` reads them)."""
    return "inf" if v == math.inf else "-inf" if v == -math.inf else "nan" if math.isnan(v) else repr(float(v))


def _json_safe(obj):
    """Non-finite floats as the strings ``"inf"``, ``"-inf"``, ``"nan"`` (strict JSON has no such numbers)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return exact(obj)
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def markdown(results: dict[str, Any]) -> str:
    d, horizon = results["data"], results["horizon"]
    names = list(results["metrics"])
    arrow = {m: ("↓" if info["better"] == "lower" else "↑") for m, info in results["metrics"].items()}
    v = results["versions"]
    fps = f", {d['fps']:g} fps" if d.get("fps") else ""
    lines = [
        "# framecast benchmark",
        "",
        f"- Data: `{d['class']}` {json.dumps(d['options'], default=str)}",
        (f"- Frames: {d['channels']} channel(s), {d['size'][0]}x{d['size'][1]}{fps}; "
        f"{d['context_frames']} context frames, {horizon} predicted"),
        f"- Clips: {d['clips']} of the {d['split']} split"
        + (f"; Laplace scales fitted on {d['fit_clips']} clips of the validation split" if d.get("fit_clips") else ""),
        (f"- Seed {results['seed']}; framecast {v['framecast']}, torch {v['torch']}; device {results['device']}; "
        f"{results['created']}"),
        f"- Command: `{results['command']}`",
        "",
        f"## Averaged over the {horizon} predicted frames",
        "",
        "| predictor | " + " | ".join(f"{m} {arrow[m]}" for m in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for p in results["predictors"]:
        cells = [fmt(p["metrics"][m]["mean"]) if p["metrics"][m]["available"] else "unavailable" for m in names]
        lines.append(f"| {p['name']} | " + " | ".join(cells) + " |")
    lines += ["", "## Per horizon step", ""]
    steps = [f"t+{k}" for k in results["steps"]]
    for m in names:
        info = results["metrics"][m]
        lines += [f"### {m} ({info['better']} is better)", "", f"{info['definition']}.", ""]
        lines.append("| predictor | " + " | ".join(steps) + " | mean |")
        lines.append("|---|" + "---:|" * (len(steps) + 1))
        for p in results["predictors"]:
            r = p["metrics"][m]
            if r["available"]:
                cells = [fmt(x) for x in r["per_step"]] + [fmt(r["mean"])]
            else:
                cells = ["unavailable"] * (len(steps) + 1)
            lines.append(f"| {p['name']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Notes", ""]
    reasons = {}
    for p in results["predictors"]:
        for m, r in p["metrics"].items():
            if not r["available"]:
                reasons.setdefault((m, r["reason"]), []).append(p["name"])
    for (m, reason), who in reasons.items():
        lines.append(f"- `{m}` is unavailable ({', '.join(who)}): {reason}")
    for p in results["predictors"]:
        how = p["codelength"]
        if p["laplace_scales"]:
            how += ", scales per step " + ", ".join(f"{s:.4g}" for s in p["laplace_scales"])
        lines.append(f"- `{p['name']}`" + (f" ({p['checkpoint']})" if p.get("checkpoint") else "")
                     + f": bits_per_pixel from {how}")
    lines.append("- PSNR of a perfectly predicted frame is inf, and so is any average that includes one.")
    return "\n".join(lines) + "\n"


CSV_FIXED = ["predictor", "kind", "step", "seconds_ahead"]


def csv_rows(results: dict[str, Any]) -> list[list[str]]:
    names = list(results["metrics"])
    rows = [CSV_FIXED + names]
    secs = results.get("seconds_ahead")
    for p in results["predictors"]:
        for k in range(results["horizon"]):
            cells = [exact(p["metrics"][m]["per_step"][k]) if p["metrics"][m]["available"] else "unavailable"
                     for m in names]
            rows.append([p["name"], p["kind"], str(k + 1), exact(secs[k]) if secs else ""] + cells)
        cells = [exact(p["metrics"][m]["mean"]) if p["metrics"][m]["available"] else "unavailable" for m in names]
        rows.append([p["name"], p["kind"], "mean", ""] + cells)
    return rows


def curves_figure(results: dict[str, Any]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results["metrics"])
    cols = 4
    rows = math.ceil((len(names) + 1) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    axes = axes.ravel()
    steps = results["steps"]
    d = results["data"]
    handles, labels = [], []
    for ax, m in zip(axes, names):
        info = results["metrics"][m]
        ax.set_title(f"{m} ({info['better']} is better)", fontsize=10)
        ax.set_xlabel("frames ahead" + (f" (1 frame = {1 / d['fps']:.3g} s)" if d.get("fps") else ""))
        ax.set_ylabel(f"{m}" + (f" [{info['unit']}]" if info["unit"] else ""), fontsize=8)
        any_line = False
        not_drawn = []
        for p in results["predictors"]:
            r = p["metrics"][m]
            if not r["available"]:
                continue
            y = np.array(r["per_step"], dtype=float)
            if not np.isfinite(y).all():  # inf (a perfect PSNR) cannot be drawn
                not_drawn += [f"{p['name']} t+{k + 1}" for k in np.flatnonzero(~np.isfinite(y))]
                y[~np.isfinite(y)] = np.nan
            (line,) = ax.plot(steps, y, marker="o", markersize=3, label=p["name"])
            any_line = True
            if p["name"] not in labels:
                handles.append(line)
                labels.append(p["name"])
        if not any_line:
            reason = next(p["metrics"][m]["reason"] for p in results["predictors"])
            ax.text(0.5, 0.5, "unavailable:\n" + _wrap(reason, 40), ha="center", va="center", fontsize=8,
                    transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            ax.set_xticks(steps if len(steps) <= 12 else steps[:: math.ceil(len(steps) / 12)])
            ax.grid(alpha=0.3)
            if not_drawn:
                ax.text(0.02, 0.02, _wrap("inf, not drawn: " + ", ".join(not_drawn), 50), fontsize=7,
                        transform=ax.transAxes, va="bottom")
    for ax in axes[len(names):]:
        ax.axis("off")
    if handles:
        axes[len(names)].legend(handles, labels, loc="center", title="predictor", fontsize=9)
    fig.suptitle(f"{d['clips']} {d['split']} clips of {d['class'].rsplit('.', 1)[-1]}, "
                 f"{d['channels']}x{d['size'][0]}x{d['size'][1]}, {d['context_frames']} context frames")
    fig.tight_layout()
    return fig


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def write_results(results: dict[str, Any], out: str | Path) -> list[Path]:
    """``results.md``, ``results.csv``, ``results.json`` and ``curves.png`` in ``out``; returns the paths."""
    from framecast.plots import save

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "results.md"
    md.write_text(markdown(results))
    csv_path = out / "results.csv"
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerows(csv_rows(results))
    js = out / "results.json"
    js.write_text(json.dumps(_json_safe(results), indent=2, allow_nan=False) + "\n")
    png = save(curves_figure(results), out / "curves.png")
    return [md, csv_path, js, png]


def summary_table(results: dict[str, Any]) -> str:
    """The averaged table of ``results.md`` (printed at the end of a run)."""
    text = markdown(results)
    start = text.index("## Averaged")
    return text[start: text.index("## Per horizon step")].strip()


# --- the whole run ------------------------------------------------------------------------------------


def run(entries: list[Entry], dm, out: str | Path, clips: int | None = None, fit_clips: int | None = None,
        split: str = "test", seed: int = 0, device: str | torch.device = "cpu", lpips: bool = True,
        command: str = "", progress: bool = True,
        procs: Processes | None = None) -> tuple[dict[str, Any], list[Path]]:
    """Benchmark ``entries`` on ``dm``, write the tables and the plot to ``out``: ``(results, paths)``.

    ``procs``: this process's place among several (:func:`framecast.processes.start`); its device
    replaces ``device``, and only the first process writes (the others return no paths)."""
    procs = procs or Processes(device=torch.device(device))
    device = procs.device
    if split not in ("val", "test"):
        raise BenchmarkError(f"--split must be val or test, got {split!r}")
    dm = shrink(shrink(dm, split, clips), "val", fit_clips)
    check_compatible(entries, dm)  # before any decoding; again after setup, which may learn the frame size
    try:
        dm.setup("validate")
        dm.setup("test")
    except (FileNotFoundError, ValueError) as e:
        raise BenchmarkError(f"cannot load the data: {e}") from e
    check_compatible(entries, dm)
    for e in entries:
        e.model.to(device)
    torch.manual_seed(seed)
    n_fit = fit_laplace(entries, dm, fit_clips, procs, progress)
    torch.manual_seed(seed)
    accs, n = evaluate(entries, dm, split, clips, procs, LPIPS(device, enabled=lpips), progress)
    data = describe_data(dm, split, n, n_fit or None)
    results = results_dict(entries, accs, data, seed, device, command)
    if procs.world > 1:
        results["processes"] = procs.world
    return results, write_results(results, out) if procs.is_main else []


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by ``benchmark`` and ``benchmark-losses``."""
    parser.add_argument("--baselines", default=DEFAULT_BASELINES,
                        help=f"comma-separated baselines to add (default {DEFAULT_BASELINES}; 'none' for none)")
    parser.add_argument("--out", required=True, help="folder for results.md/.csv/.json and curves.png")
    parser.add_argument("--clips", type=int, default=None, help="evaluate at most this many clips (default all)")
    parser.add_argument("--fit-clips", type=int, default=None,
                        help="fit the Laplace scales on at most this many validation clips (default all)")
    parser.add_argument("--batch-size", type=int, default=None, help="clips per batch (default: the data's)")
    parser.add_argument("--split", default="test", choices=("test", "val"), help="split to evaluate (default test)")
    parser.add_argument("--seed", type=int, default=0, help="torch seed set before each pass (default 0)")
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda where available)")
    parser.add_argument("--lpips", default="auto", choices=("auto", "off"),
                        help="auto: LPIPS where its weights are on this machine (never downloaded); off: skip it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def baseline_names(text: str) -> list[str]:
    if text.strip().lower() in ("", "none"):
        return []
    return [b.strip() for b in text.split(",") if b.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="framecast benchmark",
        description="Every metric (mse_frame, mae_frame, mse, psnr, ssim, bits_per_pixel, lpips) per horizon "
                    "step for checkpoints and baselines on the same test clips; writes results.md, results.csv, "
                    "results.json and curves.png.",
        epilog="Data options: --data.KEY VALUE (or --data.init_args.KEY VALUE) overrides an option of the data "
               "module, e.g. --data.test_size 64 or --data.fps 10.",
    )
    p.add_argument("--ckpt", nargs="+", action="extend", default=[], metavar="CKPT",
                   help="checkpoints to benchmark (PATH or NAME=PATH); several allowed")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", help="a framecast fit YAML config whose data: section gives the data")
    src.add_argument("--video", help="a video file, folder or glob, clipped like the first checkpoint's training data")
    add_common_arguments(p)
    several = p.add_argument_group("several processes (as for framecast fit; each process evaluates every N-th clip)")
    several.add_argument("--trainer.strategy", dest="strategy", help="e.g. ddp")
    several.add_argument("--trainer.devices", dest="devices", help="processes per machine (one per GPU), e.g. 2")
    several.add_argument("--trainer.accelerator", dest="accelerator", help="cpu, gpu or auto (default auto)")
    several.add_argument("--trainer.num_nodes", dest="num_nodes", type=int, help="machines (default 1)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        overrides, rest = split_data_overrides(argv)
        args = parser().parse_args(rest)
        if args.batch_size is not None:
            overrides["batch_size"] = args.batch_size
        procs = processes(args)
        device = procs.device
        entries = load_predictors(parse_checkpoints(args.ckpt), baseline_names(args.baselines), device)
        dm = build_datamodule(args.config, args.video, entries, overrides)
        results, paths = run(entries, dm, args.out, clips=args.clips, fit_clips=args.fit_clips, split=args.split,
                             seed=args.seed, lpips=args.lpips == "auto", command="framecast benchmark " + " ".join(argv),
                             progress=not args.no_progress, procs=procs)
    except BenchmarkError as e:
        print(f"framecast benchmark: error: {e}", file=sys.stderr)
        return 2
    if procs.is_main:
        print_written(results, paths)
    return 0


def processes(args: argparse.Namespace) -> Processes:
    """One process on ``--device``, or those that the ``--trainer.*`` options ask for."""
    flags = [flag for flag, dest in TRAINER_FLAGS.items() if getattr(args, dest) is not None]
    if not flags:
        return Processes(device=torch.device(args.device or default_device()))
    if args.device:
        raise BenchmarkError(f"--device cannot be combined with {', '.join(flags)}: use --trainer.accelerator "
                             "(cpu or gpu) and --trainer.devices")
    try:
        return start(args.strategy, args.devices, args.accelerator, args.num_nodes)
    except ValueError as e:
        raise BenchmarkError(str(e)) from e


def print_written(results: dict[str, Any], paths: list[Path]) -> None:
    """The averaged table, then every file written."""
    print(summary_table(results))
    for p in paths:
        print(f"wrote {p}")


if __name__ == "__main__":
    sys.exit(main())
