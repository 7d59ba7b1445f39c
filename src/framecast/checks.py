"""Checks across the model and data settings, run by the CLI after building them and before any work.

Settings of one class are checked by its constructor (``model.model``, ``model.loss``, ``data.init_args.fps``,
...); this module checks what only makes sense together, so that a bad config fails in a second with a
message naming the fields, not after decoding videos or mid-training.
"""

from __future__ import annotations

from framecast.errors import ConfigError

MIN_FIT_CONTEXT = 2


def divisors(n: int, limit: int = 16) -> list[int]:
    return [d for d in range(1, min(n, limit) + 1) if n % d == 0]


def check_model_and_data(model, datamodule, stage: str = "fit") -> None:
    """Raise :class:`~framecast.errors.ConfigError` naming the fields when ``model`` cannot run on ``datamodule``'s clips.

    * the frame size must be divisible by ``model.patch_size`` (space-to-depth);
    * the data's ``channels`` must be the model's;
    * for ``fit``, at least :data:`MIN_FIT_CONTEXT` context frames: motion is only visible from two frames
      on (from one frame a model cannot tell which way anything moves), and with one context frame and a
      horizon of 1 the only prediction is made from the empty initial state, so the recurrent weights get
      no gradient at all.
    """
    hp = getattr(model, "hparams", {})
    patch = int(hp.get("patch_size", 1) or 1)
    size = getattr(datamodule, "size", None)
    if size is not None and patch > 1:
        h, w = (int(v) for v in size)
        if h % patch or w % patch:
            field = "data.init_args.canvas" if hasattr(datamodule, "hparams") and "canvas" in datamodule.hparams else "data.init_args.size"
            ok = sorted(set(divisors(h)) & set(divisors(w)))
            raise ConfigError(
                f"frame size {h}x{w} ({field}) is not divisible by model.patch_size {patch}: use a size that is a "
                f"multiple of {patch}, or a model.patch_size that divides both ({', '.join(map(str, ok))})"
            )
    channels = getattr(datamodule, "channels", None)
    if channels is not None and "channels" in hp and int(hp["channels"]) != int(channels):
        raise ConfigError(f"model.channels {hp['channels']} differs from data.init_args.channels {channels}: set both "
                         f"to 1 (grayscale) or 3 (RGB)")
    context = getattr(datamodule, "context_frames", None)
    if stage == "fit" and context is not None and context < MIN_FIT_CONTEXT:
        raise ConfigError(
            f"data.init_args.context_frames (or context_seconds x fps) gives {context} context frame(s); training "
            f"needs at least {MIN_FIT_CONTEXT}: motion is only visible from two frames on, and with a single "
            f"context frame (and horizon 1) the recurrent weights get no gradient. Accepted: >= {MIN_FIT_CONTEXT}."
        )
