"""Project logger and terminal colouring."""

from __future__ import annotations

import logging
import os
import sys

LOGGER_NAME = "yolo"


def _make_logger() -> logging.Logger:
    rank = int(os.getenv("RANK", -1))
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    # Only rank 0 (or a non-distributed run) talks at INFO; other ranks only warn.
    logger.setLevel(logging.INFO if rank in (-1, 0) else logging.WARNING)
    # Our handler prints; passing records on to the root logger too would print every line twice wherever the root
    # logger has a handler (a user's logging.basicConfig, a library's). Tests read the log with pytest's caplog,
    # whose handler tests/conftest.py attaches to this logger.
    logger.propagate = False
    return logger


LOGGER = _make_logger()

_COLOURS = {
    "black": "\033[30m",
    "red": "\033[31m",
    "green": "\033[32m",
    "yellow": "\033[33m",
    "blue": "\033[34m",
    "magenta": "\033[35m",
    "cyan": "\033[36m",
    "white": "\033[37m",
    "bright_blue": "\033[94m",
    "bold": "\033[1m",
    "underline": "\033[4m",
    "end": "\033[0m",
}


def colorstr(*args: str) -> str:
    """colorstr('blue', 'bold', 'text') -> text wrapped in ANSI codes; a single argument is made blue+bold.

    Colours are dropped when stdout is not a terminal so that logs and CI output stay readable.
    """
    *styles, text = args if len(args) > 1 else ("blue", "bold", args[0])
    if not sys.stdout.isatty() or os.getenv("NO_COLOR"):
        return str(text)
    return "".join(_COLOURS[s] for s in styles) + f"{text}" + _COLOURS["end"]
