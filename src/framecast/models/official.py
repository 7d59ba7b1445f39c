"""Loading weights of the official (or OpenSTL's) implementations into framecast's predictors: the pieces the
loaders of every model share (used by the golden tests and by anyone bringing a trained official model)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from framecast.models.heads import DeterministicHead


def patch_permutation(channels: int, patch_size: int) -> Tensor:
    """framecast's patch channel ``c*p*p + k`` (``pixel_unshuffle``, ``k = dy*p + dx``) is channel ``k*C + c``
    of the official ``reshape_patch`` (order ``(dy, dx, c)``): ``official[perm]`` is framecast's order."""
    p = patch_size
    return torch.arange(p * p * channels).view(p * p, channels).t().reshape(-1)


def per_channel(key: str, value: Tensor) -> Tensor:
    """An official per-element affine ``(C, H, W)`` as framecast's per-channel ``(C,)``; ``ValueError``
    where it varies over space (then it has no per-channel equivalent)."""
    flat = value.flatten(1)
    if not torch.equal(flat, flat[:, :1].expand_as(flat)):
        raise ValueError(
            f"{key} varies over space; framecast's has one value per channel, so these weights have no equivalent"
        )
    return flat[:, 0].clone()


def openstl_state_dict(model, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """An OpenSTL model's (or method checkpoint's) weights with the ``model.`` prefix dropped, after checking
    that ``model`` has OpenSTL's architecture: ``bias=False``, equal ``hidden`` sizes, the deterministic head,
    no ``residual`` and ``layer_norm`` as the weights have it; otherwise ``ValueError`` naming the options."""
    sd = state_dict.get("state_dict", state_dict)
    sd = {k.removeprefix("model."): v for k, v in sd.items()}
    problems = []
    if model.bias:
        problems.append("model_options.bias must be false (OpenSTL's convolutions have no bias)")
    if len(set(model.hidden)) > 1:
        problems.append(f"hidden sizes must be equal (OpenSTL's port needs it), got {model.hidden}")
    if not isinstance(model.head, DeterministicHead) or model.residual:
        problems.append("the OpenSTL network needs head: deterministic and residual: false")
    has_norm = any(
        len(p) >= 3 and p[-3].startswith("conv") and p[-2] == "1" for p in (k.split(".") for k in sd)
    )
    if has_norm != model.layer_norm:
        problems.append(f"model_options.layer_norm must be {str(has_norm).lower()} for these weights")
    if problems:
        raise ValueError("load_openstl_state_dict: " + "; ".join(problems))
    return sd
