"""Settings fields that describe themselves: one declaration gives a dataclass field its default, its check, its
command-line option and its app widget.

A settings dataclass declares each field with :func:`option` (default, one-line help, type, bounds, choices, flag,
widget label and range). Then

* :func:`check_options` validates and normalises an instance (a one-line ``ValueError`` naming the flag and the fix),
  so ``__post_init__`` of every settings class is one call;
* :func:`add_options` adds the fields as ``argparse`` options (defaults and choices in the help come from the field)
  and :func:`options_from_namespace` builds the instance back from the parsed namespace;
* :func:`options_of` lists the :class:`Option` records, which the app turns into widgets (``webapp/widgets.py``).

Modelled on scikit-learn's parameter constraints (``_param_validation``) and ``dataclasses.field(metadata=...)``.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Union

__all__ = ["Option", "option", "same_as", "options_of", "option_named", "check_options", "add_options",
           "options_from_namespace", "default_help"]

Choices = Union[Sequence[Any], Callable[[], Sequence[Any]], None]


@dataclass(frozen=True)
class Option:
    """What a settings field says about itself (see :func:`option`)."""

    name: str
    default: Any
    help: str
    kind: type
    flag: Optional[str]
    dest: str
    lo: Optional[float] = None
    hi: Optional[float] = None
    hi_open: bool = False
    choices_source: Choices = None
    optional: bool = False
    label: str = ""
    ui: Optional[dict] = None
    off_flag: Optional[str] = None
    off_help: str = ""
    required: bool = False

    @property
    def choices(self) -> Optional[tuple]:
        """The allowed values (a registry is read when asked, so that later registrations count)."""
        src = self.choices_source
        if src is None:
            return None
        return tuple(src() if callable(src) else src)

    @property
    def where(self) -> str:
        """How the user names this setting: its flag, else its field name."""
        return self.flag or self.name

    def range_text(self) -> str:
        lo = "−∞" if self.lo is None else f"{self.lo:g}"
        hi = "∞" if self.hi is None else f"{self.hi:g}"
        return f"[{lo}, {hi}{')' if self.hi_open else ']'}"

    def convert(self, value: Any) -> Any:
        """``value`` as this option's type (text from the command line included); one-line ValueError otherwise."""
        if value is None:
            if self.optional:
                return None
            raise ValueError(f"{self.where} needs a value (got None)")
        if self.kind is bool:
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.strip().lower() in ("true", "1", "yes")
            if isinstance(value, (bool, int)) or type(value).__name__.startswith("bool"):
                return bool(value)
            raise ValueError(f"{self.where} must be true or false (got {value!r})")
        if self.kind is int:
            try:
                out = int(value)
                ok = not isinstance(value, bool) and float(value) == out
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"{self.where} must be an integer (got {value!r})")
            return out
        if self.kind is float:
            try:
                out = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"{self.where} must be a number (got {value!r})") from None
            if math.isnan(out):
                raise ValueError(f"{self.where} must be a number (got {value!r})")
            return out
        if self.kind is str:
            return str(value)
        if self.kind is list:  # numbers: a list, or comma-separated text
            items = [t for t in value.split(",") if t.strip()] if isinstance(value, str) else list(value)
            try:
                return [float(v) for v in items]
            except (TypeError, ValueError):
                raise ValueError(f"{self.where} takes comma-separated numbers (got {value!r})") from None
        return value

    def check(self, value: Any) -> Any:
        """The converted value, checked against the bounds and choices; one-line ValueError naming the fix."""
        value = self.convert(value)
        if value is None:
            return None
        if self.kind is list:
            if not value:
                raise ValueError(f"{self.where} needs at least one value")
            for v in value:
                self._in_range(v)
        if self.kind in (int, float):
            self._in_range(value)
        choices = self.choices
        if choices is not None and value not in choices:
            what = self.label or self.name
            raise ValueError(f"unknown {what} {value!r} ({self.where}); choose one of: "
                             f"{', '.join(map(str, choices))}")
        return value

    def _in_range(self, value: float) -> None:
        low = self.lo is not None and value < self.lo
        high = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        if low or high:
            if self.hi is None:
                raise ValueError(f"{self.where} must be ≥ {self.lo:g} (got {value:g})")
            raise ValueError(f"{self.where} {value:g} outside {self.range_text()}; {self.help_hint()}")

    def help_hint(self) -> str:
        return f"give a value in {self.range_text()}" + (f" (default {self.default:g})"
                                                        if isinstance(self.default, (int, float)) and
                                                        not isinstance(self.default, bool) else "")


#: the keywords :func:`option` takes besides ``default``, ``help`` and ``default_factory``, with their defaults
OPTION_KEYWORDS: dict = {"kind": None, "flag": "", "dest": None, "lo": None, "hi": None, "hi_open": False,
                         "choices": None, "optional": False, "label": "", "ui": None, "off_flag": None,
                         "off_help": "", "required": False}


