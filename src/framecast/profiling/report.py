"""What ``framecast speed`` reports: the machine, one phase's numbers, and the table on stderr.

:func:`machine` describes where it ran (CPU model name, torch's CPU capability, i.e. the vector
instructions oneDNN uses, AVX-512 with its bfloat16 instructions included; GPU, versions, load average) and
:func:`finish_machine` adds what is known only at the end (load average, the process's peak RSS);
:func:`phase_result` turns a candidate's times into a phase of the JSON (``train``, ``inference``: time
statistics, clips/s, frames/s, FLOP/s, the fraction of the convolution peak, memory); :func:`table` is the
short human-readable summary of a whole result.
"""

from __future__ import annotations

import contextlib
import os
import platform
from typing import Any

import torch

from framecast.precision import cpu_bf16_features, cpu_name
from framecast.profiling.harness import Candidate, stats


def machine(device: torch.device) -> dict[str, Any]:
    import lightning

    info: dict[str, Any] = {
        "device": device.type,
        "cpu": cpu_name(),
        "cpu_bf16": cpu_bf16_features(),
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


def finish_machine(info: dict[str, Any]) -> None:
    """Add the load average at the end and the process's peak resident memory to ``machine(...)``."""
    with contextlib.suppress(OSError):
        info["load_average_end"] = list(os.getloadavg())
    with contextlib.suppress(ImportError, OSError):
        import resource

        info["process_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def phase_result(c: Candidate, b: int, dims: dict[str, int], flops_per_clip: int, peak_flops_per_s: float | None,
                 key: str) -> dict[str, Any]:
    """One phase of a candidate at batch ``b``: its time statistics under ``key`` and the rates from the median."""
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
    m = result["machine"]
    lines = [f"{m.get('gpu') or m['cpu']} (bf16 features: {', '.join(m.get('cpu_bf16') or []) or 'none'})"]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    for p, r in [(st["precision"], result), *result.get("extra", {}).items()]:
        cp = r["conv_peak"]
        lines.append(f"conv peak {p} ({cp['layer']} alone, a {cp['kind']}, {100 * cp['share_of_conv_flops']:.0f} % of the "
                     f"model's convolution FLOPs): forward+backward {cp['train']['flops_per_s'] / 1e9:,.1f} "
                     "GFLOP/s" + (f", forward {cp['forward']['flops_per_s'] / 1e9:,.1f} GFLOP/s" if "forward" in cp else ""))
    if not result.get("reference"):
        lines.append(f"reference not timed: {result.get('reference_skipped')}")
    lines.append(f"convolutions computed in {', '.join(st['conv_dtypes'])}; {result['flops']['train_per_clip'] / 1e9:,.2f} "
                 f"GFLOP per training clip, {result['flops']['forward_per_clip'] / 1e9:,.2f} per inference clip; "
                 f"{st['threads']} threads; load average "
                 f"{', '.join(f'{v:.2f}' for v in m.get('load_average_start', [])[:1]) or '?'}")
    return "\n".join(lines)
