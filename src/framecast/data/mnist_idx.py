"""Read MNIST's idx files (``t10k-images-idx3-ubyte[.gz]``) into uint8 arrays."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np


def read_idx_images(path: str | Path) -> np.ndarray:
    """Images ``(N, 28, 28)`` uint8 from an idx3 file, gzip-compressed or not.

    A folder is searched for ``*-images-idx3-ubyte[.gz]`` (training images first if present).
    """
    path = Path(path).expanduser()
    if path.is_dir():
        found = sorted(path.glob("*images-idx3-ubyte*"), key=lambda p: ("t10k" in p.name, p.name))
        if not found:
            raise FileNotFoundError(f"no MNIST images file (*-images-idx3-ubyte[.gz]) in folder {path}")
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"MNIST digits file {path} does not exist; use digits: builtin or give an idx file")
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 16 or int.from_bytes(raw[:4], "big") != 2051:
        raise ValueError(f"{path} is not an MNIST idx3 images file (bad magic number)")
    n, h, w = (int.from_bytes(raw[i : i + 4], "big") for i in (4, 8, 12))
    if len(raw) != 16 + n * h * w:
        raise ValueError(f"{path} is truncated: header says {n} images of {h}x{w}, file has {len(raw) - 16} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, h, w)
