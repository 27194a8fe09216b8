"""The language settings are declared in: typed dataclass fields with metadata.

A setting is a field of a frozen dataclass, declared with :func:`setting`: its
annotation is its type, and a :class:`Meta` in ``field.metadata["bovw"]`` holds the
rest (help, flag, choices, unit, range, what "auto" stands for). This module knows
nothing of bovw's own settings (those are :mod:`bovw.config`); it lists the settings
of a dataclass (:func:`catalogue`), checks one value against its declaration
(:func:`check_value`, the one validation of a single setting) and words defaults
(:func:`default_text`) for ``--help`` and the README.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import numpy as np

from .errors import BadInputError


class ConfigError(BadInputError):
    """A setting has the wrong type or is out of range, or a config file is malformed.

    Parameters
    ----------
    message : str
        One sentence; when it is about one setting it starts ``"Setting <name>"``.
    setting : str, optional
        The dotted name of that setting (``"codebook.words"``), so that the command
        line can add the flag that sets it.
    """

    def __init__(self, message: str, *, setting: str | None = None):
        super().__init__(message)
        self.setting = setting


# META
# --------------------------------------------------------------------------- metadata


class Range(NamedTuple):
    """Allowed values of a number setting (of each element, for a list)."""

    low: float
    high: float | None = None
    #: Whether ``low`` itself is excluded (a strictly positive float).
    low_open: bool = False


class Auto(NamedTuple):
    """What a setting left at its default (``None`` or ``"auto"``) stands for.

    The value is looked up in ``values`` by the value of the setting ``by``;
    :meth:`bovw.config.Config.validate` resolves it, and nothing else does.
    """

    by: str
    values: Mapping[str, Any]


@dataclass(frozen=True)
class Meta:
    """What the command line, the README and validation know about one setting.

    Attributes
    ----------
    help : str
        One sentence, without the default (``--help`` and the README add it).
    flag : str or None
        The command-line option (``"--words"``; a boolean's ``"--mirror"`` also gets
        ``"--no-mirror"``), or None for a setting only a config file sets.
    choices : tuple of str, optional
        The allowed values of a string setting.
    unit : str, optional
        What a number counts (``"px"``); the command line shows it as the metavar.
    range : Range, optional
        The allowed values of a number setting (of each element, for a list).
    nonempty : bool
        A string or list that must not be empty.
    auto : Auto, optional
        The setting's default is resolved from another setting.
    encodings : tuple of str, optional
        The encodings the setting acts on (None: all); the command line warns when its
        flag is given with another encoding, where it would do nothing.
    """

    help: str
    flag: str | None = None
    choices: tuple[str, ...] | None = None
    unit: str | None = None
    range: Range | None = None
    nonempty: bool = False
    auto: Auto | None = None
    encodings: tuple[str, ...] | None = None


def setting(default: Any, help: str, **meta: Any) -> Any:
    """A settings dataclass field with its :class:`Meta` (keyword arguments as there)."""
    return field(default=default, metadata={"bovw": Meta(help=help, **meta)})


# CAT
# --------------------------------------------------------------------------- the catalogue


class SettingInfo(NamedTuple):
    """One setting, as :func:`settings` lists it."""

    #: Dotted name: ``"seed"``, ``"codebook.words"``.
    name: str
    #: The annotation, resolved (``int | None``, ``tuple[int, ...]``).
    hint: Any
    default: Any
    meta: Meta


def catalogue(root: type) -> tuple[SettingInfo, ...]:
    """Every setting of the dataclass ``root``, in declaration order, with its metadata.

    ``root``'s fields are settings (``"seed"``) or sections: dataclasses whose fields
    are settings (``"codebook.words"``). Every setting must be declared with
    :func:`setting`.
    """

    def info(name: str, hint: Any, f: dataclasses.Field) -> SettingInfo:
        if "bovw" not in f.metadata:
            raise TypeError(f"setting {name} is not declared with setting()")
        return SettingInfo(name, hint, f.default, f.metadata["bovw"])

    out = []
    for f in fields(root):
        hint = field_types(root)[f.name]
        if not dataclasses.is_dataclass(hint):
            out.append(info(f.name, hint, f))
            continue
        section = field_types(hint)
        out += [info(f"{f.name}.{g.name}", section[g.name], g) for g in fields(hint)]
    return tuple(out)


def default_text(info: SettingInfo) -> str:
    """A setting's default in words, for ``--help`` and the README.

    ``"4,6,8,10"``, ``"on"``, or, for an ``"auto"`` setting, what it stands for:
    ``"auto: 1,2,4 for hist, soft; 1,2x2,3x1 for vlad, fisher"``. Empty for an
    optional setting left unset (its help says what unset means).
    """
    auto = info.meta.auto
    if auto is None:
        return _plain(info.default)
    by_value: dict[Any, list[str]] = {}
    for key, value in auto.values.items():
        by_value.setdefault(value, []).append(key)
    return "auto: " + "; ".join(f"{_plain(v)} for {', '.join(k)}" for v, k in by_value.items())


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(_plain(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# --------------------------------------------------------------------------- validation


def check_value(info: SettingInfo, value: Any, source: str | None = None) -> Any:
    """``value`` checked and converted for the setting ``info``, else a :class:`ConfigError`.

    The one check of a single setting: its type from the annotation (see
    :func:`check_type`), then its :class:`Meta`: emptiness, choices, range. An
    optional setting left unset (None) passes. Checks between settings are
    :meth:`bovw.config.Config.validate`'s.

    Parameters
    ----------
    info : SettingInfo
        The setting, from :func:`catalogue`.
    value : object
        As given (from TOML, a flag or the Python API).
    source : str, optional
        Where the value comes from, for the message (a file name).

    Returns
    -------
    object
        ``value`` in the annotated type (an int for a float setting becomes a float,
        a list for a tuple setting becomes a tuple).
    """
    name = info.name
    value = check_type(name, info.hint, value, source)
    meta = info.meta
    where = f" in {source}" if source else ""
    if value is None:
        return value
    if meta.nonempty and len(value) == 0:
        what = "list at least one value" if isinstance(value, tuple) else "not be empty"
        raise ConfigError(f"Setting {name}{where} must {what}.", setting=name)
    if meta.choices is not None and value not in meta.choices:
        raise ConfigError(
            f"Setting {name}{where} must be one of {', '.join(meta.choices)}, not {show(value)}.",
            setting=name,
        )
    if meta.range is not None:
        _in_range(name + where, value, meta.range, setting=name)
    return value


def _in_range(label: str, value: Any, bounds: Range, *, setting: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` (each element of a tuple) is in ``bounds``."""
    values = value if isinstance(value, tuple) else (value,)
    low, high, low_open = bounds
    if all((v > low if low_open else v >= low) and (high is None or v <= high) for v in values):
        return
    if low_open:
        allowed = f"greater than {low}" + (f" and at most {high}" if high is not None else "")
    else:
        allowed = f"between {low} and {high}" if high is not None else f"at least {low}"
    what = f"a list of values {allowed}" if isinstance(value, tuple) else allowed
    raise ConfigError(f"Setting {label} must be {what}, not {show(value)}.", setting=setting)


