import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
MNIST = SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz"
VIDEOS = SHARED_DATA / "videos"

torch.set_num_threads(2)

# Property tests draw the same examples on every run, so a CI result is reproducible. To explore new
# examples locally: HYPOTHESIS_PROFILE=explore make test
settings.register_profile("ci", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (the shared test data lives in ../shared/data)")
    return path


@pytest.fixture
def mnist_path() -> Path:
    return need(MNIST)


@pytest.fixture
def videos_dir() -> Path:
    return need(VIDEOS)


@pytest.fixture
def one_thread():
    """Tiny tensors on a shared 2-core machine: one thread avoids the cost of syncing two. A module takes it for
    every test with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def moving_square(frames=6, size=16, side=4) -> torch.Tensor:
    """A white square moving 2 pixels right per frame on black, ``(1, frames, 1, size, size)``."""
    x = torch.zeros(1, frames, 1, size, size)
    for t in range(frames):
        x[0, t, 0, 4 : 4 + side, 2 + 2 * t : 2 + 2 * t + side] = 1.0
    return x


def write_video(path: Path, n_frames: int, size: int = 16) -> Path:
    """A small 30 fps H.264 mp4 of ``n_frames`` noise frames."""
    rng = np.random.default_rng(n_frames)
    with av.open(str(path), "w") as container:
        codec = "libvpx" if path.suffix == ".webm" else "libx264"
        stream = container.add_stream(codec, rate=30, options={"preset": "ultrafast"} if codec == "libx264" else {})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(n_frames):
            img = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, 30)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
