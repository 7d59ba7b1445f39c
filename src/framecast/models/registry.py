"""The registry of predictors and baselines, filled by the :func:`register_model` decorator.

A model file registers its class where it is defined::

    @register_model("convlstm")
    class ConvLSTM(Predictor): ...

and ``framecast/models/__init__.py`` imports the file, so a new model is one file plus one import line.

Each predictor's options are the parameters of its constructor, typed there: its own (``layer_norm``,
``decouple_weight``, ...) and, through ``**kwargs``, the shared ones of
:class:`framecast.models.base.Predictor` (``channels``, ``hidden``, ...). :func:`build_model` checks the
options by name and type against those signatures before it builds anything, and names the config field
of a bad one: ``model.<name>`` for a shared option, ``model.model_options.<name>`` for a predictor's own.
Baselines take no options (they ignore the shared ones, which the training module passes for every model).
"""

from __future__ import annotations

import inspect
import numbers
import types
import typing
from typing import Any, Literal, Union

from torch import nn

MODELS: dict[str, type[nn.Module]] = {}
"""Learned predictors, name -> class."""
BASELINES: dict[str, type[nn.Module]] = {}
"""Parameter-free baselines, name -> class."""
_KINDS = {"predictor": MODELS, "baseline": BASELINES}

EMPTY = inspect.Parameter.empty
"""The default of an option without one (in :func:`model_options`)."""


def register_model(name: str, kind: str = "predictor"):
    """Class decorator: register the class under ``name`` as a ``"predictor"`` or a ``"baseline"``."""
    if kind not in _KINDS:
        raise ValueError(f"register_model kind must be one of {sorted(_KINDS)}, got {kind!r}")

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        for registry in _KINDS.values():
            if registry.get(name, cls) is not cls:
                raise ValueError(f"model name {name!r} is already registered to {registry[name].__qualname__}")
        _KINDS[kind][name] = cls
        return cls

    return decorate


def list_models(kind: str | None = None) -> list[str]:
    """Registered names, sorted: all of them, or those of one ``kind`` (``"predictor"``, ``"baseline"``)."""
    if kind is None:
        return sorted([*MODELS, *BASELINES])
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {sorted(_KINDS)}, got {kind!r}")
    return sorted(_KINDS[kind])


def _registered() -> str:
    return f"predictors {sorted(MODELS)}, baselines {sorted(BASELINES)}"


def _lookup(name: str) -> type[nn.Module]:
    if name in MODELS:
        return MODELS[name]
    if name in BASELINES:
        return BASELINES[name]
    raise ValueError(f"unknown model {name!r} (model.model); registered: {_registered()}")


def _signature_options(cls: type) -> dict[str, tuple[Any, Any]]:
    """Constructor options of ``cls`` and, where its ``__init__`` takes ``**kwargs``, of the next class in
    its MRO that defines one (the one ``super().__init__(**kwargs)`` passes them to), and so on."""
    options: dict[str, tuple[Any, Any]] = {}
    for klass in cls.__mro__:
        if klass is nn.Module or klass is object:
            break
        if "__init__" not in vars(klass):
            continue
        init = vars(klass)["__init__"]
        hints = typing.get_type_hints(init)
        more = False
        for p in list(inspect.signature(init).parameters.values())[1:]:  # without self
            if p.kind is p.VAR_KEYWORD:
                more = True
            elif p.kind is not p.VAR_POSITIONAL:
                options.setdefault(p.name, (hints.get(p.name, Any), p.default))
        if not more:
            break
    return options


def model_options(name: str) -> dict[str, tuple[Any, Any]]:
    """The options of model ``name``: ``{option: (annotation, default)}``, its own first, then the shared
    ones of :class:`~framecast.models.base.Predictor`; ``default`` is :data:`EMPTY` where there is none.
    Baselines have none (``{}``)."""
    cls = _lookup(name)
    return {} if name in BASELINES else _signature_options(cls)


def shared_options() -> dict[str, tuple[Any, Any]]:
    """The options every predictor takes (those of :class:`~framecast.models.base.Predictor`), set as
    ``model.<name>`` in a config."""
    from framecast.models.base import Predictor

    return _signature_options(Predictor)


def type_name(annotation: Any) -> str:
    """``int``, ``int | list[int]``, ``Literal['a', 'b']``, ... as written in a signature."""
    if annotation is Any:
        return "any"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "").replace("NoneType", "None")


def matches(value: Any, annotation: Any) -> bool:
    """Whether ``value`` is of type ``annotation``, for the annotations options use: ``bool``, ``int``,
    ``float`` (an int is a float too; a bool is neither), ``str``, ``list[...]``, ``tuple[...]``,
    ``Literal[...]``, unions and ``Optional``. Annotations it does not know pass."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any or annotation is EMPTY:
        return True
    if annotation is None or annotation is type(None):
        return value is None
    if origin is Union or origin is types.UnionType:
        return any(matches(value, a) for a in args)
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return False
        if not args:
            return True
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args))
        return all(matches(v, args[0]) for v in value)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if isinstance(annotation, type) and origin is None:
        return isinstance(value, annotation)
    return True


def _describe(options: dict[str, tuple[Any, Any]]) -> str:
    if not options:
        return "none"
    return ", ".join(
        f"{k} ({type_name(a)}{'' if d is EMPTY else f', default {d!r}'})" for k, (a, d) in options.items()
    )


def check_options(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """Check ``options`` of model ``name`` by name and type; return those its constructor takes (for a
    baseline: none, the shared predictor options being ignored). Raises ``ValueError`` naming the field."""
    _lookup(name)
    shared = shared_options()
    valid = model_options(name)
    for key, value in options.items():
        field = f"model.{key}" if key in shared else f"model.model_options.{key}"
        if name in BASELINES:
            if key not in shared:
                raise ValueError(f"{field}: {name} is a baseline and takes no options, got {key!r}")
            continue
        if key not in valid:
            raise ValueError(f"{field}: {name} takes no option {key!r}; its options are: {_describe(valid)}")
        annotation = valid[key][0]
        if not matches(value, annotation):
            raise ValueError(
                f"{field}: {name} option {key!r} must be {type_name(annotation)}, "
                f"got {value!r} ({type(value).__name__})"
            )
    return {} if name in BASELINES else dict(options)


def build_model(name: str, **options) -> nn.Module:
    """Build the registered predictor or baseline ``name``; ``options`` go to a predictor's constructor
    after :func:`check_options`."""
    cls = _lookup(name)
    return cls(**check_options(name, options))
