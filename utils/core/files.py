"""Paths, run folders and yaml I/O."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from utils.core.errors import UserError, first_line, os_error_cause

ROOT = Path(__file__).resolve().parents[2]  # repository root (utils/core/files.py)


def increment_path(path: str | Path, exist_ok: bool = False, sep: str = "", mkdir: bool = False) -> Path:
    """runs/train/exp -> runs/train/exp2, exp3, ... (the first free one), like YOLOv5."""
    path = Path(path)
    if path.exists() and not exist_ok:
        stem, suffix = (path.with_suffix(""), path.suffix) if path.is_file() else (path, "")
        pattern = re.compile(rf"^{re.escape(stem.name)}{re.escape(sep)}(\d+)$")
        taken = [
            int(m.group(1))
            for p in stem.parent.glob(f"{stem.name}{sep}*")
            if (m := pattern.match(p.with_suffix("").name if suffix else p.name))
        ]
        n = max([1] + taken) + 1
        path = Path(f"{stem}{sep}{n}{suffix}")
    if mkdir:
        with user_writes(path):
            path.mkdir(parents=True, exist_ok=True)
    return path


def write_error(path: str | Path, e: BaseException) -> UserError | None:
    """One-line UserError for a write of path that failed because of the disk or permissions; None otherwise
    (another error may be a bug and keeps its traceback)."""
    cause = os_error_cause(e)
    if cause is None and isinstance(e, (FileExistsError, NotADirectoryError)):
        cause = f"a file is in the way ({e.filename})"
    if cause is None:
        return None
    todo = "free some disk space" if "space" in cause or "quota" in cause else "pick another --project / folder"
    return UserError(f"cannot write {path}: {cause} — {todo}")


@contextmanager
def user_writes(path: str | Path) -> Iterator[None]:
    """Turn a disk-full / not-writable OSError inside the block into write_error(path)."""
    try:
        yield
    except OSError as e:
        err = write_error(path, e)
        if err is None:
            raise
        raise err from None


def check_writable(folder: str | Path) -> None:
    """Fail early (before any data scan) when folder cannot be created or written: probe its nearest existing
    parent with a small temp file (permission bits alone say nothing for root; a read-only mount or full disk does)."""
    folder = Path(folder).absolute()
    probe_dir = folder
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir():
        raise UserError(f"cannot write {folder}: {probe_dir} is a file, not a folder — pick another --project")
    with user_writes(folder):
        with tempfile.NamedTemporaryFile(dir=probe_dir, prefix=".write_probe") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())


def yaml_load(path: str | Path) -> Any:
    """Load a yaml file; a missing or malformed file is a UserError naming the file (and line when known)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"yaml file not found: {path} — check the path")
    try:
        with open(path, errors="ignore") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or first_line(e)
        raise UserError(f"cannot parse yaml {path}{where}: {problem} — fix the file") from None
    except OSError as e:
        raise UserError(f"cannot read yaml {path}: {e.strerror} — check permissions") from None


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text via a temp file + os.replace (a crash or full disk leaves the old file); disk-full and
    permission errors become one-line UserErrors naming path."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with user_writes(path):
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def yaml_save(path: str | Path, data: dict) -> None:
    """Write a dict as yaml (Paths become strings), atomically."""
    clean = {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}
    atomic_write_text(path, yaml.safe_dump(clean, sort_keys=False))


def file_size_mb(path: str | Path) -> float:
    return os.path.getsize(path) / 1e6
