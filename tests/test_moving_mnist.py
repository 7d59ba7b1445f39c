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


# --- the standard protocol -------------------------------------------------------------------------


def standard_file(tmp_path, n=7, seed=0):
    """A small file in the layout of mnist_test_seq.npy: (20, N, 64, 64) uint8."""
    arr = np.random.default_rng(seed).integers(0, 256, size=(20, n, 64, 64), dtype=np.uint8)
    path = tmp_path / "mnist_test_seq.npy"
    np.save(path, arr)
    return path, arr


def test_standard_protocol_tests_on_the_file_in_file_order(tmp_path, mnist_path):
    """(The shared data has only the MNIST test images; they stand in for the training images here.)"""
    path, arr = standard_file(tmp_path)
    digits = mnist_path
    dm = MovingMNISTDataModule(digits=str(digits), test_path=str(path), train_size=8, val_size=4, batch_size=3)
    dm.setup()
    clips = [b for b in dm.test_dataloader()]
    context = torch.cat([b["context"] for b in clips])
    target = torch.cat([b["target"] for b in clips])
    assert context.shape == (7, 10, 1, 64, 64) and target.shape == (7, 10, 1, 64, 64)  # all of them by default
    expected = torch.from_numpy(arr.transpose(1, 0, 2, 3)).unsqueeze(2).float() / 255
    torch.testing.assert_close(context, expected[:, :10])
    torch.testing.assert_close(target, expected[:, 10:])
    # train and validation are generated from the digits: 90 % / 10 %, none held back for a test pool
    pools = dm.digit_pools()
    assert len(pools["train"]) == 9000 and len(pools["val"]) == 1000 and len(pools["test"]) == 0
    assert next(iter(dm.train_dataloader()))["context"].shape == (3, 10, 1, 64, 64)
    limited = MovingMNISTDataModule(digits=str(digits), test_path=str(path), test_size=5)
    limited.setup()
    assert len(limited.datasets["test"]) == 5
    desc = dm.describe()
    assert "standard" in desc["protocol"] and str(path) in desc["test"] and "7 of 7" in desc["test"]
    assert "10000 digits" in desc["digits"]


def test_the_data_is_named_exactly():
    desc = MovingMNISTDataModule().describe()
    assert "builtin" in desc["digits"] and "not comparable" in desc["digits"]


@pytest.mark.parametrize("seed", [0, 1000, 1001])
def test_split_streams_never_collide(seed):
    """Equal seeds (or the old eval_seed + 1) no longer repeat trajectories across splits."""
    dm = MovingMNISTDataModule(seed=seed, eval_seed=1000, train_size=4, val_size=4, test_size=4)
    dm.setup()
    val = dm.datasets["val"].frames
    test = dm.datasets["test"].frames
    for i in range(4):
        _, train_paths = dm.datasets["train"].sequence(i)
        for other in (MovingDigits(dm.digit_pools()["val"], 4, seed, 10, 10, stream=1),
                      MovingDigits(dm.digit_pools()["test"], 4, seed, 10, 10, stream=2)):
            assert not np.array_equal(other.sequence(i)[1], train_paths)
    assert not torch.equal(val, test)


def test_bad_standard_files_are_named(tmp_path):
    from framecast.errors import InputError

    with pytest.raises(InputError, match="test_path .*does not exist"):
        MovingMNISTDataModule(test_path=str(tmp_path / "missing.npy")).setup()
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 2, 64, 64), np.uint8))
    with pytest.raises(InputError, match="expected \\(T >= 20"):
        MovingMNISTDataModule(test_path=str(bad)).setup()
    with pytest.raises(ValueError, match="exclude each other"):
        MovingMNISTDataModule(path=str(bad), test_path=str(bad))
