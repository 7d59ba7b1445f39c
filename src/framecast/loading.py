"""Loading checkpoints and building the data a command evaluates on (shared by benchmark, visualize, ...)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch
import yaml

from framecast.module import FramePredictionModule


def load_module(path: str | Path, map_location: str | torch.device = "cpu") -> FramePredictionModule:
    """A trained :class:`FramePredictionModule` from a checkpoint, in eval mode.

    Only tensors and plain data are unpickled (``weights_only=True``): a checkpoint carrying code is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        module = FramePredictionModule.load_from_checkpoint(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001  (any unpickling failure: say which file and why)
        raise ValueError(f"cannot load checkpoint {path}: {e}") from e
    module.data_hparams = checkpoint_data_hparams(path).get("init_args", {})
    return module.eval()


def checkpoint_data_hparams(path: str | Path) -> dict[str, Any]:
    """The data module's class path and init args saved in a checkpoint (``{}`` when absent)."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    hp = dict(ckpt.get("datamodule_hyper_parameters") or {})
    cls = hp.get("_class_path")
    init_args = {k: v for k, v in hp.items() if not k.startswith("_")}
    return {"class_path": cls, "init_args": init_args} if init_args else {}


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


def datamodule_for_video(video: str | Path, like: FramePredictionModule | None = None, **options):
    """A :class:`~framecast.data.VideoClipDataModule` on ``video`` with the clip settings of ``like``'s
    training data where the checkpoint recorded them (fps, context, horizon, size, channels)."""
    from framecast.data import VideoClipDataModule

    keep = ("fps", "context_seconds", "horizon_seconds", "context_frames", "horizon_frames", "size", "crop", "channels")
    args: dict[str, Any] = {}
    saved = getattr(like, "data_hparams", None) or {}
    if saved:
        args.update({k: v for k, v in saved.items() if k in keep and v is not None})
        if "context_seconds" in args or "horizon_seconds" in args:
            args.pop("context_frames", None), args.pop("horizon_frames", None)
    elif like is not None:
        args["channels"] = like.hparams.channels
    args.update(options)
    return VideoClipDataModule(videos=str(video), **args)
