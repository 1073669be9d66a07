"""Every tunable declared once: a dataclass field is the declaration, options come from it.

A field declared with `option(default, help, env=..., min=...)` (or any field whose metadata has
"help") is a tunable: its click option (`click_options`) or argparse argument (`add_arguments`),
its environment variable (`env_values`, `from_env`) and its --help line are generated from the
field, as TRL's HfArgumentParser does for its config dataclasses. So a default, a bound or a
help text is written in one place.

    @dataclass
    class Settings:
        batch_size: int = option(8, "Tasks per model batch.", env="ILLUME_BATCH_SIZE", min=1)

    @click.command()
    @click_options(Settings)
    def main(**params):
        settings = take(Settings, params)   # params left over: the command's own options

Names: --<field-name-with-dashes> (metadata "flag" overrides it), the parameter is the flag with
underscores; a bool is --x/--no-x. Types come from the annotation (int, float, str, bool, Path,
tuple[float, ...] as "0.3,0.8", each optionally "| None"), or metadata "parse" (text -> value).
Light to import: no torch, nothing of the project but the error type.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import click

from illume.errors import IllumeError

MISSING = dataclasses.MISSING
_SCALARS: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool, "Path": Path}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def option(default: Any = MISSING, help: str = "", *, env: str | None = None, flag: str | None = None,
           min: float | None = None, max: float | None = None, min_open: bool = False,
           choices: Iterable[Any] | None = None, parse: Callable[[str], Any] | None = None,
           default_factory: Any = MISSING, **field_kwargs: Any) -> Any:
    """A dataclass field that is a tunable: its default, its help, and where given its environment
    variable, option name, bounds (min/max, min_open: above min), choices or text parser."""
    if not help:
        raise TypeError("a tunable needs its help text")
    metadata = {"help": help, "env": env, "flag": flag, "min": min, "max": max, "min_open": min_open or None,
                "choices": tuple(choices) if choices is not None else None, "parse": parse}
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={k: v for k, v in metadata.items() if v is not None}, **field_kwargs)


def declared(cls: type, only: Iterable[str] = (), skip: Iterable[str] = ()) -> list[dataclasses.Field]:
    """The tunables of a dataclass (fields with help metadata), in declaration order; `only` picks some."""
    only, skip = tuple(only), tuple(skip)
    fields = {f.name: f for f in dataclasses.fields(cls) if "help" in f.metadata}
    unknown = [name for name in only + skip if name not in fields]
    if unknown:
        raise TypeError(f"{cls.__name__} declares no tunable {', '.join(unknown)}")
    return [f for name, f in fields.items() if (not only or name in only) and name not in skip]


def flag(f: dataclasses.Field) -> str:
    """The option's name without dashes: metadata "flag", else the field name with dashes."""
    return f.metadata.get("flag") or f.name.replace("_", "-")


def param(f: dataclasses.Field) -> str:
    """The name a command receives the value under (the flag with underscores)."""
    return flag(f).replace("-", "_")


def _kind(f: dataclasses.Field) -> tuple[type, int | None]:
    """(scalar type, number of comma-separated items: None for one value, 0 for any number)."""
    text = (f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))).replace(" ", "")
    text = re.sub(r"^Optional\[(.*)\]$", r"\1", text)
    text = "|".join(part for part in text.split("|") if part != "None")
    if "parse" in f.metadata:
        return str, None
    if text in _SCALARS:
        return _SCALARS[text], None
    items = re.fullmatch(r"tuple\[(\w+)((?:,\w+)*)(,\.\.\.)?\]", text)
    if items and items[1] in _SCALARS and (not items[2] or len(set(items[2].split(",")[1:]) | {items[1]}) == 1):
        return _SCALARS[items[1]], 0 if items[3] else 1 + items[2].count(",")
    raise TypeError(f"field {f.name}: {f.type!r} is not a type options know; give its metadata a parse function")


def describe(f: dataclasses.Field) -> str:
    """What a valid value of the field looks like, for messages."""
    if "choices" in f.metadata:
        return "one of " + ", ".join(map(str, f.metadata["choices"]))
    if "parse" in f.metadata:
        return "a valid value"
    scalar, count = _kind(f)
    if scalar is bool:
        return "true or false (1/0, yes/no, on/off)"
    noun, plural = {int: ("an integer", "integers"), float: ("a finite number", "finite numbers"),
                    str: ("a text", "texts"), Path: ("a path", "paths")}[scalar]
    low, high = f.metadata.get("min"), f.metadata.get("max")
    bounds = ([f"above {low:g}" if f.metadata.get("min_open") else f"of at least {low:g}"] if low is not None
              else []) + ([f"at most {high:g}"] if high is not None else [])
    bound = " " + " and ".join(bounds) if bounds else ""
    if count is None:
        return noun + bound
    many = "comma-separated" if count == 0 else f"{count} comma-separated"
    return f"{many} {plural}" + (f", each{bound.replace(' of at least', ' at least')}" if bound else "")


