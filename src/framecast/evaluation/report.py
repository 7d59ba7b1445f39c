"""What ``framecast benchmark`` writes: the results as plain data, and the files made from them.

* :func:`results_dict`: everything a benchmark found (what ``results.json`` holds, before encoding), built
  from the candidates (:class:`framecast.evaluation.Candidate`), their accumulators
  (:func:`framecast.evaluation.evaluate`) and :func:`describe_data`; its ``metrics`` section is the
  registry's (:meth:`framecast.metrics.Metric.describe`) for the metrics reported;
* :func:`markdown`, :func:`csv_rows`, :func:`json_safe`: the three tables' texts;
* :func:`write_results`: ``results.md``, ``results.csv``, ``results.json`` and ``curves.png`` (the one
  :func:`framecast.viz.figures.curves_figure`) in a folder; :func:`print_written` the summary and the paths.

Layout. ``results.csv``: one row per predictor and horizon step, then a row with ``step`` = ``mean`` (the
average over the steps, which is the average over every clip and step); columns ``predictor, kind, step,
seconds_ahead`` (empty without an fps) and one per metric; numbers at full precision, ``inf`` spelled out,
``unavailable`` where a metric cannot be computed here. ``results.json``: ``benchmark``, ``command``,
``created``, ``versions`` (framecast, torch, torchmetrics, python), ``seed``, ``device``, ``data`` (class,
options, description (the data module's own, where it has one), channels, size, context_frames,
horizon_frames, fps, split, clips, fit_split, fit_clips), ``horizon``, ``steps``, ``seconds_ahead``,
``metrics`` (per metric: better, unit, definition, needs, tables), ``processes`` (only where there were
several) and ``predictors``: a list of ``{name, kind, checkpoint, model, codelength, laplace_scales,
metrics}`` with, per metric, either ``{"available": true, "mean": x, "per_step": [...]}`` or
``{"available": false, "reason": "..."}``; non-finite numbers are the strings ``"inf"`` / ``"nan"`` (strict
JSON has none), which ``float()`` reads. ``results.md``: the averaged table, one per-step table per metric,
and notes (unavailable metrics with their reasons, how each predictor's codelength was obtained).

Seeds of one candidate (one ``NAME`` on several checkpoints, :mod:`framecast.evaluation.seeds`): ``results.json``
also holds ``seeds`` (per candidate ``{name, kind, members, seeds, metrics}`` with per metric ``mean``, ``std``,
``per_step``, ``per_step_std``), ``results.md`` starts with the table of mean ± standard deviation with ties
in bold (and has one per step), ``seeds.csv`` holds those numbers, and ``curves.png`` draws each candidate's
mean over its seeds with a band of ± one standard deviation.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from framecast.metrics import METRICS, PSNR_MAX_DB, MetricAccumulator

CSV_FIXED = ["predictor", "kind", "step", "seconds_ahead"]


# --- the results as plain data -------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import torch

    import framecast

    out = {"framecast": framecast.__version__, "torch": torch.__version__, "python": platform.python_version()}
    try:
        import torchmetrics

        out["torchmetrics"] = torchmetrics.__version__
    except ImportError:  # pragma: no cover
        pass
    return out


def describe_candidate(c) -> dict[str, Any]:
    """``{name, kind, codelength, checkpoint?, model, laplace_scales}`` of a candidate."""
    out: dict[str, Any] = {"name": c.name, "kind": c.kind, "codelength": c.codelength}
    if c.checkpoint:
        out["checkpoint"] = c.checkpoint
        out["model"] = {k: v for k, v in c.hparams.items() if not k.startswith("_")}
    else:
        out["model"] = {"model": c.name}
    out["laplace_scales"] = None if c.scales is None else [float(s) for s in c.scales]
    return out


def describe_data(dm, split: str, clips: int, fit_split: str | None = None, fit_clips: int | None = None
                  ) -> dict[str, Any]:
    """The data of a benchmark: its class and options, frames, clip lengths, and the clips used."""
    options = {k: v for k, v in dict(getattr(dm, "hparams", {})).items() if not k.startswith("_")}
    describe = getattr(dm, "describe", None)  # what the data is, where the module says (digits, protocol)
    return {
        "class": f"{type(dm).__module__}.{type(dm).__name__}",
        "options": options,
        "description": dict(describe()) if callable(describe) else None,
        "channels": int(dm.channels),
        "size": [int(s) for s in dm.size],
        "context_frames": int(dm.context_frames),
        "horizon_frames": int(dm.horizon_frames),
        "fps": getattr(dm, "fps", None),
        "split": split,
        "clips": clips,
        "fit_split": fit_split if fit_clips else None,
        "fit_clips": fit_clips or None,
    }


def metric_results(acc: MetricAccumulator, metrics: Sequence[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for m in metrics:
        if m in acc.unavailable:
            out[m] = {"available": False, "reason": acc.unavailable[m]}
        elif m not in acc.names():
            out[m] = {"available": False, "reason": "not scored"}
        else:
            out[m] = {"available": True, "mean": acc.mean(m), "per_step": [float(v) for v in acc.per_step(m)]}
    return out


def results_dict(candidates: Sequence, accs: Mapping[str, MetricAccumulator], data: dict[str, Any],
                 metrics: Sequence[str], seed: int, device, command: str, processes: int = 1,
                 groups: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """Everything a benchmark found, as plain data (what ``results.json`` holds, before encoding); with
    ``groups`` (seeds of one candidate, :mod:`framecast.evaluation.seeds`) also ``seeds``: the aggregate."""
    from framecast.evaluation.seeds import aggregate

    horizon = data["horizon_frames"]
    fps = data.get("fps")
    results = {
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
        "metrics": {m: METRICS[m].describe() for m in metrics},
        "predictors": [{**describe_candidate(c), "metrics": metric_results(accs[c.name], metrics)}
                       for c in candidates],
    }
    if processes > 1:
        results["processes"] = processes
    if groups:
        results["seeds"] = aggregate(results, groups)
    return results


# --- texts ------------------------------------------------------------------------------------------------


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


def json_safe(obj):
    """Non-finite floats as the strings ``"inf"``, ``"-inf"``, ``"nan"`` (strict JSON has no such numbers)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return exact(obj)
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _cell(r: dict[str, Any], key: str = "mean", k: int | None = None) -> str:
    if not r["available"]:
        return "unavailable"
    return fmt(r["per_step"][k] if k is not None else r[key])


