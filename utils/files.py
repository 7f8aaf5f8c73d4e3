"""Paths, run folders and yaml I/O."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]  # repository root


def increment_path(path: str | Path, exist_ok: bool = False, sep: str = "", mkdir: bool = False) -> Path:
    """runs/train/exp -> runs/train/exp2, exp3, ... (the first free one), like YOLOv5."""
    path = Path(path)
    if path.exists() and not exist_ok:
        stem, suffix = (path.with_suffix(""), path.suffix) if path.is_file() else (path, "")
        pattern = re.compile(rf"^{re.escape(stem.name)}{re.escape(sep)}(\d+)$")
        taken = [int(m.group(1)) for p in stem.parent.glob(f"{stem.name}{sep}*")
                 if (m := pattern.match(p.with_suffix("").name if suffix else p.name))]
        n = max([1] + taken) + 1
        path = Path(f"{stem}{sep}{n}{suffix}")
    if mkdir:
        path.mkdir(parents=True, exist_ok=True)
    return path


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
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"cannot parse yaml {path}{where}: {problem} — fix the file") from None
    except OSError as e:
        raise UserError(f"cannot read yaml {path}: {e.strerror} — check permissions") from None


def yaml_save(path: str | Path, data: dict) -> None:
    """Write a dict as yaml (Paths become strings)."""
    clean = {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}
    with open(path, "w") as f:
        yaml.safe_dump(clean, f, sort_keys=False)


def file_size_mb(path: str | Path) -> float:
    return os.path.getsize(path) / 1e6
