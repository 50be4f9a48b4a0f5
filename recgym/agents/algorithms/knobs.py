"""What an algorithm's constructor takes (its knobs, up the class chain while each ``__init__``
passes ``**kwargs`` on) and whether a config's ``algorithm_kwargs`` fit them: names, types, the
knobs it needs, and settings that would not reach a parent class. ``Algorithm.from_config`` calls
:func:`check_knobs`; each failure is one line naming the class."""

from __future__ import annotations

import contextlib
import inspect
import types
import typing
from typing import Any, Literal

import numpy as np


def constructor_knobs(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword arguments ``cls(...)`` passes on to an ``__init__``: its own, then, while each
    ``__init__`` takes ``**kwargs``, those of the next one up the class chain. Annotations resolved."""
    knobs: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass) or klass is object:
            continue
        init = vars(klass)["__init__"]
        try:
            hints = typing.get_type_hints(init)
        except (NameError, TypeError, AttributeError, SyntaxError):  # such an annotation is not checked
            hints = {}
        params = list(inspect.signature(init).parameters.values())[1:]
        for p in params:
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in knobs:
                knobs[p.name] = p.replace(annotation=hints.get(p.name, p.annotation))
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return knobs


def check_knobs(cls: type, knobs: dict[str, inspect.Parameter], config: dict[str, Any],
                 given: dict[str, Any]) -> dict[str, Any]:
    """``given`` (``algorithm_kwargs``) are knobs of ``cls`` of their types; none it needs is missing;
    no setting of ``config`` that an ``__init__`` up the class chain reads is lost on the way.
    Returns ``given`` with a float knob's string that reads as a number (YAML's ``1e-5``) converted."""
    import difflib

    from recgym.agents.config import _coerce

    given = dict(given)
    for key, value in given.items():
        if key not in knobs:
            close = difflib.get_close_matches(key, knobs, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            own = [k for k in knobs if k not in config]
            read = [k for k in knobs if k in config]
            raise TypeError(f"{cls.__name__} has no knob {key!r}{hint}; its knobs: {', '.join(own) or 'none'}"
                            + (f"; config fields it reads: {', '.join(read)}" if read else ""))
        expected = _expected_type(knobs[key])
        if isinstance(value, str) and expected in (float, float | None):  # as the config's float fields
            with contextlib.suppress(TypeError, ValueError):
                given[key] = value = _coerce(value, expected, key)
        if expected is not None and not _fits(value, expected):
            raise TypeError(f"{cls.__name__}'s {key} must be {_describe(expected)}, got {value!r}")
    for key, p in knobs.items():
        if p.default is p.empty and key not in given and key not in config:
            raise TypeError(f"{cls.__name__} needs {key}: give it in algorithm_kwargs")
    for klass in cls.__mro__[1:]:
        if "__init__" not in vars(klass) or klass is object:
            continue
        for key, p in inspect.signature(vars(klass)["__init__"]).parameters.items():
            if key not in knobs and key in config and p.default is not p.empty and config[key] != p.default:
                raise TypeError(f"{cls.__name__}.__init__ takes no **kwargs, so {key} {config[key]!r} does not reach "
                                f"{klass.__name__}: accept **kwargs and pass them to super().__init__")
    return given


def _expected_type(p: inspect.Parameter) -> Any:
    """What a knob takes: its annotation, else the type of a bool or numeric default, else None."""
    if p.annotation is not p.empty and not isinstance(p.annotation, str):
        return p.annotation
    if isinstance(p.default, bool | int | float):
        return type(p.default)
    return None


def _fits(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of type ``hint`` (an int is a float; a bool is neither). Hints this
    cannot read accept anything."""
    import numbers

    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, option) for option in typing.get_args(hint))
    if origin is Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool | np.bool_)
    if hint is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if origin is not None:
        return not isinstance(origin, type) or isinstance(value, origin)
    return not isinstance(hint, type) or hint is Any or isinstance(value, hint)


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(option) for option in typing.get_args(hint))
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(hint)))
    names = {type(None): "null", bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))
