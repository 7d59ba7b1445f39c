"""Several seeds of one candidate: the mean and spread over the seeds, and which differences are ties.

A candidate trained with several seeds is given to ``framecast benchmark`` as the same ``NAME=`` on several
checkpoints (``--ckpt_path mse=seed0.ckpt mse=seed1.ckpt ...``; ``framecast benchmark-losses --seeds`` does
that). Every checkpoint is scored on the same clips like any other (its member name is ``NAME #k``, k = 1, 2,
... in the order given), then:

* :func:`seed_groups`: the checkpoints with their member names, and ``{NAME: [member names]}``;
* :func:`aggregate`: per candidate (a group, or a checkpoint or baseline alone) and metric, the mean over its
  members of their clip-and-step averages, the sample standard deviation over them (n - 1 in the
  denominator; ``None`` for a single member), and the same per horizon step;
* :func:`ties`: per metric, the best mean and every candidate within the spread of it:
  ``|mean - best| < max(std, std of the best)`` (or equal means), a candidate with one member (a deterministic baseline, a
  single checkpoint) having spread 0. With one member everywhere only the best is marked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

TIE_RULE = ("In bold: the best mean, and every mean whose difference from it is smaller than the spread, "
            "|mean - best| < max(std, std of the best) (or equal means); std is the sample standard deviation over the seeds "
            "(n - 1 in the denominator), 0 for a single run or a deterministic baseline")


def seed_groups(checkpoints: Sequence[tuple[str | None, Path]]
                ) -> tuple[list[tuple[str | None, Path]], dict[str, list[str]]]:
    """``(checkpoints, groups)``: a ``NAME`` given to several checkpoints is one candidate with one member per
    checkpoint, named ``NAME #k``; ``groups[NAME]`` lists them. Other checkpoints are unchanged."""
    names = [n for n, _ in checkpoints]
    groups: dict[str, list[str]] = {}
    out = []
    for name, path in checkpoints:
        if name is not None and names.count(name) > 1:
            members = groups.setdefault(name, [])
            members.append(f"{name} #{len(members) + 1}")
            name = members[-1]
        out.append((name, path))
    return out, groups


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """The mean and the sample standard deviation (n - 1; ``None`` for one value). A non-finite value makes
    the mean non-finite and the spread ``nan``."""
    n = len(values)
    mean = math.fsum(values) / n
    if n == 1:
        return mean, None
    if not all(math.isfinite(v) for v in values):
        return mean, math.nan
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def aggregate(results: Mapping[str, Any], groups: Mapping[str, Sequence[str]]) -> list[dict[str, Any]]:
    """Per candidate, in the order of its first member in ``results["predictors"]``: ``{name, kind, members,
    seeds (the number of members), metrics}``, with per metric ``{"available": true, "mean", "std",
    "per_step", "per_step_std"}`` (``std`` None for one member) or ``{"available": false, "reason"}`` where a
    member has no value."""
    member_of = {m: g for g, members in groups.items() for m in members}
    by_name = {p["name"]: p for p in results["predictors"]}
    order: list[str] = []
    for p in results["predictors"]:
        g = member_of.get(p["name"], p["name"])
        if g not in order:
            order.append(g)
    out = []
    for g in order:
        members = [by_name[m] for m in groups.get(g, [g])]
        metrics: dict[str, Any] = {}
        for m in results["metrics"]:
            rs = [p["metrics"][m] for p in members]
            missing = next((r for r in rs if not r["available"]), None)
            if missing is not None:
                metrics[m] = {"available": False, "reason": missing["reason"]}
                continue
            mean, std = mean_std([float(r["mean"]) for r in rs])
            steps = [mean_std([float(r["per_step"][k]) for r in rs]) for k in range(len(rs[0]["per_step"]))]
            metrics[m] = {"available": True, "mean": mean, "std": std, "per_step": [a for a, _ in steps],
                          "per_step_std": [b for _, b in steps]}
        out.append({"name": g, "kind": members[0]["kind"], "members": [p["name"] for p in members],
                    "seeds": len(members), "metrics": metrics})
    return out


def ties(candidates: Sequence[Mapping[str, Any]], metric: str, better: str, step: int | None = None) -> set[str]:
    """The names marked for ``metric`` (``step``: that horizon step's values, else the means): the best mean
    and every one whose difference from it is smaller than ``max(std, std of the best)`` (spread 0 where
    there is none), or is none. Empty where no candidate has a finite value."""
    def value(c) -> tuple[float, float]:
        r = c["metrics"][metric]
        mean = r["mean"] if step is None else r["per_step"][step]
        std = r["std"] if step is None else r["per_step_std"][step]
        return float(mean), 0.0 if std is None or not math.isfinite(std) else float(std)

    scored = {c["name"]: value(c) for c in candidates if c["metrics"][metric]["available"]}
    scored = {n: v for n, v in scored.items() if math.isfinite(v[0])}
    if not scored:
        return set()
    pick = min if better == "lower" else max
    best = pick(scored, key=lambda n: scored[n][0])
    b_mean, b_std = scored[best]
    return {n for n, (mean, std) in scored.items() if mean == b_mean or abs(mean - b_mean) < max(std, b_std)}


# --- texts ------------------------------------------------------------------------------------------------


