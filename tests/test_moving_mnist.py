import numpy as np
import pytest
import torch

from framecast.data import MovingMNISTDataModule
from framecast.data.mnist_idx import read_idx_images
from framecast.data.moving_mnist import MovingDigits, trajectory


def small(**kw):
    args = {"train_size": 8, "val_size": 6, "test_size": 6, "batch_size": 4}
    args.update(kw)
    dm = MovingMNISTDataModule(**args)
    dm.setup()
    return dm


def test_batch_shapes_and_range():
    dm = small(context_frames=5, horizon_frames=3)
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        batch = next(iter(loader))
        assert batch["context"].shape == (4, 5, 1, 64, 64)
        assert batch["target"].shape == (4, 3, 1, 64, 64)
        for v in batch.values():
            assert v.dtype == torch.float32 and v.min() >= 0 and v.max() <= 1 and v.max() > 0.5


def test_rgb_channels():
    batch = next(iter(small(channels=3).val_dataloader()))
    assert batch["context"].shape[2] == 3
    assert torch.equal(batch["context"][:, :, 0], batch["context"][:, :, 2])


def test_val_and_test_identical_across_instantiations_and_seeds():
    a, b = small(seed=1), small(seed=2)
    for split in ("val", "test"):
        xa = next(iter(getattr(a, f"{split}_dataloader")()))
        xb = next(iter(getattr(b, f"{split}_dataloader")()))
        assert torch.equal(xa["context"], xb["context"]) and torch.equal(xa["target"], xb["target"])
    va, ta = next(iter(a.val_dataloader())), next(iter(a.test_dataloader()))
    assert not torch.equal(va["context"], ta["context"])


def test_train_fresh_each_epoch_and_reproducible_from_seed():
    a, b, c = small(seed=3), small(seed=3), small(seed=4)
    la, lb, lc = a.train_dataloader(), b.train_dataloader(), c.train_dataloader()
    e0a, e0b, e0c = next(iter(la)), next(iter(lb)), next(iter(lc))
    assert torch.equal(e0a["context"], e0b["context"])
    assert not torch.equal(e0a["context"], e0c["context"])
    la.sampler.set_epoch(1)
    assert not torch.equal(next(iter(la))["context"], e0a["context"])


@pytest.mark.parametrize("speed", [1.0, 3.6, 7.5])
def test_motion_rules(speed):
    rng = np.random.default_rng(0)
    extent = 36.0
    for _ in range(50):
        path = trajectory(rng, 40, extent, speed)
        assert path.min() >= 0 and path.max() <= extent  # stays on the canvas
        step = np.abs(np.diff(path, axis=0))
        v = step.max(axis=0)  # per-axis speed |v_y|, |v_x|
        assert np.isclose(np.linalg.norm(v), speed)  # the fixed speed
        near_edge = np.minimum(path, extent - path) < v  # (T, 2)
        for k in range(2):
            slow = step[:, k] < v[k] - 1e-9
            # a step moves less than |v| along an axis only when it bounced off that axis's edge
            assert np.all(near_edge[:-1, k][slow] | near_edge[1:, k][slow])


def test_bounce_reverses_direction_at_edges():
    rng = np.random.default_rng(1)
    path = trajectory(rng, 400, 36.0, 3.6)
    v = np.diff(path, axis=0)
    flips = np.nonzero(np.sign(v[1:, 1]) != np.sign(v[:-1, 1]))[0] + 1
    assert len(flips) > 3  # it bounced
    for i in flips:  # every reversal happens next to an edge
        assert min(path[i, 1], 36.0 - path[i, 1]) <= 3.6 + 1e-9


def test_rendered_digits_stay_whole_on_canvas(mnist_path):
    digits = read_idx_images(mnist_path)
    ds = MovingDigits(digits[:100], length=20, seed=0, context=10, horizon=10, num_digits=1)
    for i in range(20):
        frames, _paths = ds.sequence(i)
        digit_mass = None
        for t, f in enumerate(frames):  # a single digit: the whole glyph is drawn in every frame
            mass = int(f.astype(np.int64).sum())
            digit_mass = mass if digit_mass is None else digit_mass
            assert mass == digit_mass


def test_real_mnist_digits(mnist_path):
    digits = read_idx_images(mnist_path)
    assert digits.shape == (10000, 28, 28) and digits.dtype == np.uint8
    dm = small(digits=str(mnist_path))
    batch = next(iter(dm.train_dataloader()))
    assert batch["context"].shape == (4, 10, 1, 64, 64)
    # train, val and test draw from disjoint digit pools
    pools = dm.digit_pools()
    assert sum(len(p) for p in pools.values()) == 10000


def test_bad_digits_path_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.gz"):
        small(digits=str(tmp_path / "nope.gz"))
    bad = tmp_path / "bad-images-idx3-ubyte"
    bad.write_bytes(b"not an idx file at all")
    with pytest.raises(ValueError, match="bad-images"):
        small(digits=str(bad))


def test_bad_values_name_the_field():
    with pytest.raises(ValueError, match="horizon_frames"):
        MovingMNISTDataModule(horizon_frames=0)
    with pytest.raises(ValueError, match="channels"):
        MovingMNISTDataModule(channels=2)


def test_standard_npy_file(tmp_path):
    arr = (np.random.default_rng(0).random((20, 30, 64, 64)) * 255).astype(np.uint8)
    np.save(tmp_path / "mnist_test_seq.npy", arr)
    dm = small(path=str(tmp_path / "mnist_test_seq.npy"))
    batch = next(iter(dm.test_dataloader()))
    assert batch["context"].shape == (3, 10, 1, 64, 64)
    assert torch.allclose(batch["context"][0, :, 0], torch.from_numpy(arr[:10, 27]).float() / 255)
