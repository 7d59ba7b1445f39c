"""The files of ``framecast codelength``: ``codelength.json``, ``codelength.md``, ``codelength.png``.

``codelength.json``: ``method``, ``definition`` (what is coded and how), ``command``, ``stream`` (the data,
its description, the clips, the frame shape, block sizes and ends), ``recipe`` (the training rule), ``unit``,
``uniform`` (the 8-bit code of the same clips), ``ranking`` (names by total bits, fewest first) and
``predictors``: per name its ``kind``, ``codelength``, ``blocks`` (per block: ``block, start, end, clips,
frames, pixels, bits, bits_per_pixel, first_frame_bits, train_clips, val_clips, train_steps,
train_seconds, code_seconds, codelength, scales, checkpoint``) and ``total``. Pixels are sub-pixels (``C``
values per pixel of a frame), as ``bits_per_pixel`` everywhere in framecast. ``codelength.md``: the totals
table (ranked) and bits per pixel of each block. ``codelength.png``: bits per pixel of each new block
against the clips transmitted before it, one line per predictor and baseline (blocks 1 on; block 0 costs
8 for all), and the cumulative total against the clips transmitted, with the uniform code's.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from framecast.prequential.coding import UNIFORM_BITS, totals

FILES = ("codelength.json", "codelength.md", "codelength.png")


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (a kill never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def json_safe(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else str(x)
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


def ranking(predictors: dict[str, dict]) -> list[str]:
    return sorted(predictors, key=lambda n: (predictors[n]["total"]["bits"], n))


def results(stream: dict, recipe: dict, predictors: dict[str, dict], definition: str, command: Sequence[str]) -> dict:
    """The content of ``codelength.json`` (``predictors``: name -> ``{kind, codelength, blocks}``)."""
    preds = {}
    for name, p in predictors.items():
        preds[name] = {**p, "total": totals(p["blocks"])}
    pixels = sum(b["pixels"] for b in next(iter(preds.values()))["blocks"]) if preds else 0
    return {
        "method": "prequential (online) code: block 0 uniform, block k coded by a model trained on blocks 0..k-1",
        "definition": definition,
        "command": list(command),
        "stream": stream,
        "recipe": recipe,
        "unit": "bits; pixels are sub-pixels (C values per pixel of a frame); bits_per_pixel = bits / pixels",
        "uniform": {"bits": UNIFORM_BITS * pixels, "bits_per_pixel": UNIFORM_BITS, "pixels": pixels},
        "ranking": ranking(preds),
        "predictors": preds,
    }


def _num(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}f}" if isinstance(x, float) and math.isfinite(x) else str(x)


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def totals_table(res: dict) -> str:
    """The ranked totals table (markdown)."""
    uniform = res["uniform"]["bits"]
    lines = ["| rank | predictor | kind | total bits | bits per pixel | % of uniform | train steps | train time |",
             "|---:|---|---|---:|---:|---:|---:|---:|"]
    for i, name in enumerate(res["ranking"], 1):
        p = res["predictors"][name]
        t = p["total"]
        share = 100 * t["bits"] / uniform if uniform else float("nan")
        lines.append(f"| {i} | {name} | {p['kind']} | {t['bits']:,.0f} | {_num(t['bits_per_pixel'])} | "
                     f"{share:.2f} | {t['train_steps']} | {_duration(t['train_seconds'])} |")
    lines.append(f"| | uniform (8 bits) | reference | {uniform:,.0f} | {_num(UNIFORM_BITS)} | 100.00 | 0 | 0 s |")
    return "\n".join(lines)


def blocks_table(res: dict) -> str:
    names = res["ranking"]
    first = res["predictors"][names[0]]["blocks"] if names else []
    head = "| block | clips | clips seen | " + " | ".join(names) + " |"
    lines = [head, "|" + "---:|" * (3 + len(names))]
    for k, b in enumerate(first):
        row = [str(b["block"]), str(b["clips"]), str(b["start"])]
        row += [_num(res["predictors"][n]["blocks"][k]["bits_per_pixel"]) for n in names]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def markdown(res: dict) -> str:
    s, r = res["stream"], res["recipe"]
    done = min((len(p["blocks"]) for p in res["predictors"].values()), default=0)
    status = "" if done == len(s["blocks"]) else f"\n\n**Partial: {done} of {len(s['blocks'])} blocks done.**"
    notes = "\n".join(f"* {name}: {p['codelength']}" for name, p in res["predictors"].items())
    return (
        f"# Prequential codelength\n\n"
        f"Stream: {s['clips']} clips of {s['frames_per_clip']} frames of {s['frame'][0]}x{s['frame'][1]}x"
        f"{s['frame'][2]} ({s['data']}): {s['description']}. Blocks {s['blocks']} (ends {s['ends']}).{status}\n\n"
        f"{res['definition']}\n\n"
        f"Training of block k's model: {r['rule']}\n\n"
        f"## Totals (fewest bits first)\n\n{totals_table(res)}\n\n"
        f"## Bits per pixel of each block\n\n{blocks_table(res)}\n\n"
        f"## How each predictor codes\n\n{notes}\n\n"
        f"Pixels are sub-pixels (C values per pixel of a frame). Command: `{' '.join(res['command'])}`\n"
    )


def figure(res: dict):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from framecast.viz.style import BASELINE_COLOR, CURVE_PALETTE

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    models = [n for n in res["ranking"] if res["predictors"][n]["kind"] == "model"]
    for name in res["ranking"]:
        p = res["predictors"][name]
        baseline = p["kind"] == "baseline"
        color = BASELINE_COLOR if baseline else CURVE_PALETTE[models.index(name) % len(CURVE_PALETTE)]
        style = {"color": color, "marker": "o", "ls": "--" if baseline else "-", "label": name, "ms": 4}
        if baseline and name != "copy_last":
            style.update(marker="s", ls=":")
        blocks = p["blocks"]
        later = blocks[1:]  # block 0 is 8 bits per pixel for everyone (the uniform code)
        a.plot([x["start"] for x in later], [x["bits_per_pixel"] for x in later], **style)
        cumulative, total = [], 0.0
        for x in blocks:
            total += x["bits"]
            cumulative.append(total)
        b.plot([x["end"] for x in blocks], cumulative, **style)
    ends = res["stream"]["ends"]
    per_clip = res["stream"]["frames_per_clip"] * math.prod(res["stream"]["frame"])
    b.plot([0] + ends, [0] + [UNIFORM_BITS * per_clip * e for e in ends], color="black", lw=0.8, ls=":",
           label="uniform (8 bits)")
    a.set(xlabel="clips transmitted before the block", ylabel="bits per pixel of the block",
          title="bits per pixel of each new block (block 0: 8, uniform)")
    b.set(xlabel="clips transmitted", ylabel="cumulative codelength (bits)", title="cumulative total")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def write(res: dict, out: Path) -> list[Path]:
    """The three files in ``out``; returns their paths."""
    from framecast.viz.figures import save

    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f for f in FILES]
    write_atomic(paths[0], json.dumps(json_safe(res), indent=2) + "\n")
    write_atomic(paths[1], markdown(res))
    tmp = out / f".codelength.{os.getpid()}.png"
    save(figure(res), tmp)
    os.replace(tmp, paths[2])
    return paths


def print_ranking(res: dict) -> None:
    print("\nranking by total codelength (fewest bits first):")
    for i, name in enumerate(res["ranking"], 1):
        t = res["predictors"][name]["total"]
        print(f"  {i}. {name:<16} {t['bits']:>16,.0f} bits  {t['bits_per_pixel']:.4f} bits per pixel")
    print(f"     {'uniform':<16} {res['uniform']['bits']:>16,.0f} bits  {UNIFORM_BITS:.4f} bits per pixel")
