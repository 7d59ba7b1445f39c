"""Loading checkpoints and building the data a command evaluates on (shared by benchmark, visualize, ...)."""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import torch
import yaml

from framecast.checkpoints import refusal
from framecast.module import FramePredictionModule


def load_module(path: str | Path, map_location: str | torch.device = "cpu") -> FramePredictionModule:
    """A trained :class:`FramePredictionModule` from a checkpoint, in eval mode, with ``data_hparams``: the
    data module args the checkpoint saved (:func:`saved_data_args`).

    Only tensors and plain data are unpickled (``weights_only=True``): a checkpoint carrying code is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        module = FramePredictionModule.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:  # an object that could run code: refused, never unpickled
        raise refusal(path, e) from None
    except Exception as e:  # any other failure: say which file and why
        raise ValueError(f"cannot load checkpoint {path}: {e}") from e
    module.data_hparams = saved_data_args(path)
    return module.eval()


def saved_data_args(ckpt: str | Path) -> dict[str, Any]:
    """The data module init args a ``framecast fit`` checkpoint saved (``{}`` if none), with the module's
    class under ``_class_path`` where Lightning's CLI recorded it."""
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    return dict(saved.get("datamodule_hyper_parameters") or {})


def init_args(data_args: dict[str, Any]) -> dict[str, Any]:
    """Saved data module args without the private keys (``_class_path``, ...)."""
    return {k: v for k, v in data_args.items() if not k.startswith("_")}


def frame_size_of(data_args: dict[str, Any]) -> tuple[int, int] | None:
    """The ``(H, W)`` frames of saved data module args (a video module's ``size``, moving digits' ``canvas``)."""
    if data_args.get("size") is not None:
        h, w = data_args["size"]
        return int(h), int(w)
    if data_args.get("canvas") is not None and data_args.get("path") is None:
        return int(data_args["canvas"]), int(data_args["canvas"])
    return None


VIDEO_CLIP_KEYS = ("fps", "context_seconds", "horizon_seconds", "context_frames", "horizon_frames", "size", "crop",
                   "channels")


def video_clip_settings(data_args: dict[str, Any]) -> dict[str, Any]:
    """Clip settings for a :class:`~framecast.data.video.VideoClipDataModule` like a checkpoint's training
    clips (from its saved data args): a video checkpoint's own, a moving digits checkpoint's frame counts,
    canvas and channels."""
    out = {k: data_args[k] for k in VIDEO_CLIP_KEYS if data_args.get(k) is not None}
    size = frame_size_of(data_args)
    if "size" not in out and size:
        out["size"] = list(size)
    return out


def instantiate(spec: dict[str, Any]):
    """Build ``{"class_path": "pkg.mod.Class", "init_args": {...}}``."""
    if not isinstance(spec, dict) or "class_path" not in spec:
        raise ValueError(f"data must be given as class_path and init_args, got {spec!r}")
    module_name, _, cls_name = spec["class_path"].rpartition(".")
    if not module_name:
        module_name, cls_name = "framecast.data", spec["class_path"]
    cls = getattr(importlib.import_module(module_name), cls_name)
    return cls(**(spec.get("init_args") or {}))


def datamodule_from_config(config: str | Path, **overrides):
    """The data module of a ``framecast fit`` YAML config (its ``data:`` section), ``overrides`` applied."""
    config = Path(config)
    if not config.is_file():
        raise FileNotFoundError(f"config {config} does not exist")
    data = (yaml.safe_load(config.read_text()) or {}).get("data")
    if data is None:
        raise ValueError(f"config {config} has no data: section")
    data = {"class_path": data["class_path"], "init_args": {**(data.get("init_args") or {}), **overrides}}
    return instantiate(data)


