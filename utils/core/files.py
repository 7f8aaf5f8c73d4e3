"""Paths, run folders, yaml I/O, the one atomic writer and the one image / video file finder."""

from __future__ import annotations

import contextlib
import glob
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from utils.core.errors import UserError, first_line, os_error_cause

ROOT = Path(__file__).resolve().parents[2]  # repository root (utils/core/files.py)
# suffixes (lower case, no dot) read as images / videos: YOLOv5's lists and names
IMG_FORMATS = ("bmp", "dng", "jpeg", "jpg", "mpo", "png", "tif", "tiff", "webp", "pfm")
VID_FORMATS = ("asf", "avi", "gif", "m4v", "mkv", "mov", "mp4", "mpeg", "mpg", "ts", "wmv")
_GLOB_CHARS = ("*", "?", "[")


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


# ---------------------------------------------------------------------------------------------- atomic writes
@contextmanager
def atomic_target(dest: str | Path, folder: bool = False, keep_suffix: bool = False) -> Iterator[Path]:
    """The one atomic writer: yields a temp path beside dest (same folder, so the rename never crosses file
    systems) that is moved onto dest with os.replace only when the block ends without an error; after an error
    (or Ctrl-C) the temp is removed and dest is untouched. Errors are not translated: wrap in user_writes(dest).

    folder=True: the temp is a new empty folder, swapped in whole (its files change together). An existing dest
    is first renamed aside to .old (a crash between the two renames leaves it there; an error moves it back) and
    removed after the swap. keep_suffix: the temp name ends in dest's suffix too, for writers that pick the
    format by the name (ONNX, matplotlib); otherwise it ends in .tmp.
    """
    dest = Path(dest)
    token = f"{os.getpid()}-{secrets.token_hex(3)}"  # unique across threads, processes and hosts sharing a disk
    tmp = dest.with_name(f".{dest.name}.{token}.tmp{dest.suffix if keep_suffix else ''}")
    try:
        if folder:
            tmp.mkdir(parents=True)
        yield tmp
        if folder and dest.exists():
            _swap_folder(tmp, dest, dest.with_name(f".{dest.name}.{token}.old"))
        else:
            os.replace(tmp, dest)
    except BaseException:  # Ctrl-C too: no partial temp is left behind
        _remove(tmp)
        raise


def _swap_folder(tmp: Path, dest: Path, old: Path) -> None:
    """Put folder tmp at dest, which exists: two renames, as no call replaces a non-empty folder in one step."""
    os.replace(dest, old)
    try:
        os.replace(tmp, dest)
    except BaseException:
        os.replace(old, dest)
        raise
    _remove(old)


def _remove(path: Path) -> None:
    """Delete a leftover temp file or folder; a failure here must not hide the error that made it a leftover."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], object], fsync: bool = False) -> Path:
    """write(f) into a binary temp file beside path, then moved onto path (atomic_target); a full disk or a
    read-only folder is a one-line UserError naming path. fsync: on disk before the rename (checkpoints).
    torch.save and np.save / np.savez take the open file (np.savez would add .npz to a path)."""
    path = Path(path)
    with user_writes(path), atomic_target(path) as tmp:
        with open(tmp, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    return path


def atomic_link(src: str | Path, dest: str | Path) -> Path:
    """Make dest a second name of the finished file src, atomically: a hard link under a temp name moved onto dest
    (no bytes are written; dest keeps this content when src is later replaced, as atomic writes make a new file).
    Where the file system has no hard links the bytes are copied through atomic_write instead."""
    dest = Path(dest)
    try:
        with atomic_target(dest) as tmp:
            os.link(src, tmp)
    except OSError:  # FAT / some network shares: no hard links
        with open(src, "rb") as f:
            atomic_write(dest, lambda out: shutil.copyfileobj(f, out), fsync=True)
    return dest


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write bytes atomically (atomic_write)."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 text atomically (atomic_write): a crash or full disk leaves the old file."""
    return atomic_write_bytes(path, text.encode())


