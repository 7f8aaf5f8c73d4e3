"""User-facing errors: one clear line, non-zero exit, no traceback."""
from __future__ import annotations

import sys
from typing import Any, Callable


class UserError(Exception):
    """A problem with the user's input (file, flag, dataset), not a bug.

    The message must say what is wrong, where (file / line / flag) and what to do about it.
    """


EXIT_USER_ERROR = 2


def cli_main(fn: Callable[[], Any]) -> Any:
    """Run a CLI entry point; turn UserError into one line on stderr and exit code 2."""
    try:
        return fn()
    except UserError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        sys.exit(130)