# --------------------------------------------------------------------------- types


class _Mismatch(Exception):
    """A value that does not fit a field's annotation (turned into a ConfigError)."""


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The annotation of each field of a settings dataclass, resolved from its string."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


_NAMES = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
_PLURALS = {bool: "booleans", int: "integers", float: "finite numbers", str: "strings"}


def _describe(hint: Any) -> str:
    """What a value of the annotated type is, in words (``"a list of integers"``)."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        inner = [a for a in args if a is not type(None)]
        unset = " (or left unset)" if len(inner) < len(args) else ""
        return " or ".join(_describe(a) for a in inner) + unset
    if typing.get_origin(hint) is tuple:
        return "a list of " + _PLURALS.get(args[0], f"{args[0].__name__} values")
    return _NAMES.get(hint, f"a {getattr(hint, '__name__', hint)}")


def _convert(hint: Any, value: Any) -> Any:
    """``value`` as the annotated type, or :class:`_Mismatch`.

    bool is not taken for a number (TOML's ``true`` is not 1), numbers must be
    finite, an integer is taken for a float, and a list (TOML's arrays) for a
    ``tuple[T, ...]`` whose every element is converted to ``T``.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return _convert(arg, value)
                except _Mismatch:
                    pass
        raise _Mismatch
    if origin is tuple:
        if len(args) != 2 or args[1] is not Ellipsis:
            raise TypeError(f"settings of type {hint} are not supported; use tuple[T, ...]")
        if not isinstance(value, list | tuple):
            raise _Mismatch
        return tuple(_convert(args[0], v) for v in value)
    if origin is not None:
        raise TypeError(f"settings of type {hint} are not supported")
    is_bool = isinstance(value, bool | np.bool_)
    if hint is bool:
        if is_bool:
            return bool(value)
    elif hint is int:
        if isinstance(value, numbers.Integral) and not is_bool:
            return int(value)
    elif hint is float:
        if isinstance(value, numbers.Real) and not is_bool:
            try:
                number = float(value)
            except OverflowError:  # an integer beyond float's range
                raise _Mismatch from None
            if math.isfinite(number):
                return number
    elif hint is str:
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if isinstance(value, str):
            return value
    elif isinstance(hint, type) and isinstance(value, hint):
        return value
    raise _Mismatch


def check_type(name: str, hint: Any, value: Any, source: str | None = None) -> Any:
    """``value`` converted to the annotated type ``hint``, else a :class:`ConfigError`.

    This is where every setting's type is checked, from the dataclass annotations,
    so that a new field is checked without more code.
    """
    try:
        return _convert(hint, value)
    except _Mismatch:
        where = f" in {source}" if source else ""
        raise ConfigError(
            f"Setting {name}{where} must be {_describe(hint)}, not {show(value)}.", setting=name
        ) from None


def show(value: Any, limit: int = 60) -> str:
    """A bad value as a short, TOML-like string for a message."""
    if isinstance(value, bool | np.bool_):
        text = "true" if value else "false"
    elif isinstance(value, int) and value.bit_length() > 256:
        # str() of a 4,300-digit integer raises; its size is what matters anyway.
        text = f"an integer of {value.bit_length()} bits"
    elif isinstance(value, str):
        text = '"' + value + '"'
    elif isinstance(value, list | tuple):
        text = "[" + ", ".join(show(v, limit) for v in value[:8])
        text += ", ...]" if len(value) > 8 else "]"
    else:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