def option(default: Any = dataclasses.MISSING, help: str = "", *, default_factory: Any = dataclasses.MISSING,
           **spec: Any) -> Any:
    """A dataclass field that describes itself (``spec``: the keywords of :data:`OPTION_KEYWORDS`).

    ``flag``: the command-line option ("" = ``--`` + the dest with dashes; None = not on the command line).
    ``dest``: the name of the setting in flat records and parsed namespaces (default: the field name).
    ``kind``: int / float / str / bool / list / dict (default: the default's type). ``lo``, ``hi`` (``hi_open``: hi
    excluded) and ``choices`` (a sequence or a function returning one: a registry) bound the value; ``optional``
    allows None (``required``: the command line must give it). ``label`` and ``ui`` (``lo``, ``hi``, ``step``) are
    for the app's widget. A bool option with ``off_flag`` gets a second flag that sets it False (``--gd-plain``
    next to ``--gd-precondition``). ``kind=list``: numbers, given as a list or as comma-separated text.
    """
    unknown = sorted(set(spec) - set(OPTION_KEYWORDS))
    if unknown:
        raise TypeError(f"option() got unknown keyword(s) {', '.join(unknown)}; known: {', '.join(OPTION_KEYWORDS)}")
    meta = {"help": help, **OPTION_KEYWORDS, **spec}
    sample = default_factory() if default_factory is not dataclasses.MISSING else default
    meta["kind"] = meta["kind"] or (type(sample) if sample is not None and sample is not dataclasses.MISSING else str)
    meta["optional"] = meta["optional"] or default is None
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={"option": meta})
    return dataclasses.field(default=default, metadata={"option": meta})


def same_as(cls: Any, name: str, **changes: Any) -> Any:
    """A field declared like setting ``name`` of ``cls`` (the same help, bounds, choices, flag), with ``changes``
    (e.g. another ``default``): one declaration serves two settings classes."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    meta = {**f.metadata["option"], **{k: v for k, v in changes.items() if k != "default"}}
    default = changes.get("default", f.default)
    return dataclasses.field(default=default, metadata={"option": meta})


def _record(f: dataclasses.Field) -> Option:
    m = f.metadata["option"]
    default = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
    dest = m["dest"] or f.name
    flag = m["flag"]
    if flag == "":
        flag = "--" + dest.replace("_", "-").lower()
    return Option(name=f.name, default=default, help=m["help"], kind=m["kind"], flag=flag, dest=dest, lo=m["lo"],
                  hi=m["hi"], hi_open=m["hi_open"], choices_source=m["choices"], optional=m["optional"],
                  label=m["label"] or f.name.replace("_", " "), ui=m["ui"], off_flag=m["off_flag"],
                  off_help=m["off_help"], required=m["required"])


def options_of(cls_or_obj: Any) -> list[Option]:
    """The :class:`Option` of every self-describing field of a settings dataclass (or instance), in field order."""
    return [_record(f) for f in dataclasses.fields(cls_or_obj) if "option" in f.metadata]


def option_named(cls_or_obj: Any, name: str) -> Option:
    """The :class:`Option` of field ``name`` (KeyError naming the known fields otherwise)."""
    for o in options_of(cls_or_obj):
        if o.name == name or o.dest == name:
            return o
    raise KeyError(f"{type(cls_or_obj).__name__ if not isinstance(cls_or_obj, type) else cls_or_obj.__name__} has "
                   f"no setting {name!r}")


def check_options(obj: Any) -> None:
    """Check every self-describing field of ``obj`` and store its normalised value (works on frozen dataclasses)."""
    for o in options_of(obj):
        object.__setattr__(obj, o.name, o.check(getattr(obj, o.name)))


def default_help(o: Option) -> str:
    """The help text of ``o`` with its choices and default, as the command line and the widgets show it."""
    text = o.help
    choices = o.choices
    if choices is not None and len(choices) <= 12:
        text += f" ({', '.join(map(str, choices))})"
    if isinstance(o.default, list):
        text += f"; default {','.join(f'{v:g}' for v in o.default)}"
    elif o.kind is not bool and o.default is not None and o.default != {}:
        text += f"; default {o.default:g}" if isinstance(o.default, float) else f"; default {o.default}"
    return text


def add_options(parser: argparse.ArgumentParser, cls: Any, skip: Sequence[str] = (),
                only: Optional[Sequence[str]] = None, defaults: Optional[dict] = None,
                required: Sequence[str] = (), argparse_choices: bool = False) -> None:
    """Add the command-line fields of ``cls`` (all, or ``only`` these; not those in ``skip``; by field name or
    dest) to ``parser``. Values stay text here and are checked when the class is built
    (:func:`options_from_namespace`), so a bad value is one error line naming the flag. ``defaults``: this
    command's own defaults, by dest; ``required``: dests this command must be given; ``argparse_choices``: let
    argparse refuse a value outside a fixed list of choices (for a parser whose ``error`` prints one line)."""
    defaults = defaults or {}
    for o in options_of(cls):
        named = {o.name, o.dest}
        if o.flag is None or named & set(skip) or (only is not None and not named & set(only)):
            continue
        default = defaults.get(o.dest, o.default)
        shown = dataclasses.replace(o, default=default)
        if o.kind is bool:
            parser.add_argument(o.flag, dest=o.dest, action="store_true", default=default,
                                help=default_help(shown) + ("; the default" if default else ""))
            if o.off_flag:
                parser.add_argument(o.off_flag, dest=o.dest, action="store_false", help=o.off_help)
            continue
        text = ",".join(f"{v:g}" for v in default) if isinstance(default, list) else default
        static = argparse_choices and o.kind is str and o.choices_source is not None and \
            not callable(o.choices_source)
        parser.add_argument(o.flag, dest=o.dest, default=None if default is None else str(text),
                            choices=list(o.choices) if static else None,
                            required=o.required or o.dest in required,
                            metavar=o.flag.lstrip("-").upper().replace("-", "_"), help=default_help(shown))


def options_from_namespace(cls: Any, ns: argparse.Namespace, **override: Any) -> Any:
    """``cls(...)`` from the parsed ``ns`` (by dest; ``override`` wins and may also give fields that are not
    options, e.g. a nested section); checked by the class itself."""
    kwargs = dict(override)
    for o in options_of(cls):
        if o.dest in override:
            kwargs[o.name] = kwargs.pop(o.dest)
        elif o.flag is not None and hasattr(ns, o.dest):
            kwargs[o.name] = getattr(ns, o.dest)
    return cls(**kwargs)
