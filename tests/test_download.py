"""utils/download.download_file against a local HTTP server on 127.0.0.1: time limits on stalled servers, retries,
truncated bodies, SHA-256 and loadability checks, nothing left behind on failure; and the two callers end to end
(--backbone-weights official names into the torch hub cache, dataset yaml `download:` zip URLs)."""

from __future__ import annotations

import hashlib
import io
import re
import socket
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

import utils.core.download as dl
from models.pretrained import load_backbone_weights
from models.yolo import Model
from tests.fixtures_models import micro_cfg
from utils.core.download import download_file
from utils.core.errors import UserError
from utils.core.files import ROOT, yaml_load, yaml_save
from utils.dataloaders.data_yaml import check_dataset
from utils.training.train_setup import build_model

BODY = bytes(range(256)) * 40  # 10 KiB
SHA = hashlib.sha256(BODY).hexdigest()
T = 0.5  # seconds: the lowered time limit of every test


class _Handler(BaseHTTPRequestHandler):
    """Serves server.routes[path] = (kind, body); kinds: ok, flaky (503 first), stall (headers, 10 bytes, silence),
    short (half the Content-Length, then close)."""

    def do_GET(self) -> None:
        srv = self.server
        srv.hits[self.path] = srv.hits.get(self.path, 0) + 1
        kind, body = srv.routes.get(self.path, ("missing", b""))
        if kind == "missing" or (kind == "flaky" and srv.hits[self.path] == 1):
            self.send_error(404 if kind == "missing" else 503)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if kind == "stall":
            self.wfile.write(body[:10])
            self.wfile.flush()
            srv.release.wait(10)  # bounded: teardown sets it
        else:
            self.wfile.write(body if kind != "short" else body[: len(body) // 2])

    def log_message(self, *args) -> None:
        pass


class _Server:
    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.routes, self.httpd.hits, self.httpd.release = {}, {}, threading.Event()
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def add(self, path: str, body: bytes, kind: str = "ok") -> str:
        self.httpd.routes[path] = (kind, body)
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def hits(self, path: str) -> int:
        return self.httpd.hits.get(path, 0)

    def close(self) -> None:
        self.httpd.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def silent_url():
    """A socket that listens but never accepts or answers: the kernel completes the handshake, then nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/convnext.pth"
    sock.close()


@pytest.fixture(autouse=True)
def _no_backoff(monkeypatch):
    monkeypatch.setattr(dl, "BACKOFF_S", 0.0)
    monkeypatch.delenv("YOLO_DOWNLOAD_TIMEOUT", raising=False)
    monkeypatch.delenv("YOLO_DOWNLOAD_RETRIES", raising=False)


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg
    return msg


# --------------------------------------------------------------------------------------------- download_file itself
def test_server_that_never_answers_times_out_via_env(silent_url, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("YOLO_DOWNLOAD_TIMEOUT", "0.3")
    monkeypatch.setenv("YOLO_DOWNLOAD_RETRIES", "1")
    t0 = time.monotonic()
    with pytest.raises(UserError) as e:
        download_file(silent_url, tmp_path / "w.pth", progress=False)
    assert time.monotonic() - t0 < 5
    msg = _one_line_error(e)
    assert msg.startswith(f"cannot download {silent_url}: timed out after 0.3 s") and "(2 tries)" in msg
    assert f"download it by hand to {tmp_path / 'w.pth'}" in msg
    assert list(tmp_path.iterdir()) == []


def test_headers_then_stall_times_out_and_keeps_the_old_file(server, tmp_path) -> None:
    url = server.add("/stall.bin", BODY, "stall")
    dest = tmp_path / "stall.bin"
    dest.write_bytes(b"old")
    t0 = time.monotonic()
    with pytest.raises(UserError) as e:
        download_file(url, dest, timeout=T, retries=1, progress=False)
    assert time.monotonic() - t0 < 5 and server.hits("/stall.bin") == 2
    assert re.search(
        rf"cannot download {re.escape(url)}: timed out after 0.5 s without a byte \(10 bytes in\) "
        r"\(2 tries\) — check the network",
        _one_line_error(e),
    )
    assert dest.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [dest]  # no temp file


def test_fewer_bytes_than_content_length_is_incomplete(server, tmp_path) -> None:
    url = server.add("/short.bin", BODY, "short")
    with pytest.raises(UserError, match=rf"incomplete: got {len(BODY) // 2} of {len(BODY)} bytes \(1 try\)"):
        download_file(url, tmp_path / "short.bin", timeout=T, retries=0, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_sha256_mismatch_is_refused_without_retry(server, tmp_path) -> None:
    url = server.add("/f.bin", BODY)
    with pytest.raises(UserError) as e:
        download_file(url, tmp_path / "f.bin", sha256="0" * 64, timeout=T, retries=2, progress=False)
    assert f"sha256 mismatch: got {SHA}, expected {'0' * 64}" in _one_line_error(e)
    assert server.hits("/f.bin") == 1 and list(tmp_path.iterdir()) == []
    with pytest.raises(UserError, match=r"'abc' is not a SHA-256 \(64 hex digits\)"):
        download_file(url, tmp_path / "f.bin", sha256="abc", progress=False)


def test_good_file_with_right_sha256_lands_in_place(server, tmp_path) -> None:
    url = server.add("/f.bin", BODY)
    dest = tmp_path / "sub" / "f.bin"
    assert download_file(url, dest, sha256=SHA.upper(), timeout=T, retries=0, progress=False) == dest
    assert dest.read_bytes() == BODY and list(dest.parent.iterdir()) == [dest]


def test_transient_failure_is_retried(server, tmp_path) -> None:
    url = server.add("/flaky.bin", BODY, "flaky")
    download_file(url, tmp_path / "flaky.bin", timeout=T, retries=1, progress=False)
    assert server.hits("/flaky.bin") == 2 and (tmp_path / "flaky.bin").read_bytes() == BODY


def test_http_404_is_not_retried_and_says_so(server, tmp_path) -> None:
    url = server.add("/x", b"")[:-2] + "/nope.bin"
    with pytest.raises(UserError, match=rf"cannot download {re.escape(url)}: HTTP 404 .* — check the URL"):
        download_file(url, tmp_path / "nope.bin", timeout=T, retries=3, progress=False)
    assert server.hits("/nope.bin") == 1 and list(tmp_path.iterdir()) == []


def test_failed_check_leaves_nothing(server, tmp_path) -> None:
    url = server.add("/w.zip", b"<html>captive portal</html>")
    with pytest.raises(UserError, match=r"the downloaded file is not usable: not a valid zip"):
        download_file(url, tmp_path / "w.zip", check=dl.check_zip, timeout=T, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_limits_are_one_line_errors(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("YOLO_DOWNLOAD_TIMEOUT", "soon")
    with pytest.raises(UserError, match=r"YOLO_DOWNLOAD_TIMEOUT='soon' is not a valid number"):
        download_file("http://127.0.0.1:9/x", tmp_path / "x")
    with pytest.raises(UserError, match=r"only http:// and https:// URLs"):
        download_file("file:///etc/passwd", tmp_path / "x")


# ------------------------------------------------------------------------------- --backbone-weights official names
def _official(model: Model) -> dict[str, torch.Tensor]:
    """The model's ConvNeXt stages under the facebookresearch key names (what an official .pth holds)."""
    out = {}
    for k, v in model.state_dict().items():
        if m := re.match(r"model\.([0-3])\.(downsample|blocks)\.(.+)", k):
            out[f"{'downsample_layers' if m[2] == 'downsample' else 'stages'}.{m[1]}.{m[3]}"] = v.clone()
    out["head.weight"] = torch.zeros(2, 128)  # the ImageNet classifier, skipped
    return out


def _backbone(model: Model) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if re.match(r"model\.[0-3]\.(downsample|blocks)\.", k)}


@pytest.fixture
def official_file(server, tmp_path, monkeypatch):
    """(source model, bytes, url, cache path): an official-format micro file served locally as convnext_tiny_1k,
    with the torch hub cache in tmp."""
    torch.manual_seed(1)
    src = Model(micro_cfg())
    buf = io.BytesIO()
    torch.save(_official(src), buf)
    url = server.add("/convnext_tiny_1k_224_ema.pth", buf.getvalue())
    monkeypatch.setattr("models.pretrained.official_url", lambda name: url)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    return src, buf.getvalue(), url, tmp_path / "hub" / "checkpoints" / "convnext_tiny_1k_224_ema.pth"


def test_backbone_name_downloads_into_hub_cache_with_sha(official_file, server) -> None:
    src, data, url, cache = official_file
    model = build_model(
        micro_cfg(),
        None,
        2,
        {0: "a", 1: "b"},
        torch.device("cpu"),
        backbone_weights="convnext_tiny_1k",
        backbone_sha256=hashlib.sha256(data).hexdigest(),
    )
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in _backbone(src).items())
    assert cache.read_bytes() == data and list(cache.parent.iterdir()) == [cache]
    report = load_backbone_weights(Model(micro_cfg()), "convnext_tiny_1k")  # second time: from the cache
    assert server.hits("/convnext_tiny_1k_224_ema.pth") == 1 and report.source == url
    assert len(report.loaded) == len(_backbone(src)) and report.skipped == ["head.weight"]


