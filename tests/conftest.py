from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
MNIST = SHARED_DATA / "mnist" / "t10k-images-idx3-ubyte.gz"
VIDEOS = SHARED_DATA / "videos"

torch.set_num_threads(2)


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
