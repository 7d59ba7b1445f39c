"""Clips as LitData chunks: written by ``framecast prepare --to litdata OUT``, read by
``VideoClipDataModule(streaming=OUT)``. OUT is a folder or an object-store URL (``s3://``, ``gs://``, ...).

Layout of OUT::

    OUT/clips-<id>/        one LitData dataset (``litdata.optimize``): chunk-*.bin and index.json
    OUT/framecast.json     the manifest, written last: the settings, the data folder's name, and per split
                           its place in the dataset (offset, clips), its bytes and chunks

Every item is ``{"frames": uint8 (T, H, W, C), "split", "video", "start" (seconds), "fps", "index"}``:
``video`` is the clip's video as a position in the manifest's ``videos`` (LitData would store a string that
names a media file as that file's contents), ``index`` is the clip's position in the cache path's clip list of its split (so ``frames`` equals that
clip, byte for byte). The items are in the order train, val, test (``keep_data_ordered``); the training clips
are written in a seeded random order, so that a chunk mixes clips of many videos.

Interrupted writes: the data goes to a new ``clips-<id>`` folder and the manifest that names it is written
last (atomically where OUT is a folder), so an interrupted write leaves a folder that no manifest names: it
is never read, and the next write into a local OUT removes it. A manifest whose settings differ from the
data module's is refused, naming every difference.

Reading (the design): LitData stores and streams the chunks (from a folder, or downloaded into its own cache
from an object store); framecast keeps its own samplers on top of the index-addressable
``litdata.StreamingDataset``, so the streaming path keeps the guarantees of the cache path: exact mid-epoch
resume (:class:`~framecast.data.samplers.ResumableDataLoader`), training shards without duplicates and
evaluation clips each on exactly one process (:class:`~framecast.data.samplers.EvalSampler`, no padding).
LitData's own ``StreamingDataLoader`` shards by padding or dropping to equal lengths, which would break the
exact evaluation metrics. The training order (:class:`BlockShuffleSampler`) shuffles whole chunks and the
clips within each, so a process reads one chunk at a time, not a random chunk per clip.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from framecast.data.clips import SPLITS
from framecast.data.samplers import EpochShuffleSampler
from framecast.data.video_dataset import VideoClipDataset
from framecast.errors import InputError

MANIFEST = "framecast.json"
FORMAT = "framecast-litdata-clips"
VERSION = 1
CHUNK_BYTES = 64 * 2**20  # about this much per chunk


def is_url(out: str) -> bool:
    return "://" in str(out)


def join(out: str, name: str) -> str:
    return f"{str(out).rstrip('/')}/{name}" if is_url(out) else str(Path(out) / name)


def settings_of(dm) -> dict[str, Any]:
    """What the clips depend on (compared between a manifest and a data module)."""
    return {"videos": dm.videos, "fps": dm.fps, "size": list(dm.size), "crop": dm.settings.crop,
            "channels": dm.channels, "context_frames": dm.context_frames, "horizon_frames": dm.horizon_frames,
            "stride_frames": dm.stride_frames, "split": [round(f, 12) for f in dm.split], "splits": dm.splits,
            "seed": dm.seed, "max_clips_per_split": dm.max_clips_per_split, "on_bad_video": dm.on_bad_video}


def differences(saved: dict, now: dict) -> list[str]:
    """``"fps 8 there, 5 in data.init_args"`` for every setting that differs."""
    return [f"{k} {_show(saved.get(k))} there, {_show(now[k])} in data.init_args"
            for k in now if json.loads(json.dumps(saved.get(k))) != json.loads(json.dumps(now[k]))]


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else json.dumps(value)


# -- the manifest ---------------------------------------------------------------------------------------------


def read_manifest(out: str) -> dict | None:
    """The manifest of OUT, or None where there is none (nothing written, or a write that did not finish)."""
    path = join(out, MANIFEST)
    try:
        if is_url(out):
            from litdata.streaming.fs_provider import _get_fs_provider

            provider = _get_fs_provider(path)
            if not provider.exists(path):
                return None
            with tempfile.TemporaryDirectory() as tmp:
                provider.download_file(path, f"{tmp}/{MANIFEST}")
                text = Path(tmp, MANIFEST).read_text()
        else:
            text = Path(path).read_text()
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        manifest = json.loads(text)
    except ValueError as e:
        raise InputError(f"{path} is not a framecast manifest ({e}): write OUT again with framecast prepare "
                         f"--config FILE --to litdata {out}") from e
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise InputError(f"{path} is not a version-{VERSION} framecast clip manifest: write OUT again with "
                         f"framecast prepare --config FILE --to litdata {out}")
    return manifest


def write_manifest(out: str, manifest: dict) -> None:
    """Write the manifest last: atomically (temporary file and rename) in a folder, one upload to a URL."""
    text = json.dumps(manifest, indent=1) + "\n"
    if is_url(out):
        from litdata.streaming.fs_provider import _get_fs_provider

        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, MANIFEST).write_text(text)
            _get_fs_provider(join(out, MANIFEST)).upload_file(f"{tmp}/{MANIFEST}", join(out, MANIFEST))
        return
    tmp = Path(out) / f".{MANIFEST}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, Path(out) / MANIFEST)


def open_manifest(out: str, dm) -> dict:
    """OUT's manifest, checked against the data module's settings (:class:`InputError` naming what to do)."""
    manifest = read_manifest(out)
    if manifest is None:
        raise InputError(f"data.init_args.streaming: {out} holds no complete framecast clip data (no {MANIFEST}: "
                         f"nothing was written there, or the write did not finish). Write it with: framecast "
                         f"prepare --config FILE --to litdata {out}")
    diff = differences(manifest["settings"], settings_of(dm))
    if diff:
        raise InputError(f"data.init_args.streaming: {out} holds clips written with other settings: "
                         + "; ".join(diff) + ". Use the settings it was written with, or write these clips "
                         "to another place (framecast prepare --config FILE --to litdata OTHER)")
    return manifest


# -- writing --------------------------------------------------------------------------------------------------


def _clip_item(job: dict) -> dict:
    """One LitData item (runs in the optimize workers)."""
    frames = np.load(job.pop("npy"), mmap_mode="r")
    start, length = job.pop("start_frame"), job.pop("length")
    return {"frames": np.ascontiguousarray(frames[start:start + length]), **job}


def write_clips(dm, out: str, workers: int) -> dict:
    """Write the clips of ``dm`` (set up, videos in the cache) to OUT; returns the manifest written."""
    from litdata import optimize

    old = read_manifest(out)
    if old is not None and differences(old["settings"], settings_of(dm)):
        raise InputError(f"{out} already holds clips written with other settings: "
                         + "; ".join(differences(old["settings"], settings_of(dm)))
                         + ". Write to another place, or delete it first")
    if not is_url(out):
        try:
            Path(out).mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise InputError(f"cannot write the clips to {out} ({e.strerror or e}): give --to litdata a folder "
                             f"that can be created and written, or an object-store URL") from e
        for stale in Path(out).glob("clips-*"):  # not named by the manifest: an interrupted write
            if old is None or stale.name != old["data"]:
                shutil.rmtree(stale, ignore_errors=True)
                print(f"removed {stale} (left by a write that did not finish)")
    clip_frames = dm.clip_frames
    clip_bytes = clip_frames * dm.size[0] * dm.size[1] * dm.channels
    chunk_clips = max(1, CHUNK_BYTES // clip_bytes)
    jobs, splits, offset = [], {}, 0
    for split in SPLITS:
        windows = dm.windows.get(split, [])
        order = range(len(windows))
        if split == "train":
            order = np.random.default_rng([dm.seed, 1]).permutation(len(windows)).tolist()
        for i in order:
            v, start = windows[i]
            entry = dm._entries[v]
            fps = dm.fps or entry.meta.get("source_fps") or 0.0
            jobs.append({"npy": str(entry.frames_path), "start_frame": int(start), "length": clip_frames,
                         "split": split, "video": int(v), "start": start / fps if fps else 0.0,
                         "fps": float(fps), "index": int(i)})
        splits[split] = {"offset": offset, "clips": len(windows), "bytes": len(windows) * clip_bytes}
        offset += len(windows)
    if not jobs:
        raise InputError("no clip to write: every split is empty")
    data = f"clips-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
    optimize(fn=_clip_item, inputs=jobs, output_dir=join(out, data), chunk_size=chunk_clips,
             num_workers=max(1, min(int(workers), len(jobs))), keep_data_ordered=True, reorder_files=False,
             start_method="fork", verbose=False)
    chunks = _chunk_sizes(join(out, data))
    bounds = np.cumsum([0] + [c["chunk_size"] for c in chunks])
    for info in splits.values():
        lo, hi = info["offset"], info["offset"] + info["clips"]
        info["chunks"] = int(sum(1 for a, b in itertools.pairwise(bounds) if a < hi and b > lo))
    manifest = {"format": FORMAT, "version": VERSION, "data": data, "settings": settings_of(dm), "splits": splits,
                "chunk_clips": chunk_clips, "chunks": len(chunks), "bytes": int(sum(c["chunk_bytes"] for c in chunks)),
                "videos": [str(p) for p in dm.video_paths],
                "windows": {s: [list(w) for w in dm.windows.get(s, [])] for s in SPLITS}}
    write_manifest(out, manifest)
    if not is_url(out) and old is not None and old["data"] != data:
        shutil.rmtree(Path(out) / old["data"], ignore_errors=True)  # replaced
    return manifest


def _chunk_sizes(data_dir: str) -> list[dict]:
    """The chunks of a written LitData dataset, in item order."""
    if is_url(data_dir):
        from litdata.streaming.fs_provider import _get_fs_provider

        with tempfile.TemporaryDirectory() as tmp:
            _get_fs_provider(data_dir).download_file(join(data_dir, "index.json"), f"{tmp}/index.json")
            return json.loads(Path(tmp, "index.json").read_text())["chunks"]
    return json.loads((Path(data_dir) / "index.json").read_text())["chunks"]


def describe(manifest: dict, out: str) -> str:
    """What was written, one line per split and a total."""
    lines = [f"litdata  {s}: {m['clips']} clips, {m['bytes'] / 1e6:.2f} MB of frames, {m['chunks']} chunk(s)"
             for s, m in manifest["splits"].items()]
    lines.append(f"wrote {sum(m['clips'] for m in manifest['splits'].values())} clips in {manifest['chunks']} "
                 f"chunk(s), {manifest['bytes'] / 1e6:.2f} MB, to {join(out, manifest['data'])} "
                 f"(manifest {join(out, MANIFEST)})")
    return "\n".join(lines)


# -- reading --------------------------------------------------------------------------------------------------


def load(dm) -> dict:
    """Fill ``dm``'s videos, windows and splits from its ``streaming`` OUT (checked); returns the manifest."""
    manifest = open_manifest(dm.streaming, dm)
    dm.video_paths = [Path(p) for p in manifest["videos"]]
    dm.windows = {s: [tuple(w) for w in manifest["windows"][s]] for s in SPLITS}
    dm.videos_by_split = {s: sorted({dm.video_paths[v] for v, _ in dm.windows[s]}) for s in SPLITS}
    return manifest