def pm(mean: float, std: float | None) -> str:
    """``mean ± std`` with the spread to 2 significant digits and the mean to the same decimal place (the
    registry's 5 significant digits where there is no spread)."""
    from framecast.evaluation.report import fmt

    if std is None:
        return fmt(mean)
    if not math.isfinite(mean) or not math.isfinite(std) or std == 0:
        return f"{fmt(mean)} ± {fmt(std)}"
    decimals = max(0, 1 - math.floor(math.log10(std)))
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def _cell(r: Mapping[str, Any], marked: bool, step: int | None = None) -> str:
    if not r["available"]:
        return "unavailable"
    text = pm(r["mean"], r["std"]) if step is None else pm(r["per_step"][step], r["per_step_std"][step])
    return f"**{text}**" if marked else text


def markdown(results: Mapping[str, Any]) -> list[str]:
    """The lines of ``results.md``'s table over seeds (averaged over the steps), its footer with the tie rule."""
    cands, metrics = results["seeds"], results["metrics"]
    arrow = {m: "↓" if info["better"] == "lower" else "↑" for m, info in metrics.items()}
    marked = {m: ties(cands, m, info["better"]) for m, info in metrics.items()}
    lines = [f"## Mean ± standard deviation over seeds, averaged over the {results['horizon']} predicted frames", "",
             "| predictor | seeds | " + " | ".join(f"{m} {arrow[m]}" for m in metrics) + " |",
             "|---|---:|" + "---:|" * len(metrics)]
    for c in cands:
        lines.append(f"| {c['name']} | {c['seeds']} | "
                     + " | ".join(_cell(c["metrics"][m], c["name"] in marked[m]) for m in metrics) + " |")
    lines += ["", (f"Per seed, a checkpoint's average over every clip and step (the table below); over the seeds, "
                   f"their mean ± sample standard deviation. {TIE_RULE}."), ""]
    return lines


def per_step_markdown(results: Mapping[str, Any]) -> list[str]:
    """The lines of ``results.md``'s per-step tables over seeds, ties marked per step."""
    cands, steps = results["seeds"], results["steps"]
    lines = ["## Per horizon step, mean ± standard deviation over seeds", ""]
    for m, info in results["metrics"].items():
        marked = [ties(cands, m, info["better"], step=k) for k in range(len(steps))]
        lines += [f"### {m} ({info['better']} is better)", "",
                  "| predictor | " + " | ".join(f"t+{k}" for k in steps) + " |", "|---|" + "---:|" * len(steps)]
        for c in cands:
            r = c["metrics"][m]
            lines.append(f"| {c['name']} | " + " | ".join(_cell(r, c["name"] in marked[k], k)
                                                        for k in range(len(steps))) + " |")
        lines.append("")
    return lines


def notes(results: Mapping[str, Any]) -> list[str]:
    """Which checkpoints are the seeds of each candidate."""
    path = {p["name"]: p.get("checkpoint") for p in results["predictors"]}
    return [f"- `{c['name']}`: the mean over {c['seeds']} seeds, " + ", ".join(f"{m} ({path[m]})" for m in c["members"])
            for c in results["seeds"] if c["seeds"] > 1]


def csv_rows(results: Mapping[str, Any]) -> list[list[str]]:
    """``seeds.csv``: per candidate a row per step and one with step ``mean``; columns ``predictor, kind, seeds,
    step, seconds_ahead``, then per metric its mean and ``<metric>_std`` (empty for one seed)."""
    from framecast.evaluation.report import exact

    names = list(results["metrics"])
    rows = [["predictor", "kind", "seeds", "step", "seconds_ahead"] + [x for m in names for x in (m, f"{m}_std")]]
    secs = results.get("seconds_ahead")

    def cells(c, k: int | None) -> list[str]:
        out = []
        for m in names:
            r = c["metrics"][m]
            if not r["available"]:
                out += ["unavailable", "unavailable"]
                continue
            mean, std = (r["mean"], r["std"]) if k is None else (r["per_step"][k], r["per_step_std"][k])
            out += [exact(mean), "" if std is None else exact(std)]
        return out

    for c in results["seeds"]:
        for k in range(results["horizon"]):
            rows.append([c["name"], c["kind"], str(c["seeds"]), str(k + 1), exact(secs[k]) if secs else ""]
                        + cells(c, k))
        rows.append([c["name"], c["kind"], str(c["seeds"]), "mean", ""] + cells(c, None))
    return rows


def curves_figure(results: Mapping[str, Any]):
    """The curves of :func:`framecast.viz.figures.curves_figure`, one line per candidate (its mean over the seeds
    per step) with a band of ± one standard deviation where it has several seeds."""
    import numpy as np

    from framecast.viz.figures import curves_figure as figure
    from framecast.viz.figures import curves_from_results

    means = {**results, "predictors": [{"name": c["name"], "kind": c["kind"], "metrics": c["metrics"]}
                                       for c in results["seeds"]]}
    kwargs = curves_from_results(means)
    kwargs["title"] += " (band: ± 1 std over seeds)"
    fig = figure(**kwargs)
    spread = {c["name"]: c["metrics"] for c in results["seeds"]}
    for ax, (metric, lines) in zip(fig.axes, kwargs["curves"].items()):
        for line, (who, (x, y)) in zip(ax.get_lines(), lines.items()):
            std = spread[who][metric]["per_step_std"]
            if any(v is not None for v in std):
                y, std = np.asarray(y, dtype=float), np.array([np.nan if v is None else v for v in std], dtype=float)
                ax.fill_between(x, y - std, y + std, color=line.get_color(), alpha=0.2, lw=0)
    return fig
