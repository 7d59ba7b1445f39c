"""A choice between implementations of the same function, measured once per machine and shape and cached.

Which of two kernel layouts is faster depends on the CPU, the library versions, the thread count and the
shape, so it is measured, not ruled: :func:`choose` returns the cached choice for ``key`` on this machine, or
runs ``measure()`` (seconds per option) once, keeps the fastest and writes it to the cache, a JSON file under
``$FRAMECAST_CACHE_DIR`` (default: ``$XDG_CACHE_HOME/framecast``, i.e. ``~/.cache/framecast``). Processes
starting together (the ranks of a DDP run, two trainings side by side) take a file lock around the
measurement, so they all use the one choice the first of them measured. :func:`machine_key` names the
machine: the CPU, torch's vector instructions and version, and the thread count.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path

CACHE_ENV = "FRAMECAST_CACHE_DIR"
CACHE_NAME = "kernel_choices.json"
_chosen: dict[str, str] = {}  # this process's choices, so the file is read once per key


def cache_file() -> Path:
    root = os.environ.get(CACHE_ENV)
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "framecast"
    return Path(root) / CACHE_NAME


def machine_key() -> str:
    import torch

    from framecast.precision import cpu_name

    return (f"{cpu_name()} | {torch.backends.cpu.get_cpu_capability()} | torch {torch.__version__} | "
            f"{torch.get_num_threads()} threads")


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path``'s lock file (where ``fcntl`` exists; elsewhere none)."""
    try:
        import fcntl

        f = open(path.with_suffix(".lock"), "w")  # noqa: SIM115 (closed below)
    except (ImportError, OSError):  # no fcntl (Windows) or no writable cache folder: no lock
        yield
        return
    try:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
    finally:
        f.close()  # (closing releases the lock)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def choose(key: str, measure: Callable[[], dict[str, float]]) -> str:
    """The fastest option for ``key`` (which names the work and its shape) on this machine: from this process's
    memory, else the cache file, else measured now by ``measure()`` (option -> seconds) and cached."""
    full = f"{machine_key()} | {key}"
    if full in _chosen:
        return _chosen[full]
    path = cache_file()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path):
        entry = _read(path).get(full)
        if entry is None:
            times = measure()
            entry = {"choice": min(times, key=times.get), "seconds": times}
            data = _read(path)
            data[full] = entry
            with contextlib.suppress(OSError):  # no writable cache: the choice holds for this process
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
                tmp.replace(path)
    _chosen[full] = entry["choice"]
    return entry["choice"]
