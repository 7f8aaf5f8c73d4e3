"""Data fixtures: a tiny shapes dataset generated once per test session (other areas' tests use shapes_yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

TINY = dict(n_train=32, n_val=16, imgsz=128, seed=0)  # small enough to generate in ~1 s


def write_shapes_yaml(root: Path, file: Path) -> Path:
    """A dataset yaml for a generated shapes dataset at root (absolute path, names, val_json)."""
    from data.scripts.make_shapes import NAMES

    data = {
        "path": str(root),
        "train": "images/train",
        "val": "images/val",
        "val_json": "annotations/instances_val.json",
        "names": dict(NAMES),
    }
    file.write_text(yaml.safe_dump(data, sort_keys=False))
    return file


@pytest.fixture(scope="session")
def shapes_yaml(tmp_path_factory) -> Path:
    """Path of a dataset yaml for a TINY shapes dataset (32 train + 16 val images, 128 px, seed 0)."""
    from data.scripts.make_shapes import generate_shapes

    base = tmp_path_factory.mktemp("shapes_data")
    root = generate_shapes(base / "shapes", **TINY)
    return write_shapes_yaml(root, base / "shapes.yaml")
