"""One downloader for every network read: a time limit, a few retries, and a file that only appears when complete.

    from utils.core.download import download_file, check_zip
    download_file("https://host/ds.zip", Path("datasets/ds.zip"), sha256=None, check=check_zip)

The socket timeout bounds the connect and every single read ("N s without a byte"), so a server that accepts and
never answers fails after N s per try instead of hanging. The body goes to a temp file next to `dest`
(utils.core.files.atomic_target); it is moved into place only after the byte count matches Content-Length (when
sent), the optional SHA-256 matches and the optional `check(path)` passes. Any failure removes the temp file and
raises one-line UserError naming the URL, the cause and what to do. Limits: YOLO_DOWNLOAD_TIMEOUT (seconds,
default 60) and YOLO_DOWNLOAD_RETRIES (extra tries after the first, default 2), or the `timeout` / `retries`
arguments. DNS look-ups are not covered by the socket timeout (the resolver has its own).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from utils.core.errors import UserError, first_line
from utils.core.files import atomic_target
from utils.core.log import LOGGER

DEFAULT_TIMEOUT = 60.0  # seconds without a byte before a try is given up
DEFAULT_RETRIES = 2  # extra tries after the first, for transient faults only
BACKOFF_S = 2.0  # wait before retry k is BACKOFF_S * k seconds (tests set it to 0)
CHUNK = 1 << 20
_USER_AGENT = "yolov5-convnext-downloader"


class _Transient(Exception):
    """A fault worth another try (timeout, reset, truncated body, HTTP 5xx / 429)."""


class _Fatal(Exception):
    """A fault another try will not fix (HTTP 404, hash mismatch, unusable file, disk error)."""


def _env_number(name: str, default: float, cast: Callable[[str], float]) -> float:
    raw = os.getenv(name, "").strip()
    if not raw:
        return default
    try:
        value = cast(raw)
    except ValueError:
        value = -1
    if value < 0 or (name.endswith("TIMEOUT") and value == 0):
        raise UserError(f"environment variable {name}={raw!r} is not a valid number — set a positive value or unset it")
    return value


def _limits(timeout: float | None, retries: int | None) -> tuple[float, int]:
    t = float(timeout) if timeout is not None else _env_number("YOLO_DOWNLOAD_TIMEOUT", DEFAULT_TIMEOUT, float)
    r = int(retries) if retries is not None else int(_env_number("YOLO_DOWNLOAD_RETRIES", DEFAULT_RETRIES, int))
    if t <= 0:  # 0 would make the socket non-blocking, not "no limit"
        raise ValueError(f"download timeout must be > 0 seconds, got {t}")
    return t, max(r, 0)


def normalise_sha256(sha256: str | None, what: str = "sha256") -> str | None:
    """Lower-case 64-hex-digit string, None for None/empty; anything else is a UserError naming `what`."""
    if sha256 is None or not str(sha256).strip():
        return None
    h = str(sha256).strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", h):
        raise UserError(
            f"{what} {sha256!r} is not a SHA-256 (64 hex digits) — pass the value that `sha256sum FILE` prints"
        )
    return h


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of a file, read in chunks (weights files reach gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def check_zip(path: str | Path) -> None:
    """Raise ValueError unless path is a readable zip whose every member passes its CRC (before anything is
    extracted, so a corrupt archive extracts nothing)."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as e:
        raise ValueError(f"not a valid zip ({e})") from None
    if bad is not None:
        raise ValueError(f"zip member {bad} is corrupt (CRC mismatch)")


def _open(url: str, timeout: float) -> http.client.HTTPResponse:
    """urlopen with the timeout on connect and on every read; HTTP and connection faults sorted by retry value."""
    req = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        return urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as e:
        cause = f"HTTP {e.code} {e.reason}"
        e.close()
        raise (_Transient if e.code >= 500 or e.code in (408, 429) else _Fatal)(cause) from None
    except urllib.error.URLError as e:
        if isinstance(e.reason, (socket.timeout, TimeoutError)):
            raise _Transient(f"timed out after {timeout:g} s without an answer") from None
        raise _Transient(f"connection failed ({e.reason})") from None
    except TimeoutError:
        raise _Transient(f"timed out after {timeout:g} s without an answer") from None
    except (http.client.HTTPException, OSError) as e:  # reset / closed before the status line
        raise _Transient(f"connection failed ({type(e).__name__}: {e})") from None


