"""Dataset yaml loading with YOLOv5's semantics: path resolution, names/nc, and `download` when val is missing.

Keys: `path` (dataset root; relative -> against the repository root), `train`/`val`/`test` (a directory, a .txt
list of images, or a list of those; relative to `path`), `names` (dict id -> name or list), optional `nc`,
optional `download` (a zip URL, a "bash ..." command, or Python source run with `yaml` = this dict), optional
`download_sha256` (the expected SHA-256 of the `download` URL's file, checked before it is used).
"""

from __future__ import annotations

import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

from utils.core.download import check_zip, download_file, normalise_sha256
from utils.core.errors import UserError
from utils.core.files import ROOT, yaml_load
from utils.core.log import LOGGER
from utils.core.names import names_dict

SPLITS = ("train", "val", "test")


def _find_yaml(data: str | Path) -> Path:
    """The yaml file for --data: the path as given, else ROOT/data/<name> (so `--data coco.yaml` works)."""
    p = Path(data)
    if not p.exists() and (ROOT / "data" / p.name).exists() and not p.is_absolute():
        p = ROOT / "data" / p.name
    if p.is_dir():
        raise UserError(f"dataset yaml {p} is a directory — pass the .yaml file that describes the dataset")
    if not p.exists():
        raise UserError(f"dataset yaml {data} not found (nor in {ROOT / 'data'}) — check the --data path")
    return p.resolve()


def _check_names(d: dict, where: str) -> tuple[dict[int, str], int]:
    """names as {0: str, 1: str, ...} and nc; a missing/invalid names or a disagreeing nc is a UserError."""
    names = d.get("names")
    if not isinstance(names, (list, tuple, dict)) or not names:
        raise UserError(
            f"dataset yaml {where} has no 'names' (the class names) — add names: {{0: person, 1: car}} "
            f"or names: [person, car]"
        )
    try:
        names = names_dict(names)
    except (TypeError, ValueError):
        raise UserError(f"dataset yaml {where}: 'names' keys must be class ids 0, 1, 2, ... — fix the names") from None
    if sorted(names) != list(range(len(names))):
        raise UserError(
            f"dataset yaml {where}: 'names' ids must be 0..{len(names) - 1} without gaps, "
            f"got {sorted(names)} — renumber the classes"
        )
    nc = len(names)
    if d.get("nc") is not None and str(d["nc"]).strip() not in (str(nc), f"{nc}.0"):
        raise UserError(
            f"dataset yaml {where}: nc: {d['nc']} but 'names' lists {nc} classes — fix nc or names (or drop nc)"
        )
    return names, nc


def class_names(data: dict, single_cls: bool = False) -> tuple[dict[int, str], int]:
    """(names, nc) a run uses: the dataset's, or with --single-cls one class named "item" (the loader maps every
    label to class 0). The one place of that rule: training and validation must agree on it."""
    if single_cls:
        return {0: "item"}, 1
    names = names_dict(data["names"])
    return names, int(data.get("nc", len(names)))


def _resolve_root(path: Any) -> Path:
    """Dataset root: absolute as given, relative -> against the repository root (YOLOv5), missing -> ROOT."""
    root = Path(str(path)) if path else ROOT
    return root if root.is_absolute() else (ROOT / root).resolve()


def _resolve_split(root: Path, x: str) -> str:
    """One split entry as an absolute path under root (a leading ../ that leads nowhere is dropped, as YOLOv5)."""
    p = (root / str(x)).resolve()
    if not p.exists() and str(x).startswith("../"):
        p = (root / str(x)[3:]).resolve()
    return str(p)