class StreamingClipDataset(VideoClipDataset):
    """The clips of one split read from a LitData dataset (``litdata.StreamingDataset``, opened lazily in each
    worker process): item ``i`` is the dataset's item ``offset + i``, augmented as
    :class:`VideoClipDataset` does. ``block``: clips per chunk, for :meth:`sampler`."""

    def __init__(self, input_dir: str, split: str, offset: int, n: int, context_frames: int,
                 horizon_frames: int, block: int, **kwargs):
        super().__init__([], [(0, offset + i) for i in range(n)], context_frames, horizon_frames, **kwargs)
        self.input_dir, self.split, self.block = input_dir, split, block
        self._stream = None

    def __getstate__(self):
        return {**super().__getstate__(), "_stream": None}

    def item(self, index: int) -> dict:
        """The stored item of clip ``index`` (its ``frames``, ``split``, ``video``, ``start``, ``fps``, ``index``)."""
        if self._stream is None:
            from litdata import StreamingDataset

            self._stream = StreamingDataset(self.input_dir)
        item = self._stream[self.windows[index][1]]
        if item["split"] != self.split:
            raise InputError(f"{self.input_dir}: item {self.windows[index][1]} is a {item['split']} clip, expected "
                             f"{self.split}; the data does not match its manifest, write it again")
        return item

    def clip(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.item(index)["frames"])).permute(0, 3, 1, 2)

    def sampler(self, seed: int) -> BlockShuffleSampler:
        return BlockShuffleSampler(len(self), block=self.block, seed=seed, tag_epoch=True)


def dataset(dm, manifest: dict, split: str, **kwargs) -> StreamingClipDataset:
    info = manifest["splits"][split]
    return StreamingClipDataset(join(dm.streaming, manifest["data"]), split, info["offset"], info["clips"],
                                dm.context_frames, dm.horizon_frames, manifest["chunk_clips"], **kwargs)


class BlockShuffleSampler(EpochShuffleSampler):
    """A random order of ``0 .. n-1`` per epoch from ``(seed, epoch)`` alone that keeps blocks of ``block``
    consecutive indices (a chunk) together: the blocks in a random order, the indices of each block in a
    random order. Sharded, tagged with the epoch and resumed like :class:`EpochShuffleSampler`."""

    def __init__(self, n: int, block: int, seed: int = 0, tag_epoch: bool = False,
                 num_replicas: int | None = None, rank: int | None = None):
        super().__init__(n, seed, tag_epoch, num_replicas, rank)
        self.block = max(1, int(block))

    def order(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        parts = [s + rng.permutation(min(self.block, self.n - s)) for s in rng.permutation(range(0, self.n, self.block))]
        order = np.concatenate(parts) if parts else np.arange(0)
        return order + self.epoch * self.n if self.tag_epoch else order