def yaml_save(path: str | Path, data: dict) -> None:
    """Write a dict as yaml (Paths become strings), atomically."""
    clean = {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}
    atomic_write_text(path, yaml.safe_dump(clean, sort_keys=False))


# ------------------------------------------------------------------------------------------ finding image files
def file_ext(path: str | Path) -> str:
    """Lower-case suffix without the dot, as Path.suffix sees it (a leading dot is part of the name); plain string
    operations: a Path per file costs seconds at COCO scale."""
    name = str(path).rpartition(os.sep)[2].lstrip(".")
    _, dot, ext = name.rpartition(".")
    return ext.lower() if dot else ""


def files_under(folder: str) -> list[str]:
    """Every file below folder (iter_files as a list)."""
    return list(iter_files(folder))


def iter_files(folder: str) -> Iterator[str]:
    """Each file below folder, like Path.rglob: symlinked files kept, symlinked folders not entered, folders
    that cannot be listed skipped. os.scandir knows most entry types without a stat per file; a generator, so a
    caller that needs only the first match stops early."""
    stack = [folder]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
                    elif e.is_file():
                        yield e.path
        except (PermissionError, FileNotFoundError):
            continue


@dataclass
class FoundFiles:
    """What find_files found."""

    files: list[str] = field(default_factory=list)  # suffix in formats; in source order, each folder sorted
    others: list[str] = field(default_factory=list)  # files with another suffix (for a "skipped" warning)
    missing: list[str] = field(default_factory=list)  # named paths that do not exist (not globs, not list entries)


def find_files(
    source: str | Path | Sequence[str | Path], formats: Iterable[str], quiet: Iterable[str] = ()
) -> FoundFiles:
    """The one finder of image / video files (dataset loader and detect) in a source: a folder (recursive, like
    YOLOv5's dataset loader), a glob pattern, a .txt list (a file, folder or glob a line; relative lines are
    relative to the list's folder), a single file, or a list / tuple of these.

    formats: wanted suffixes (IMG_FORMATS, VID_FORMATS). quiet: suffixes of files met in folder scans that `others`
    leaves out (labels, caches and metadata beside the images), as it does hidden files. A list line with a wanted
    suffix is taken without a stat (COCO lists hold 118k lines): the reader reports it when it is missing.
    """
    wanted, found = set(formats), FoundFiles()
    quiet = set(quiet)
    for item in map(str, source if isinstance(source, (list, tuple)) else [source]):
        if file_ext(item) == "txt" and os.path.isfile(item):
            base = os.path.dirname(item)
            with open(item, errors="replace") as f:
                lines = [line.strip() for line in f]
            for line in filter(None, lines):
                _find_in(os.path.normpath(os.path.join(base, line)), wanted, quiet, found, listed=True)
        else:
            _find_in(item, wanted, quiet, found, listed=False)
    return found


def _find_in(item: str, wanted: set[str], quiet: set[str], found: FoundFiles, listed: bool) -> None:
    is_glob = any(c in item for c in _GLOB_CHARS)
    if listed and not is_glob and file_ext(item) in wanted:
        found.files.append(item)  # the fast path for long lists
    elif os.path.isdir(item):
        for f in sorted(files_under(item)):
            ext = file_ext(f)
            if ext in wanted:
                found.files.append(f)
            elif ext not in quiet and not os.path.basename(f).startswith("."):
                found.others.append(f)
    elif os.path.isfile(item) or (listed and not is_glob):
        (found.files if file_ext(item) in wanted else found.others).append(item)
    elif is_glob:
        for f in sorted(glob.glob(item, recursive=True)):
            if os.path.isfile(f):  # a matched folder is not entered: "**" patterns list its files already
                (found.files if file_ext(f) in wanted else found.others).append(f)
    else:
        found.missing.append(item)
