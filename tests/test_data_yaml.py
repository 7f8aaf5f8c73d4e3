"""data_yaml.check_dataset: YOLOv5 yaml semantics (paths, names/nc, download) and one clear error per bad input."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
import yaml

import utils.dataloaders.data_yaml as dy
from utils.core.errors import UserError
from utils.core.files import ROOT
from utils.dataloaders.data_yaml import check_dataset


def _write(tmp: Path, data: dict | str, name: str = "d.yaml") -> Path:
    f = tmp / name
    f.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return f


def _dataset(tmp: Path) -> Path:
    """tmp/ds with images/train and images/val folders."""
    for s in ("train", "val"):
        (tmp / "ds" / "images" / s).mkdir(parents=True, exist_ok=True)
    return tmp / "ds"


def test_good_yaml_resolves_everything(tmp_path):
    root = _dataset(tmp_path)
    f = _write(
        tmp_path,
        {
            "path": str(root),
            "train": "images/train",
            "val": "images/val",
            "test": None,
            "names": ["cat", "dog"],
            "val_json": "annotations/x.json",
            "extra": 7,
        },
    )
    d = check_dataset(str(f))
    assert d["names"] == {0: "cat", 1: "dog"} and d["nc"] == 2
    assert d["path"] == str(root) and d["train"] == str(root / "images/train") and d["val"] == str(root / "images/val")
    assert d["test"] is None and d["val_json"] == "annotations/x.json" and d["extra"] == 7
    assert d["yaml_file"] == str(f.resolve())
    assert check_dataset(f)["val"] == d["val"]  # Path input too


def test_list_train_and_parent_prefix_rule(tmp_path):
    root = _dataset(tmp_path)
    (root / "images" / "extra").mkdir()
    f = _write(
        tmp_path,
        {"path": str(root), "train": ["images/train", "../images/extra"], "val": "../images/val", "names": {0: "a"}},
    )
    d = check_dataset(f)
    # ../images/extra does not exist next to ds -> the leading ../ is dropped (YOLOv5); lists stay lists
    assert d["train"] == [str(root / "images/train"), str(root / "images/extra")]
    assert d["val"] == str(root / "images/val")


def test_relative_path_against_root_and_missing_path(tmp_path):
    f = _write(tmp_path, {"path": "data", "val": "hyps", "names": ["x"]})  # ROOT/data/hyps exists in the repo
    d = check_dataset(f)
    assert d["path"] == str(ROOT / "data") and d["val"] == str(ROOT / "data" / "hyps")
    d = check_dataset({"val": "data/hyps", "names": ["x"]})  # no path: ROOT; dict input
    assert d["path"] == str(ROOT) and d["val"] == str(ROOT / "data" / "hyps") and "yaml_file" not in d


def test_name_only_finds_data_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no coco128.yaml here: ROOT/data/coco128.yaml is used
    monkeypatch.setattr(dy, "_missing_val", lambda d: [])  # do not look for the (absent) images
    d = check_dataset("coco128.yaml", autodownload=False)
    assert d["yaml_file"] == str(ROOT / "data" / "coco128.yaml") and d["nc"] == 80 and d["names"][79] == "toothbrush"
    assert d["path"] == str(ROOT / "datasets" / "coco128") and d["train"] == d["val"]


def test_real_shapes_yaml_resolves(monkeypatch):
    monkeypatch.setattr(dy, "_missing_val", lambda d: [])
    d = check_dataset(ROOT / "data" / "shapes.yaml", autodownload=False)
    assert d["names"] == {0: "circle", 1: "rectangle", 2: "triangle"} and d["nc"] == 3
    assert d["val"] == str(ROOT / "datasets/shapes/images/val") and "generate_shapes" in d["download"]


def test_shapes_download_generates_into_tmp(tmp_path):
    # the real shapes.yaml download code, pointed at tmp and made small
    d = yaml.safe_load((ROOT / "data" / "shapes.yaml").read_text())
    d["path"] = str(tmp_path / "shapes")
    d["download"] = d["download"].replace("n_train=400, n_val=100, imgsz=256", "n_train=3, n_val=2, imgsz=64")
    assert "n_train=3" in d["download"]
    out = check_dataset(_write(tmp_path, d))
    assert len(list(Path(out["val"]).glob("*.jpg"))) == 2 and len(list(Path(out["train"]).glob("*.jpg"))) == 3
    assert (tmp_path / "shapes" / d["val_json"]).is_file()


@pytest.mark.parametrize("name", ["coco.yaml", "coco128.yaml"])
def test_coco_yamls_without_data_give_clear_error(name, monkeypatch, tmp_path):
    if (ROOT / "datasets" / name.split(".")[0]).exists():
        pytest.skip("dataset present on this machine")
    with pytest.raises(UserError, match=r"val path .* does not exist .*automatic download is off"):
        check_dataset(ROOT / "data" / name, autodownload=False)


@pytest.mark.parametrize(
    "content, match",
    [
        ({"path": ".", "val": "x"}, "has no 'names'"),
        ({"val": "x", "names": []}, "has no 'names'"),
        ({"val": "x", "names": {0: "a", 2: "b"}}, "without gaps"),
        ({"val": "x", "names": {"a": "b"}}, "must be class ids"),
        ({"val": "x", "names": ["a", "b"], "nc": 3}, "nc: 3 but 'names' lists 2"),
        ({"path": ".", "names": ["a"]}, "has no 'val'"),
        ("train: [a\nval: b\n", r"cannot parse yaml .*d\.yaml line"),
        ("- just\n- a list\n", "does not hold a mapping"),
        ("", "does not hold a mapping"),
    ],
)
def test_bad_yaml_content(tmp_path, content, match):
    f = _write(tmp_path, content)
    with pytest.raises(UserError, match=match) as e:
        check_dataset(f)
    assert "\n" not in str(e.value) and str(f.name) in str(e.value)  # one line, names the file


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(UserError, match="not found"):
        check_dataset(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="is a directory"):
        check_dataset(tmp_path)
    with pytest.raises(UserError, match="data must be"):
        check_dataset(3)  # type: ignore[arg-type]


def test_val_missing_without_download(tmp_path):
    f = _write(tmp_path, {"path": str(tmp_path), "train": "tr", "val": "va", "names": ["a"]})
    with pytest.raises(
        UserError,
        match=rf"val path {tmp_path / 'va'} does not exist \(data yaml .*d\.yaml\) — "
        r"fix the path or add a download: entry",
    ):
        check_dataset(f)


def test_python_download_creates_data(tmp_path, caplog):
    code = (
        "from pathlib import Path\nfrom utils.core.files import ROOT\nassert Path(yaml['path']).is_absolute()\n"
        "Path(yaml['val']).mkdir(parents=True)\n(Path(yaml['path']) / 'root.txt').write_text(str(ROOT))\n"
    )
    f = _write(tmp_path, {"path": str(tmp_path / "ds"), "val": "images/val", "names": ["a"], "download": code})
    d = check_dataset(f)
    assert Path(d["val"]).is_dir() and (tmp_path / "ds" / "root.txt").read_text() == str(ROOT)
    with pytest.raises(UserError, match="automatic download is off"):  # the code is not run when not allowed
        check_dataset(_write(tmp_path, {**yaml.safe_load(f.read_text()), "val": "other"}, "e.yaml"), autodownload=False)
    assert not (tmp_path / "ds" / "other").exists()


def test_bash_download(tmp_path):
    f = _write(
        tmp_path,
        {
            "path": str(tmp_path / "ds"),
            "val": "v",
            "names": ["a"],
            "download": f"bash -c 'mkdir -p {tmp_path}/ds/v && pwd > {tmp_path}/cwd.txt'",
        },
    )
    check_dataset(f)
    assert (tmp_path / "ds" / "v").is_dir() and (tmp_path / "cwd.txt").read_text().strip() == str(ROOT)


@pytest.mark.parametrize(
    "download, match",
    [
        ("bash -c 'exit 3'", r"download command of .*d\.yaml failed \(exit 3\)"),
        ("raise RuntimeError('no network')", r"download code of .*d\.yaml failed: RuntimeError: no network"),
        ("x = 1", r"still does not exist after the download of .*d\.yaml"),  # runs fine but makes nothing
    ],
)
def test_failing_download(tmp_path, download, match):
    f = _write(tmp_path, {"path": str(tmp_path / "ds"), "val": "v", "names": ["a"], "download": download})
    with pytest.raises(UserError, match=match):
        check_dataset(f)


def test_zip_url_download(tmp_path, monkeypatch):
    # a YOLOv5-style zip (ds/images/val/...) fetched "from the web" into the parent of path and unzipped there;
    # the real network path (time limits, retries, checks) is covered against a local server in test_download.py
    src = tmp_path / "src.zip"
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("ds/images/val/readme.txt", "x")
    fetched = []

    def fake_download(url, dst, sha256=None, check=None, context="", **kw):
        fetched.append((url, str(dst), sha256))
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        Path(dst).write_bytes(src.read_bytes())
        check(Path(dst))  # the zip check utils.dataloaders.data_yaml hands to the downloader
        return Path(dst)

    monkeypatch.setattr(dy, "download_file", fake_download)
    root = tmp_path / "datasets" / "ds"
    f = _write(
        tmp_path,
        {
            "path": str(root),
            "val": "images/val",
            "names": ["a"],
            "download": "https://example.com/files/ds.zip",
            "download_sha256": "AB" * 32,
        },
    )
    d = check_dataset(f)
    assert fetched == [("https://example.com/files/ds.zip", str(tmp_path / "datasets" / "ds.zip"), "ab" * 32)]
    assert (Path(d["val"]) / "readme.txt").read_text() == "x" and not (tmp_path / "datasets" / "ds.zip").exists()

    def broken(url, dst, **kw):
        raise UserError(f"cannot download {url} ({kw['context']}): connection failed (unreachable) — check it")

    monkeypatch.setattr(dy, "download_file", broken)
    f = _write(
        tmp_path, {"path": str(tmp_path / "other"), "val": "v", "names": ["a"], "download": "https://example.com/o.zip"}
    )
    with pytest.raises(
        UserError,
        match=r"cannot download https://example.com/o.zip \(data yaml .*d\.yaml\): "
        r"connection failed \(unreachable\)",
    ):
        check_dataset(f)


def test_single_cls_rule_is_the_same_for_train_and_val(tmp_path):
    """--single-cls: one class "item" (nc 1) in training's data dict and in validation's check, else the yaml's."""
    from types import SimpleNamespace

    import val
    from utils.dataloaders.data_yaml import class_names
    from utils.training.train_setup import prepare_data

    f = _write(
        tmp_path, {"path": str(_dataset(tmp_path)), "train": "images/train", "val": "images/val", "names": ["a", "b"]}
    )
    assert class_names(check_dataset(f)) == ({0: "a", 1: "b"}, 2)
    assert class_names(check_dataset(f), single_cls=True) == ({0: "item"}, 1)
    for single, want in ((False, ({0: "a", 1: "b"}, 2)), (True, ({0: "item"}, 1))):
        d = prepare_data(str(f), single, main=True)
        assert (d["names"], d["nc"]) == want
        _, nc, names = val._check_data(str(f), SimpleNamespace(training=True), single)  # in-memory model: no nc check
        assert (names, nc) == want