def _fetch_once(url: str, tmp: Path, timeout: float, progress: bool, label: str) -> str:
    """One try: stream url into tmp (truncated first), checking the length; returns the body's SHA-256."""
    h, got = hashlib.sha256(), 0
    with _open(url, timeout) as resp, open(tmp, "wb") as f:
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.strip().isdigit() else None
        with tqdm(
            total=total, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress, desc=label[:40]
        ) as bar:
            while True:
                try:
                    chunk = resp.read1(CHUNK)  # returns what has arrived: the count stays exact
                except TimeoutError:
                    raise _Transient(f"timed out after {timeout:g} s without a byte ({got} bytes in)") from None
                except (http.client.HTTPException, OSError) as e:  # reset, TLS error mid-body
                    raise _Transient(f"connection broke after {got} bytes ({type(e).__name__})") from None
                if not chunk:
                    break
                try:
                    f.write(chunk)
                except OSError as e:  # disk full, read-only folder: no retry helps
                    raise _Fatal(f"cannot write {tmp.parent}: {e.strerror or e}") from None
                h.update(chunk)
                got += len(chunk)
                bar.update(len(chunk))
    if total is not None and got != total:
        raise _Transient(f"incomplete: got {got} of {total} bytes")
    return h.hexdigest()


def _verify(tmp: Path, digest: str, sha256: str | None, check: Callable[[Path], object] | None) -> None:
    if sha256 and digest != sha256:
        raise _Fatal(f"sha256 mismatch: got {digest}, expected {sha256}")
    if check is not None:
        try:
            check(tmp)
        except Exception as e:  # the check is a loader: any failure means the file is not what we asked for
            raise _Fatal(f"the downloaded file is not usable: {first_line(e, 160)}") from None


def download_file(
    url: str,
    dest: str | Path,
    sha256: str | None = None,
    timeout: float | None = None,
    retries: int | None = None,
    check: Callable[[Path], object] | None = None,
    progress: bool = True,
    context: str = "",
) -> Path:
    """Download url to dest atomically (see module doc) and return dest; UserError on failure, dest untouched.

    sha256: expected hex digest (checked when given). check(path): raises if the file is unusable (e.g. check_zip,
    a torch.load); it runs on the temp file before the move. context: shown after the URL in errors (e.g. the yaml).
    """
    if not url.startswith(("http://", "https://")):
        raise UserError(f"cannot download {url!r}: only http:// and https:// URLs are supported — fix the URL")
    dest, sha256 = Path(dest), normalise_sha256(sha256)
    timeout, retries = _limits(timeout, retries)
    where = f"{url}{f' ({context})' if context else ''}"
    try:
        with atomic_target(dest) as tmp:  # after a failure (or Ctrl-C) no partial file is left behind
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp.touch()  # a folder we cannot write fails here, before any network traffic
            except OSError as e:
                raise UserError(
                    f"cannot download {where}: cannot write to {dest.parent} ({e.strerror or e}) — "
                    f"pick a writable folder"
                ) from None
            _tries(url, tmp, sha256, timeout, retries, check, progress, where, dest)
    except OSError as e:  # only the final move: the block turns its own OSErrors into UserErrors
        raise UserError(
            f"cannot download {where}: cannot move it to {dest} ({e.strerror or e}) — "
            f"remove what is at {dest} or pick another folder"
        ) from None
    return dest


def _tries(
    url: str,
    tmp: Path,
    sha256: str | None,
    timeout: float,
    retries: int,
    check: Callable[[Path], object] | None,
    progress: bool,
    where: str,
    dest: Path,
) -> None:
    """Up to 1 + retries tries with a short back-off; the last cause becomes the UserError."""
    for k in range(retries + 1):
        try:
            digest = _fetch_once(url, tmp, timeout, progress, dest.name)
            _verify(tmp, digest, sha256, check)
            return
        except _Transient as e:
            cause = str(e)
            if k < retries:
                LOGGER.warning(f"WARNING ⚠️ download of {url} failed ({cause}), retry {k + 1}/{retries} ...")
                time.sleep(BACKOFF_S * (k + 1))
        except _Fatal as e:
            raise UserError(f"cannot download {where}: {e} — {_advice(str(e), dest)}") from None
        except OSError as e:  # opening the temp file for writing
            raise UserError(
                f"cannot download {where}: cannot write {tmp} ({e.strerror or e}) — free disk space "
                f"or pick a writable folder"
            ) from None
    tries = f"{retries + 1} tries" if retries else "1 try"
    raise UserError(
        f"cannot download {where}: {cause} ({tries}) — check the network (limits: YOLO_DOWNLOAD_TIMEOUT, "
        f"YOLO_DOWNLOAD_RETRIES) or download it by hand to {dest}"
    )


def _advice(cause: str, dest: Path) -> str:
    if cause.startswith("sha256 mismatch"):
        return f"check the expected SHA-256, or download the file by hand to {dest} and verify it"
    if cause.startswith("cannot write"):
        return "free disk space or pick a writable folder"
    return f"check the URL, or download the file by hand to {dest}"