def _scalar(scalar: type, text: str) -> Any:
    text = text.strip()
    if scalar is bool:
        if text.lower() not in _TRUE + _FALSE:
            raise ValueError(text)
        return text.lower() in _TRUE
    return scalar(text)


def _check(f: dataclasses.Field, value: Any) -> Any:
    """The value, if finite and within the field's bounds and choices; else ValueError."""
    values = value if isinstance(value, tuple) else (value,)
    low, high, open_low = f.metadata.get("min"), f.metadata.get("max"), f.metadata.get("min_open")
    for one in values:
        if isinstance(one, float) and not math.isfinite(one):  # NaN passes every bound
            raise ValueError(one)
        if isinstance(one, (int, float)) and not isinstance(one, bool) and (
                (low is not None and (one <= low if open_low else one < low)) or (high is not None and one > high)):
            raise ValueError(one)
        if "choices" in f.metadata and one not in f.metadata["choices"]:
            raise ValueError(one)
    return value


def convert(f: dataclasses.Field, text: str) -> Any:
    """The field's value written as `text` (an option or an environment variable); ValueError if it is none."""
    if "parse" in f.metadata:
        return f.metadata["parse"](text)
    scalar, count = _kind(f)
    if count is None:
        return _check(f, _scalar(scalar, text))
    value = tuple(_scalar(scalar, t) for t in text.split(",") if t.strip())
    if not value or (count and len(value) != count):
        raise ValueError(text)
    return _check(f, value)


def to_text(value: Any) -> Any:
    """A default as its option text (tuples and lists comma-separated, as they are typed)."""
    return ",".join(str(v) for v in value) if isinstance(value, (tuple, list)) else value


def field_default(f: dataclasses.Field, defaults: Any = None) -> Any:
    """The default of a tunable: from `defaults` (an instance or a mapping) where it names the field,
    else the field's own (MISSING: required)."""
    if isinstance(defaults, Mapping) and f.name in defaults:
        return defaults[f.name]
    if defaults is not None and not isinstance(defaults, Mapping) and hasattr(defaults, f.name):
        return getattr(defaults, f.name)
    if f.default_factory is not MISSING:
        return f.default_factory()
    return f.default


# -- environment variables ----------------------------------------------------------------------
def env_values(cls: type, environ: Mapping[str, str] | None = None, only: Iterable[str] = (),
               skip: Iterable[str] = ()) -> dict[str, Any]:
    """The tunables of `cls` set in the environment (empty counts as unset), by field name;
    IllumeError naming the variable for a value that is not valid."""
    environ = os.environ if environ is None else environ
    values = {}
    for f in declared(cls, only, skip):
        variable = f.metadata.get("env")
        raw = environ.get(variable) if variable else None
        if raw in (None, ""):
            continue
        try:
            values[f.name] = convert(f, raw)
        except (ValueError, IllumeError) as exc:
            why = f" ({exc.what})" if isinstance(exc, IllumeError) else ""
            default = field_default(f)
            raise IllumeError(f"{variable}={raw!r} is not {describe(f)}{why}",
                              f"Set {variable} to {describe(f)}: {f.metadata['help'].rstrip('.')}"
                              + ("" if default is MISSING else "; or unset it"
                                 + (f" for the default ({to_text(default)})" if default is not None else ""))
                              + ".") from None
    return values


def from_env(cls: type, environ: Mapping[str, str] | None = None, **given: Any) -> Any:
    """An instance of `cls`: `given` values, else the environment's, else the field defaults."""
    return cls(**{**env_values(cls, environ), **given})


def take(cls: type, params: dict[str, Any], **given: Any) -> Any:
    """An instance of `cls` from a command's parameters: its tunables are popped out of `params`
    (what is left is the command's own), `given` adds the fields that are not options."""
    values = {f.name: params.pop(param(f)) for f in declared(cls) if param(f) in params}
    return cls(**values, **given)


