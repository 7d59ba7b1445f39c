"""Which precision ``framecast fit`` trains in when the config does not say: ``bf16-mixed`` where the device
computes bfloat16 natively, float32 (``32``) elsewhere.

Native bfloat16 means: on the CPU, the instructions oneDNN's bfloat16 convolutions use, ``amx_bf16`` (Xeons
with AMX) or ``avx512_bf16`` (Zen 4 and later, Cooper Lake and later Xeons), read from the CPU flags of
``/proc/cpuinfo`` (Linux; elsewhere none is assumed); on CUDA, ``torch.cuda.is_bf16_supported()`` (Ampere
and later). Without them bfloat16 is emulated and slower than float32, so float32 it is.
"""

from __future__ import annotations

from pathlib import Path

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
"""CPU flags of native bfloat16 arithmetic, the best first."""
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The CPU's feature flags (the first ``flags`` line of ``cpuinfo``); empty where there is no such file."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name(cpuinfo: Path = CPUINFO) -> str:
    """The CPU's model name (``/proc/cpuinfo``; elsewhere what ``platform`` says)."""
    import platform

    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16_features(flags: set[str] | None = None) -> list[str]:
    """The native bfloat16 features among ``flags`` (default: this CPU's), in the order of :data:`CPU_BF16_FLAGS`."""
    flags = cpu_flags() if flags is None else flags
    return [f for f in CPU_BF16_FLAGS if f in flags]


def cuda_bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def training_device(accelerator) -> str:
    """``"cuda"``, ``"cpu"`` or ``"other"``: where a ``Trainer(accelerator=...)`` will train (``auto``: CUDA where
    there is a GPU, else the CPU; Apple's MPS and other accelerators are ``"other"``)."""
    import torch

    if not isinstance(accelerator, str):  # an Accelerator instance: CUDAAccelerator, CPUAccelerator, ...
        accelerator = type(accelerator).__name__.removesuffix("Accelerator")
    name = accelerator.lower()
    if name in ("cuda", "gpu"):
        return "cuda"
    if name == "cpu":
        return "cpu"
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "other" if mps is not None and mps.is_available() else "cpu"
    return "other"


def default_precision(device: str, flags: set[str] | None = None, cuda_has_bf16: bool | None = None
                      ) -> tuple[str, str]:
    """``(precision, reason)`` for training on ``device`` (``"cpu"``, ``"cuda"``, ``"other"``) when the user gave
    none: ``"bf16-mixed"`` where it computes bfloat16 natively, else ``"32"``. ``flags`` (the CPU's) and
    ``cuda_has_bf16`` default to this machine's; tests pass others."""
    if device == "cpu":
        found = cpu_bf16_features(flags)
        if found:
            return "bf16-mixed", f"this CPU has native bf16: {', '.join(found)}"
        return "32", f"this CPU has no native bf16 ({' / '.join(CPU_BF16_FLAGS)})"
    if device == "cuda":
        if cuda_bf16() if cuda_has_bf16 is None else cuda_has_bf16:
            return "bf16-mixed", "this GPU supports bf16"
        return "32", "this GPU has no bf16"
    return "32", "bf16 is chosen by default on CPUs and CUDA GPUs only"


def precision_line(precision: str, reason: str, chosen: bool) -> str:
    """The line ``framecast fit`` prints at its start."""
    if not chosen:
        return f"precision: {precision} (trainer.precision as given)"
    other = "--trainer.precision 32 for float32" if precision != "32" else "--trainer.precision bf16-mixed to force it"
    return f"precision: {precision} ({reason}; {other})"
