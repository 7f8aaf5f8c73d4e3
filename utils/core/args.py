"""Shared checks for the numeric and choice arguments of train/val/detect/export.

Each script's check_opts() calls these at the top of run(), so a bad flag from the CLI and a bad keyword from Python
fail the same way: one UserError line ("--epochs 0: must be >= 1 — ...") before any data scan, model build or run
folder. Arguments are named by their Python keyword (batch_size) and reported as the CLI flag (--batch-size).
"""

from __future__ import annotations

import argparse
import inspect
import math
import numbers
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

from utils.core.errors import EXIT_USER_ERROR, UserError

MIN_IMGSZ = 32  # the smallest stride of the detection grids: anything smaller has no output cell
SIZE_MULTIPLE = 32  # train and val need input sizes the P5 grid divides; detect/export round up instead


class ArgParser(argparse.ArgumentParser):
    """argparse with the project's error style: one 'ERROR: ...' line and exit code 2 instead of usage + error.

    defaults: {dest: default}, the script's run() defaults. Each option named there takes its default from it, so
    the CLI and run() cannot drift apart; an option that also passes default= is a bug (ValueError)."""

    def __init__(self, *args: Any, defaults: Mapping[str, Any] | None = None, **kwargs: Any):
        self.run_defaults = dict(defaults or {})  # set before super().__init__, which already adds --help
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        if action.dest in self.run_defaults:
            if "default" in kwargs:
                raise ValueError(f"{args[0]}: its default comes from run()'s defaults, do not pass default= too")
            action.default = self.run_defaults[action.dest]
        return action

    def error(self, message: str) -> NoReturn:
        print(f"ERROR: {message} — see python {self.prog} --help", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


def signature_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """{keyword: default} of fn's parameters that have a default: a script's run(), whose CLI reuses them."""
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def flag(name: str) -> str:
    """Python keyword -> CLI flag: batch_size -> --batch-size."""
    return "--" + name.replace("_", "-")


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value) or "(empty)"
    return repr(value) if isinstance(value, str) else str(value)


def fail(name: str, value: Any, problem: str, todo: str = "") -> NoReturn:
    """Raise the one-line UserError for a bad argument."""
    raise UserError(f"{flag(name)} {_show(value)}: {problem} — {todo or 'see --help'}")


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None, todo: str = "") -> int:
    """A whole number within [lo, hi] (either bound optional)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(name, value, "must be a whole number", todo)
    if lo is not None and value < lo:
        fail(name, value, f"must be >= {lo}" if hi is None else f"must be in {lo}..{hi}", todo)
    if hi is not None and value > hi:
        fail(name, value, f"must be <= {hi}" if lo is None else f"must be in {lo}..{hi}", todo)
    return int(value)


def check_float(name: str, value: Any, lo: float, hi: float, hi_open: bool = False, todo: str = "") -> float:
    """A finite number in [lo, hi] (or [lo, hi) with hi_open); NaN and inf fail the range test."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(name, value, "must be a number", todo)
    v = float(value)
    inside = lo <= v < hi if hi_open else lo <= v <= hi
    if not (math.isfinite(v) and inside):
        fail(name, value, f"must be in [{lo:g}, {hi:g}{')' if hi_open else ']'}", todo)
    return v


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """One of a fixed set (the same list argparse's choices= gives the CLI)."""
    choices = list(choices)
    if value not in choices:
        fail(name, value, "not a valid choice", f"choose from {', '.join(str(c) for c in choices)}")
    return value


def check_imgsz(
    value: Any, counts: Sequence[int] = (1,), multiple: int | None = SIZE_MULTIPLE, name: str = "imgsz"
) -> list[int]:
    """Image size(s) in pixels: len in counts, each >= MIN_IMGSZ and, with multiple, a multiple of it."""
    sizes = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(sizes) not in counts:
        want = " or ".join(str(c) for c in counts)
        fail(
            name,
            value,
            f"give {want} value{'s' * (max(counts) > 1)}",
            "e.g. --imgsz 640" + (" or --imgsz 480 640 (h w)" if 2 in counts else ""),
        )
    for s in sizes:
        check_int(name, s, lo=MIN_IMGSZ, todo="e.g. --imgsz 640")
        if multiple and s % multiple:
            fail(name, value, f"must be a multiple of {multiple}", f"e.g. --imgsz {round_up(s, multiple)}")
    return [int(s) for s in sizes]


def round_up(x: int, multiple: int) -> int:
    return -(-int(x) // multiple) * multiple


def check_stride_multiple(imgsz: int, stride: int) -> None:
    """After the model is known: --imgsz must be a multiple of its largest stride (train and val use the same rule)."""
    gs = max(int(stride), SIZE_MULTIPLE)
    if imgsz % gs:
        fail(
            "imgsz", imgsz, f"must be a multiple of the model's max stride {gs}", f"e.g. --imgsz {round_up(imgsz, gs)}"
        )


def check_int_list(name: str, values: Any, lo: int = 0, allow_none: bool = True, todo: str = "") -> list[int] | None:
    """A list of whole numbers, each >= lo (e.g. --classes 0 2, --freeze 10); None when allowed and not given."""
    if values is None and allow_none:
        return None
    items = list(values) if isinstance(values, (list, tuple)) else [values]
    if not items:
        fail(name, values, "give at least one value", todo)
    return [check_int(name, v, lo=lo, todo=todo) for v in items]


def check_sha256(name: str, value: Any) -> str:
    """'' (no check) or a 64-character hex SHA-256 digest; returned lower-case."""
    if value in (None, ""):
        return ""
    if not isinstance(value, str) or not re.fullmatch(r"[0-9a-fA-F]{64}", value.strip()):
        fail(name, value, "not a SHA-256 digest", "give the 64 hex characters printed by `sha256sum FILE`")
    return value.strip().lower()