def datamodule_for_video(video: str | Path, like: Any = None, **options):
    """A :class:`~framecast.data.VideoClipDataModule` on ``video`` clipped like ``like``'s training data.

    ``like``: a module from :func:`load_module` (or anything with ``data_hparams``, the saved data args, and
    ``hparams``): its clip settings (:func:`video_clip_settings`: fps, clip lengths, size, channels), its model's
    channels where those lack them, clips of 10 + 10 frames where nothing gives their lengths. ``options`` (init args of the
    video module) replace those settings; frames given replace saved seconds and the other way round.
    """
    from framecast.data.video import VideoClipDataModule

    args = video_clip_settings(getattr(like, "data_hparams", None) or {})
    channels = (getattr(like, "hparams", None) or {}).get("channels")
    if channels is not None:
        args.setdefault("channels", channels)
    for name in ("context", "horizon"):
        for given, saved in (("frames", "seconds"), ("seconds", "frames")):
            if options.get(f"{name}_{given}") is not None:
                args.pop(f"{name}_{saved}", None)
    args.update(options)
    for name in ("context", "horizon"):
        if args.get(f"{name}_seconds") is None and args.get(f"{name}_frames") is None:
            args[f"{name}_frames"] = 10
    return VideoClipDataModule(videos=str(video), **args)


DATA_CLASSES = {"framecast.data.MovingMNISTDataModule": "digits", "framecast.data.video.VideoClipDataModule": "videos"}


def guess_data_class(args: dict[str, Any]) -> str | None:
    """The framecast data module whose init args ``args`` are (a checkpoint of a plain ``Trainer`` saves no
    class): the first of :data:`DATA_CLASSES` that has the marking argument and takes them all."""
    import inspect

    for path, key in DATA_CLASSES.items():
        if key in args:
            module_name, _, name = path.rpartition(".")
            try:
                params = inspect.signature(getattr(importlib.import_module(module_name), name)).parameters
            except (ImportError, AttributeError):
                continue
            if set(args) <= set(params):
                return path
    return None


def datamodule_from_checkpoint(ckpt: str | Path, saved: dict[str, Any] | None = None, **overrides):
    """The data module a checkpoint was trained on, from the init args it saved (``saved``, as
    :func:`saved_data_args` gives them; read from ``ckpt`` when None) with ``overrides`` applied: its class
    as ``framecast fit`` recorded it, else the framecast data module whose arguments they are."""
    saved = saved_data_args(ckpt) if saved is None else saved
    args = init_args(saved)
    cls = saved.get("_class_path") or (guess_data_class(args) if args else None)
    if not cls:
        raise ValueError(f"checkpoint {ckpt} does not say which data it was trained on: give --config or --video")
    return instantiate({"class_path": cls, "init_args": {**args, **overrides}})


def rebuild(dm, **overrides):
    """A new data module of ``dm``'s class with its saved init args and ``overrides``.

    ``horizon_frames`` (or ``context_frames``) replaces a ``horizon_seconds`` (``context_seconds``) setting.
    """
    args = init_args(dict(dm.hparams))
    for name in ("context", "horizon"):
        if f"{name}_frames" in overrides and args.get(f"{name}_seconds") is not None:
            args[f"{name}_seconds"] = None
    args.update(overrides)
    return type(dm)(**args)


def shrink(dm, split: str, clips: int | None):
    """Moving digits generate every clip of a fixed split (val, test) up front, and clip ``i`` is the same
    whatever the split size: build only the ``clips`` needed. Other data modules (and ``clips`` None) are
    returned as they are."""
    key = f"{split}_size"
    hp = dict(getattr(dm, "hparams", {}))
    digits = any(c.__name__ == "MovingMNISTDataModule" for c in type(dm).__mro__)  # (no PyAV import)
    if clips and split != "train" and digits and hp.get("path") is None and key in hp:
        size = hp[key]  # None: the module's default (1,000 generated, or every sequence of a test file)
        if size is None or size > clips:
            return rebuild(dm, **{key: clips})
    return dm


# The old name of :func:`framecast.evaluation.limit` (this module's copy of it is gone), for its last caller,
# framecast.viz.clips; delete this line once that imports ``limit``.
from framecast.evaluation.run import limit as batches  # noqa: F401