def _header(results: dict[str, Any]) -> list[str]:
    d, horizon, v = results["data"], results["horizon"], results["versions"]
    fps = f", {d['fps']:g} fps" if d.get("fps") else ""
    fit = ""
    if d.get("fit_clips"):
        fit = f"; Laplace scales fitted on {d['fit_clips']} clips of the {d.get('fit_split') or 'val'} split"
        fit = f"; Laplace scales fitted on {d['fit_clips']} clips, {d['fit_part']}" if d.get("fit_part") else fit
    procs = f"; {results['processes']} processes" if results.get("processes") else ""
    return [
        "# framecast benchmark",
        "",
        f"- Data: `{d['class']}` {json.dumps(d['options'], default=str)}",
        *([f"- About the data: {'; '.join(f'{k}: {v}' for k, v in d['description'].items())}"]
          if d.get("description") else []),
        (f"- Frames: {d['channels']} channel(s), {d['size'][0]}x{d['size'][1]}{fps}; "
         f"{d['context_frames']} context frames, {horizon} predicted"),
        f"- Clips: {d['clips']} of the {d['split']} split{fit}",
        (f"- Seed {results['seed']}; framecast {v['framecast']}, torch {v['torch']}; device {results['device']}"
         f"{procs}; {results['created']}"),
        f"- Command: `{results['command']}`",
        "",
    ]


