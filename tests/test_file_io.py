"""utils.core.files: the one atomic writer (atomic_target and its wrappers) and the one image / video finder."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from utils.core import files as F
from utils.core.errors import UserError
from utils.core.files import (
    IMG_FORMATS,
    VID_FORMATS,
    atomic_target,
    atomic_write,
    atomic_write_bytes,
    atomic_write_text,
    find_files,
)
from utils.dataloaders.sources import collect_files


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------------- atomic_target
def test_file_target_replaces_only_on_success(tmp_path: Path) -> None:
    dest = tmp_path / "a.csv"
    dest.write_text("old")
    with pytest.raises(ValueError, match="boom"):
        with atomic_target(dest) as tmp:
            tmp.write_text("new, half written")
            assert tmp.parent == tmp_path and tmp.name.startswith(".a.csv.") and tmp.name.endswith(".tmp")
            assert dest.read_text() == "old"  # nothing visible before the block ends
            raise ValueError("boom")
    assert dest.read_text() == "old" and _names(tmp_path) == ["a.csv"]  # previous file intact, no temp left
    with atomic_target(dest, keep_suffix=True) as tmp:
        assert tmp.suffix == ".csv"  # for writers that pick the format by the name
        tmp.write_text("new")
    assert dest.read_text() == "new" and _names(tmp_path) == ["a.csv"]


def test_interrupt_and_unwritten_temp_leave_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "x.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_target(dest) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert _names(tmp_path) == []
    with pytest.raises(FileNotFoundError):  # the block wrote nothing: the move fails, dest never appears
        with atomic_target(dest):
            pass
    assert _names(tmp_path) == []


def test_temp_names_are_unique(tmp_path: Path) -> None:
    with atomic_target(tmp_path / "f") as a, atomic_target(tmp_path / "f") as b:
        assert a != b  # two writers (threads, processes) of one file never share a temp
        a.write_text("a")
        b.write_text("b")
    assert (tmp_path / "f").read_text() == "a"  # the last to finish wins, whole


def test_folder_target_swaps_whole_folder(tmp_path: Path) -> None:
    dest = tmp_path / "m_openvino_model"
    with atomic_target(dest, folder=True) as tmp:  # a new folder (its parent made too)
        assert tmp.is_dir() and not any(tmp.iterdir())
        (tmp / "m.xml").write_text("v1")
    assert _names(dest) == ["m.xml"] and _names(tmp_path) == ["m_openvino_model"]
    with pytest.raises(OSError, match="No space"):
        with atomic_target(dest, folder=True) as tmp:
            (tmp / "m.xml").write_text("v2, half written")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert (dest / "m.xml").read_text() == "v1" and _names(tmp_path) == ["m_openvino_model"]
    with atomic_target(dest, folder=True) as tmp:  # an existing, non-empty folder is replaced whole
        (tmp / "m.bin").write_text("v3")
    assert _names(dest) == ["m.bin"] and _names(tmp_path) == ["m_openvino_model"]  # .old removed


def test_folder_swap_failing_second_rename_restores_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("old")
    real, calls = os.replace, []

    def second_fails(src, dst):
        calls.append((Path(src).name, Path(dst).name))
        if len(calls) == 2:
            raise OSError(errno.EIO, "I/O error")
        real(src, dst)

    monkeypatch.setattr("utils.core.files.os.replace", second_fails)
    with pytest.raises(OSError, match="I/O error"):
        with atomic_target(dest, folder=True) as tmp:
            (tmp / "new.txt").write_text("new")
    assert calls[0][0] == "out" and calls[0][1].endswith(".old") and calls[2] == (calls[0][1], "out")  # moved back
    assert (dest / "keep.txt").read_text() == "old" and _names(tmp_path) == ["out"]


# ------------------------------------------------------------------------------------------------- wrappers
def test_text_and_bytes_wrappers(tmp_path: Path) -> None:
    f = atomic_write_text(tmp_path / "t.yaml", "name: crème brûlée\n")
    assert f == tmp_path / "t.yaml" and f.read_bytes() == "name: crème brûlée\n".encode()  # UTF-8 whatever the locale
    atomic_write_bytes(f, b"\x00\xff")
    assert f.read_bytes() == b"\x00\xff" and _names(tmp_path) == ["t.yaml"]


def test_writer_wrapper_with_torch_and_numpy(tmp_path: Path) -> None:
    ckpt = {"w": torch.arange(6.0).reshape(2, 3), "epoch": 3}
    atomic_write(tmp_path / "c.pt", lambda f: torch.save(ckpt, f), fsync=True)
    got = torch.load(tmp_path / "c.pt", weights_only=True)
    assert got["epoch"] == 3 and torch.equal(got["w"], ckpt["w"])
    im = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    atomic_write(tmp_path / "i.npy", lambda f: np.save(f, im))
    np.testing.assert_array_equal(np.load(tmp_path / "i.npy"), im)
    atomic_write(tmp_path / "a.cache", lambda f: np.savez(f, x=im))  # a file object: no .npz added to the name
    np.testing.assert_array_equal(np.load(tmp_path / "a.cache")["x"], im)
    assert _names(tmp_path) == ["a.cache", "c.pt", "i.npy"]


def test_wrapper_disk_full_is_one_line_and_keeps_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = atomic_write_text(tmp_path / "results.csv", "a\n1\n")

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(F.os, "replace", full)
    with pytest.raises(UserError, match="no space left") as e:
        atomic_write_text(f, "a\n1\n2\n")
    assert str(f) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ZeroDivisionError):  # a bug in the writer keeps its traceback (not turned into a UserError)
        atomic_write(f, lambda fh: 1 / 0)
    assert f.read_text() == "a\n1\n" and _names(tmp_path) == ["results.csv"]


# -------------------------------------------------------------------------------------------------- find_files
def _tree(root: Path) -> dict[str, Path]:
    """root/a.jpg, root/sub/b.PNG, root/sub/deep/c.mp4, root/sub/notes.gif..."""
    files = {
        "a": root / "a.jpg",
        "b": root / "sub" / "b.PNG",
        "c": root / "sub" / "deep" / "c.mp4",
        "gif": root / "sub" / "notes.gif",
        "label": root / "sub" / "b.txt",
        "hidden": root / ".DS_Store",
    }
    for f in files.values():
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_bytes(b"x")
    return files


def test_find_files_folder_is_recursive_and_reports_others(tmp_path: Path) -> None:
    t = _tree(tmp_path / "d")
    found = find_files(tmp_path / "d", IMG_FORMATS, quiet=("txt",))
    assert found.files == [str(t["a"]), str(t["b"])] and found.missing == []
    assert found.others == [str(t["c"]), str(t["gif"])]  # not the quiet label file, not the hidden file
    both = find_files(str(tmp_path / "d"), IMG_FORMATS + VID_FORMATS)  # one sorted walk: paths in string order
    assert both.files == [str(t["a"]), str(t["b"]), str(t["c"]), str(t["gif"])] and both.others == [str(t["label"])]


def test_find_files_globs_lists_and_missing(tmp_path: Path) -> None:
    t = _tree(tmp_path / "d")
    assert find_files(str(tmp_path / "d" / "**" / "*.png"), IMG_FORMATS).files == []  # suffix match is exact
    assert find_files(str(tmp_path / "d" / "**" / "*.PNG"), IMG_FORMATS).files == [str(t["b"])]
    assert find_files(str(tmp_path / "d" / "*.gif"), IMG_FORMATS).files == []  # a glob matching nothing: no error
    lst = tmp_path / "lists" / "val.txt"
    lst.parent.mkdir()
    lst.write_text(f"../d/a.jpg\n\n  ../d/sub/deep  \n{t['b']}\n../d/gone.jpg\n../d/sub/*.gif\n")
    found = find_files(lst, IMG_FORMATS + VID_FORMATS)
    # relative lines against the list's folder; a folder line is searched; a missing image line is kept (the
    # reader reports it, no stat per line); a glob line is expanded
    assert found.files == [str(t["a"]), str(t["c"]), str(t["b"]), str(tmp_path / "d" / "gone.jpg"), str(t["gif"])]
    found = find_files([tmp_path / "nope", t["a"], t["gif"]], IMG_FORMATS)
    assert (
        found.missing == [str(tmp_path / "nope")] and found.files == [str(t["a"])] and found.others == [str(t["gif"])]
    )


def test_detect_and_dataset_share_the_rule(tmp_path: Path) -> None:
    from utils.dataloaders.dataset import find_images

    t = _tree(tmp_path / "d")
    images, videos = collect_files(tmp_path / "d")
    assert images == [str(t["a"]), str(t["b"])] and videos == [str(t["c"]), str(t["gif"])]  # subfolders searched
    assert find_images(tmp_path / "d") == sorted(images)
    assert find_images(str(tmp_path / "d" / "*.jpg")) == [str(t["a"])]  # globs for datasets too
    with pytest.raises(UserError, match=f"--source {tmp_path / 'x'}: no such file or folder"):
        collect_files([t["a"], tmp_path / "x"])


def test_atomic_link_names_the_same_bytes_and_survives_the_source_being_replaced(tmp_path):
    from utils.core.files import atomic_link, atomic_write_bytes

    last, best = tmp_path / "last.pt", tmp_path / "best.pt"
    atomic_write_bytes(best, b"old best")
    atomic_write_bytes(last, b"epoch 3")
    atomic_link(last, best)
    assert best.read_bytes() == b"epoch 3" and os.path.samefile(last, best)  # a link: no second write
    atomic_write_bytes(last, b"epoch 4")  # the next epoch replaces last.pt with a new file
    assert best.read_bytes() == b"epoch 3" and last.read_bytes() == b"epoch 4"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]  # no temp left


def test_atomic_link_copies_where_hard_links_fail(tmp_path, monkeypatch):
    from utils.core.files import atomic_link, atomic_write_bytes

    def no_links(*a):
        raise OSError(1, "Operation not permitted")

    last, best = atomic_write_bytes(tmp_path / "last.pt", b"epoch 3"), tmp_path / "best.pt"
    monkeypatch.setattr(os, "link", no_links)
    atomic_link(last, best)
    assert best.read_bytes() == b"epoch 3" and not os.path.samefile(last, best)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.pt", "last.pt"]