# -- click ----------------------------------------------------------------------------------------
class _Text(click.ParamType):
    """A field's value from its text (lists, parsed values): bad text is a usage error naming the option."""

    def __init__(self, f: dataclasses.Field) -> None:
        self.field, self.name = f, "list" if _kind(f)[1] is not None else "text"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return convert(self.field, value)
        except IllumeError as exc:
            self.fail(f"{value!r}: {exc.what}", param, ctx)
        except ValueError:
            self.fail(f"{value!r} is not {describe(self.field)}", param, ctx)


class _Finite:
    """A click float type that refuses NaN and infinities (NaN passes FloatRange's bounds)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class _FiniteFloat(_Finite, click.types.FloatParamType):
    pass


class _FiniteFloatRange(_Finite, click.FloatRange):
    pass


def _click_type(f: dataclasses.Field) -> Any:
    scalar, count = _kind(f)
    low, high = f.metadata.get("min"), f.metadata.get("max")
    if scalar is bool and count is None:
        return None
    if "choices" in f.metadata and count is None:
        return click.Choice(f.metadata["choices"], case_sensitive=False)  # gives the declared spelling
    if count is not None or "parse" in f.metadata:
        return _Text(f)
    if scalar in (int, float) and (low is not None or high is not None):
        span = click.IntRange if scalar is int else _FiniteFloatRange
        return span(low, high, min_open=bool(f.metadata.get("min_open")))
    return click.Path(path_type=Path) if scalar is Path else _FiniteFloat() if scalar is float else scalar


def click_option(f: dataclasses.Field, defaults: Any = None, into: Callable[[str], Callable] | None = None):
    """The click option of one tunable; `into(field name)`: a callback that keeps the value
    (the option is then not passed to the command)."""
    default = field_default(f, defaults)
    boolean = _kind(f) == (bool, None)
    declarations = [f"--{flag(f)}/--no-{flag(f)}" if boolean else f"--{flag(f)}", param(f)]
    extra: dict[str, Any] = {"callback": into(f.name), "expose_value": False} if into else {}
    if f.metadata.get("env"):
        extra.update(envvar=f.metadata["env"], show_envvar=True)
    return click.option(*declarations, type=_click_type(f), required=default is MISSING,
                        default=None if default is MISSING else to_text(default),
                        show_default=default not in (MISSING, None), help=f.metadata["help"], **extra)


def click_options(cls: type, only: Iterable[str] = (), skip: Iterable[str] = (), *, defaults: Any = None,
                  into: Callable[[str], Callable] | None = None):
    """A decorator adding the click options of `cls`'s tunables (`only` some, or all but `skip`), in
    declaration order; `defaults` (an instance or mapping) overrides field defaults."""
    made = [click_option(f, defaults, into) for f in declared(cls, only, skip)]

    def apply(command):
        for made_option in reversed(made):
            command = made_option(command)
        return command
    return apply


# -- argparse -------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser, cls: type, only: Iterable[str] = (), skip: Iterable[str] = (),
                  defaults: Any = None) -> argparse.ArgumentParser:
    """The same options for argparse (commands that must accept what a launcher adds, e.g. --local_rank)."""
    for f in declared(cls, only, skip):
        default = field_default(f, defaults)
        kwargs: dict[str, Any] = {"dest": param(f), "help": f.metadata["help"].replace("%", "%%")}
        if _kind(f) == (bool, None):
            kwargs.update(action=argparse.BooleanOptionalAction, default=default)
        else:
            kwargs.update(type=_argparse_type(f), required=default is MISSING)
            if default is not MISSING:
                kwargs["default"] = default
            if "choices" in f.metadata:
                kwargs["metavar"] = "{" + ",".join(map(str, f.metadata["choices"])) + "}"
        parser.add_argument(f"--{flag(f)}", **kwargs)
    return parser


def _argparse_type(f: dataclasses.Field) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return convert(f, text)
        except (ValueError, IllumeError):
            raise argparse.ArgumentTypeError(f"{text!r} is not {describe(f)}") from None
    parse.__name__ = f.name
    return parse


# -- the other way ------------------------------------------------------------------------------------
def as_arguments(instance: Any, only: Iterable[str] = (), skip: Iterable[str] = ()) -> list[str]:
    """The command line that gives a process these values (None: left out, the process's default),
    for a process whose options come from the same class (click_options or add_arguments)."""
    arguments = []
    for f in declared(type(instance), only, skip):
        value = getattr(instance, f.name)
        if value is None:
            continue
        if _kind(f) == (bool, None):
            arguments.append(f"--{flag(f)}" if value else f"--no-{flag(f)}")
        else:
            arguments += [f"--{flag(f)}", str(to_text(value))]
    return arguments