def markdown(results: dict[str, Any]) -> str:
    from framecast.evaluation import seeds

    names = list(results["metrics"])
    arrow = {m: ("↓" if info["better"] == "lower" else "↑") for m, info in results["metrics"].items()}
    horizon = results["horizon"]
    lines = _header(results) + (seeds.markdown(results) if results.get("seeds") else []) + [
        f"## Averaged over the {horizon} predicted frames",
        "",
        "| predictor | " + " | ".join(f"{m} {arrow[m]}" for m in names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for p in results["predictors"]:
        lines.append(f"| {p['name']} | " + " | ".join(_cell(p["metrics"][m]) for m in names) + " |")
    lines += ["", "## Per horizon step", ""]
    steps = [f"t+{k}" for k in results["steps"]]
    for m in names:
        info = results["metrics"][m]
        lines += [f"### {m} ({info['better']} is better)", "", f"{info['definition']}.", ""]
        lines.append("| predictor | " + " | ".join(steps) + " | mean |")
        lines.append("|---|" + "---:|" * (len(steps) + 1))
        for p in results["predictors"]:
            r = p["metrics"][m]
            cells = [_cell(r, k=k) for k in range(len(steps))] + [_cell(r)]
            lines.append(f"| {p['name']} | " + " | ".join(cells) + " |")
        lines.append("")
    if results.get("seeds"):
        lines += seeds.per_step_markdown(results)
    lines += ["## Notes", ""] + (seeds.notes(results) if results.get("seeds") else [])
    reasons: dict[tuple[str, str], list[str]] = {}
    for p in results["predictors"]:
        for m, r in p["metrics"].items():
            if not r["available"]:
                reasons.setdefault((m, r["reason"]), []).append(p["name"])
    for (m, reason), who in reasons.items():
        lines.append(f"- `{m}` is unavailable ({', '.join(who)}): {reason}")
    if "bits_per_pixel" in names:
        for p in results["predictors"]:
            how = p["codelength"]
            if p["laplace_scales"]:
                how += ", scales per step " + ", ".join(f"{s:.4g}" for s in p["laplace_scales"])
            lines.append(f"- `{p['name']}`" + (f" ({p['checkpoint']})" if p.get("checkpoint") else "")
                         + f": bits_per_pixel from {how}")
    if "psnr" in names:
        lines.append(f"- PSNR of a perfectly predicted frame is {PSNR_MAX_DB:g} dB (its mse is floored at "
                     f"1e-10), so every PSNR is finite.")
    return "\n".join(lines) + "\n"


def csv_rows(results: dict[str, Any]) -> list[list[str]]:
    names = list(results["metrics"])
    rows = [CSV_FIXED + names]
    secs = results.get("seconds_ahead")

    def cell(r: dict[str, Any], k: int | None = None) -> str:
        if not r["available"]:
            return "unavailable"
        return exact(r["per_step"][k] if k is not None else r["mean"])

    for p in results["predictors"]:
        for k in range(results["horizon"]):
            cells = [cell(p["metrics"][m], k) for m in names]
            rows.append([p["name"], p["kind"], str(k + 1), exact(secs[k]) if secs else ""] + cells)
        rows.append([p["name"], p["kind"], "mean", ""] + [cell(p["metrics"][m]) for m in names])
    return rows


def summary_table(results: dict[str, Any]) -> str:
    """The averaged tables of ``results.md`` (over seeds where there are several, then every predictor),
    printed at the end of a run."""
    text = markdown(results)
    start = text.index("## Mean ± standard deviation" if results.get("seeds") else "## Averaged")
    return text[start: text.index("## Per horizon step")].strip()


# --- files ----------------------------------------------------------------------------------------------


def write_results(results: dict[str, Any], out: str | Path) -> list[Path]:
    """``results.md``, ``results.csv``, ``results.json`` and ``curves.png`` in ``out`` (with seeds of one
    candidate also ``seeds.csv``, and the curves are the means over the seeds, ± one std); returns the paths."""
    from framecast.evaluation import seeds
    from framecast.viz.figures import curves_figure, curves_from_results, save

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "results.md"
    md.write_text(markdown(results))
    csv_path = out / "results.csv"
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerows(csv_rows(results))
    paths = [md, csv_path]
    if results.get("seeds"):
        paths.append(out / "seeds.csv")
        with paths[-1].open("w", newline="") as f:
            csv.writer(f).writerows(seeds.csv_rows(results))
    js = out / "results.json"
    js.write_text(json.dumps(json_safe(results), indent=2, allow_nan=False) + "\n")
    fig = seeds.curves_figure(results) if results.get("seeds") else curves_figure(**curves_from_results(results))
    png = save(fig, out / "curves.png")
    return [*paths, js, png]


def print_written(results: dict[str, Any], paths: Sequence[Path]) -> None:
    """The averaged table, then every file written."""
    print(summary_table(results))
    for p in paths:
        print(f"wrote {p}")