def check_dataset(data: str | Path | dict, autodownload: bool = True) -> dict:
    """Load and check a dataset yaml (path or dict); returns it with absolute paths, names {int: str} and nc.

    When a val path is missing, runs the yaml's `download` (if autodownload) and checks again; every problem is a
    UserError naming the yaml file. Other keys (val_json, download, ...) are kept; `yaml_file` is added.
    """
    if isinstance(data, dict):
        d, where = dict(data), str(data.get("yaml_file", "<dict>"))
    elif isinstance(data, (str, Path)):
        file = _find_yaml(data)
        d, where = yaml_load(file), str(file)
        if not isinstance(d, dict):
            raise UserError(
                f"dataset yaml {file} does not hold a mapping of keys (path, train, val, names) — fix the file"
            )
        d["yaml_file"] = where
    else:
        raise UserError(f"data must be a dataset yaml path or dict, got {type(data).__name__} — pass --data x.yaml")
    d["names"], d["nc"] = _check_names(d, where)
    root = _resolve_root(d.get("path"))
    d["path"] = str(root)
    for k in SPLITS:
        if d.get(k):
            d[k] = (
                [_resolve_split(root, x) for x in d[k]]
                if isinstance(d[k], (list, tuple))
                else _resolve_split(root, d[k])
            )
    if not d.get("val"):
        raise UserError(f"dataset yaml {where} has no 'val' split — add val: images/val (relative to path)")
    missing = _missing_val(d)
    if missing:
        _download_or_fail(d, missing, where, autodownload)
    return d


def _missing_val(d: dict) -> list[str]:
    vals = d["val"] if isinstance(d["val"], list) else [d["val"]]
    return [v for v in vals if not Path(v).exists()]


def _download_or_fail(d: dict, missing: list[str], where: str, autodownload: bool) -> None:
    """Run `download` for missing val data, or raise the UserError that says what to do."""
    dl = d.get("download")
    if not dl:
        raise UserError(
            f"val path {missing[0]} does not exist (data yaml {where}) — fix the path or add a download: entry"
        )
    if not autodownload:
        raise UserError(
            f"val path {missing[0]} does not exist (data yaml {where}) and automatic download is off — "
            f"put the dataset there or run again with download allowed"
        )
    LOGGER.info(f"Dataset not found ⚠️, missing path {missing[0]}: running the download of {where} ...")
    t0 = time.time()
    _run_download(str(dl), d, where)
    dt = time.time() - t0
    still = _missing_val(d)
    if still:
        raise UserError(
            f"val path {still[0]} still does not exist after the download of {where} ({dt:.1f}s) — "
            f"check the download: entry or fetch the data by hand"
        )
    LOGGER.info(f"Dataset download success ✅ ({dt:.1f}s), saved to {d['path']}")


def _run_download(dl: str, d: dict, where: str) -> None:
    """A zip URL (fetched next to the dataset root and unzipped there), a 'bash ...' command, or Python source."""
    if dl.startswith(("http://", "https://")):
        sha = normalise_sha256(d.get("download_sha256"), f"download_sha256 of data yaml {where}:")
        _download_url(dl, Path(d["path"]).parent, where, sha)
    elif dl.startswith("bash "):
        r = subprocess.run(dl, shell=True, cwd=ROOT)
        if r.returncode:
            raise UserError(
                f"download command of {where} failed (exit {r.returncode}): {dl} — fix it or fetch the data by hand"
            )
    else:
        try:
            exec(dl, {"yaml": d})
        except UserError:  # already one line (e.g. utils.core.download from data/coco.yaml)
            raise
        except Exception as e:
            raise UserError(
                f"download code of {where} failed: {type(e).__name__}: {e} — fix the download: "
                f"entry or fetch the data by hand"
            ) from None


def _download_url(url: str, dest: Path, where: str, sha256: str | None = None) -> None:
    """Fetch url into dest (utils.core.download: time limit, retries, atomic) and unzip it there when it is a zip.

    A zip is CRC-checked before it is moved into place, so a broken one is refused with nothing extracted;
    it is removed after extraction (YOLOv5).
    """
    f = dest / Path(url.split("?")[0]).name
    is_zip = f.suffix == ".zip"
    download_file(url, f, sha256=sha256, check=check_zip if is_zip else None, context=f"data yaml {where}")
    if is_zip:
        try:
            with zipfile.ZipFile(f) as z:
                z.extractall(dest)
        except (zipfile.BadZipFile, OSError) as e:  # disk full or unwritable folder while extracting
            raise UserError(
                f"cannot unzip {f} downloaded from {url} (data yaml {where}): {e} — free disk space "
                f"or unzip it by hand into {dest}"
            ) from None
        f.unlink()