def test_backbone_wrong_sha_or_unloadable_download_leaves_no_cache(official_file, server) -> None:
    src, data, url, cache = official_file
    with pytest.raises(UserError, match=rf"cannot download {re.escape(url)} \(--backbone-weights\): sha256 mismatch"):
        build_model(
            micro_cfg(),
            None,
            2,
            {0: "a", 1: "b"},
            torch.device("cpu"),
            backbone_weights="convnext_tiny_1k",
            backbone_sha256="1" * 64,
        )
    server.add("/convnext_tiny_1k_224_ema.pth", data[: len(data) // 2])  # a complete response of a broken file
    with pytest.raises(UserError, match=r"\(--backbone-weights\): the downloaded file is not usable"):
        load_backbone_weights(Model(micro_cfg()), "convnext_tiny_1k")
    assert not cache.exists() and list(cache.parent.iterdir()) == []


def test_backbone_corrupt_cache_is_replaced(official_file, server, caplog) -> None:
    src, data, url, cache = official_file
    cache.parent.mkdir(parents=True)
    cache.write_bytes(data[:100])  # a truncated copy left by an older downloader
    model = Model(micro_cfg())
    load_backbone_weights(model, "convnext_tiny_1k")
    assert f"cached {cache} cannot be read" in caplog.text
    assert cache.read_bytes() == data and server.hits("/convnext_tiny_1k_224_ema.pth") == 1
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in _backbone(src).items())


def test_backbone_download_from_silent_server_fails_in_seconds(silent_url, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr("models.pretrained.official_url", lambda name: silent_url)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setenv("YOLO_DOWNLOAD_TIMEOUT", "0.3")
    monkeypatch.setenv("YOLO_DOWNLOAD_RETRIES", "0")
    t0 = time.monotonic()
    with pytest.raises(
        UserError,
        match=rf"cannot download {re.escape(silent_url)} \(--backbone-weights\): timed out "
        r"after 0.3 s .* download it by hand to .*hub/checkpoints/convnext.pth",
    ):
        load_backbone_weights(Model(micro_cfg()), "convnext_tiny_1k")
    assert time.monotonic() - t0 < 5 and list((tmp_path / "hub" / "checkpoints").iterdir()) == []


# ------------------------------------------------------------------------------------- dataset yaml `download:` URL
def _zip_bytes(corrupt: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("ds/images/val/readme.txt", "hello zip")
    data = bytearray(buf.getvalue())
    if corrupt:  # flip a byte of the stored member: the archive opens but the CRC fails
        i = data.index(b"hello zip")
        data[i] ^= 0xFF
    return bytes(data)


def _yaml(tmp: Path, url: str, **extra) -> Path:
    f = tmp / "d.yaml"
    yaml_save(f, {"path": str(tmp / "datasets" / "ds"), "val": "images/val", "names": ["a"], "download": url, **extra})
    return f


def test_data_yaml_zip_url_checks_sha256_then_extracts(server, tmp_path) -> None:
    data = _zip_bytes()
    url = server.add("/ds.zip", data)
    with pytest.raises(
        UserError,
        match=rf"cannot download {re.escape(url)} \(data yaml .*d\.yaml\): sha256 mismatch: "
        rf"got {hashlib.sha256(data).hexdigest()}, expected {'2' * 64}",
    ):
        check_dataset(_yaml(tmp_path, url, download_sha256="2" * 64))
    assert list((tmp_path / "datasets").iterdir()) == []
    d = check_dataset(_yaml(tmp_path, url, download_sha256=hashlib.sha256(data).hexdigest()))
    assert (Path(d["val"]) / "readme.txt").read_text() == "hello zip"
    assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == ["ds"]  # zip removed, no temp file


@pytest.mark.parametrize(
    "body, cause",
    [
        (b"<html>not found page</html>", r"the downloaded file is not usable: not a valid zip"),
        (
            _zip_bytes(corrupt=True),
            r"the downloaded file is not usable: zip member ds/images/val/readme.txt is corrupt",
        ),
    ],
)
def test_data_yaml_bad_zip_extracts_nothing(server, tmp_path, body, cause) -> None:
    url = server.add("/ds.zip", body)
    f = _yaml(tmp_path, url)
    with pytest.raises(
        UserError,
        match=rf"cannot download {re.escape(url)} \(data yaml {re.escape(str(f))}\): "
        rf"{cause}",
    ):
        check_dataset(f)
    assert list((tmp_path / "datasets").iterdir()) == []


def test_data_yaml_bad_sha_value_and_silent_server(silent_url, tmp_path, monkeypatch) -> None:
    with pytest.raises(UserError, match=r"download_sha256 of data yaml .*d\.yaml: 'xyz' is not a SHA-256"):
        check_dataset(_yaml(tmp_path, silent_url, download_sha256="xyz"))
    monkeypatch.setenv("YOLO_DOWNLOAD_TIMEOUT", "0.3")
    monkeypatch.setenv("YOLO_DOWNLOAD_RETRIES", "0")
    t0 = time.monotonic()
    with pytest.raises(UserError, match=r"timed out after 0.3 s .*\(1 try\)"):
        check_dataset(_yaml(tmp_path, silent_url.replace(".pth", ".zip")))
    assert time.monotonic() - t0 < 5 and list((tmp_path / "datasets").iterdir()) == []


def test_coco_yaml_download_code_goes_through_the_downloader(silent_url, tmp_path, monkeypatch) -> None:
    # data/coco.yaml's own Python download code, pointed at a server that never answers
    d = yaml_load(ROOT / "data" / "coco.yaml")
    base = silent_url.rsplit("/", 1)[0] + "/"
    assert "http://images.cocodataset.org/" in d["download"]
    d["download"] = d["download"].replace("http://images.cocodataset.org/", base)
    d["path"] = str(tmp_path / "coco")
    monkeypatch.setenv("YOLO_DOWNLOAD_TIMEOUT", "0.3")
    monkeypatch.setenv("YOLO_DOWNLOAD_RETRIES", "0")
    t0 = time.monotonic()
    with pytest.raises(UserError) as e:
        check_dataset(d)
    assert time.monotonic() - t0 < 5
    assert _one_line_error(e).startswith(
        f"cannot download {base}annotations/annotations_trainval2017.zip (data/coco.yaml): timed out after 0.3 s"
    )
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_backbone_sha256_is_checked_on_local_files_too(tmp_path) -> None:
    torch.manual_seed(2)
    src = Model(micro_cfg())
    f = tmp_path / "convnext_micro.pth"
    torch.save(_official(src), f)
    with pytest.raises(UserError, match=rf"{re.escape(str(f))} has sha256 [0-9a-f]{{64}}, not the expected {'3' * 64}"):
        load_backbone_weights(Model(micro_cfg()), f, sha256="3" * 64)
    with pytest.raises(UserError, match=r"--backbone-sha256 'nope' is not a SHA-256"):
        load_backbone_weights(Model(micro_cfg()), f, sha256="nope")
    model = Model(micro_cfg())
    load_backbone_weights(model, f, sha256=hashlib.sha256(f.read_bytes()).hexdigest())
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in _backbone(src).items())
