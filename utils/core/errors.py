"""User-facing errors: one clear line, non-zero exit, no traceback."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from typing import Any


class UserError(Exception):
    """A problem with the user's input (file, flag, dataset), not a bug.

    The message must say what is wrong, where (file / line / flag) and what to do about it.
    """

    exit_code = 2  # cli_main's exit status (EXIT_USER_ERROR)


class NoUsableInputError(UserError):
    """Not a single input could be used (e.g. every image unreadable): the arguments were fine, so exit code 1."""

    exit_code = 1


EXIT_USER_ERROR = 2


def first_line(e: BaseException, limit: int = 120) -> str:
    """The first line of an exception's message (cut to limit characters), or its type name when it has none: enough
    to say why in a one-line error without a wall of library text."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__


# OSErrors that are the machine's state, not a bug: a full disk, or a folder/file we may not write
_DISK_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}
_NOT_WRITABLE = {
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
}


def os_error_cause(e: BaseException, writing: bool = True) -> str | None:
    """Short cause of a disk-full / permission OSError ("no space left on device", "not writable (...)"); None for
    any other error, which may be a bug and must keep its traceback."""
    code = getattr(e, "errno", None) if isinstance(e, OSError) else None
    if code in _DISK_FULL:
        return _DISK_FULL[code]
    if code in _NOT_WRITABLE:
        return f"not writable ({_NOT_WRITABLE[code]})" if writing else _NOT_WRITABLE[code]
    return None


def cli_main(fn: Callable[[], Any]) -> Any:
    """Run a CLI entry point; UserError -> one line on stderr and its exit_code (2; 1 for NoUsableInputError)."""
    try:
        return fn()
    except UserError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        sys.exit(getattr(e, "exit_code", EXIT_USER_ERROR))
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr)
        sys.exit(130)
    except OSError as e:  # last line of defence: a full disk or a read-only folder is not a bug
        cause = os_error_cause(e, writing=False)
        if cause is None:
            raise
        todo = "free some disk space" if e.errno in _DISK_FULL else "check the permissions or pick another folder"
        print(f"ERROR: {e.filename or 'a file'}: {cause} — {todo}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)
