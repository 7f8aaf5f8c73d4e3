"""val.run on the generated shapes data through the real loader: letterbox -> original pixels -> COCO json ->
pycocotools, with a scripted model that predicts the ground truth plus noise (so the expected mAP is known)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import val

IMG = 96  # the 128 px images are scaled to 96 and padded to 128 (rect, pad 0.5): exercises the letterbox undo


class GroundTruthModel(torch.nn.Module):
    """Eval-mode stand-in for Model: predicts each target of the current batch (jittered box, random confidence)
    plus one low-confidence false positive per image. The feeder sets .targets before every forward."""

    def __init__(self, nc: int, names: dict[int, str], jitter: float, seed: int = 0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))  # val reads the device from the parameters
        self.stride, self.nc, self.names = torch.tensor([8.0, 16.0, 32.0]), nc, names
        self.jitter, self.rng, self.targets = jitter, np.random.default_rng(seed), torch.zeros(0, 6)

    def forward(self, x: torch.Tensor):
        b, _, h, w = x.shape
        t = self.targets.numpy()
        pred = torch.zeros(b, int(np.bincount(t[:, 0].astype(int), minlength=b).max()) + 1, 5 + self.nc)
        for i in range(b):
            rows = t[t[:, 0] == i]
            for k, (_, c, cx, cy, bw, bh) in enumerate(rows):
                bw, bh = bw * w, bh * h
                noise = self.rng.normal(0, self.jitter, 4)
                pred[i, k, :5] = torch.tensor(
                    [
                        cx * w + noise[0] * bw,
                        cy * h + noise[1] * bh,
                        bw * (1 + noise[2]),
                        bh * (1 + noise[3]),
                        0.5 + 0.5 * self.rng.random(),
                    ]
                )
                pred[i, k, 5 + int(c)] = 1.0
            pred[i, -1, :5] = torch.tensor([w * 0.3, h * 0.3, 20.0, 20.0, 0.05])  # a false positive
            pred[i, -1, 5] = 1.0
        return pred, [torch.zeros(1)]


class TargetFeeder:
    """Wraps the real dataloader: hands each batch's targets to the model, yields the batch unchanged."""

    def __init__(self, loader, model: GroundTruthModel):
        self.loader, self.model, self.dataset = loader, model, loader.dataset

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            self.model.targets = batch[1].clone()
            yield batch


def validate(data: dict, save_dir: Path, save_json: bool, jitter: float):
    """val.run the in-memory way train.py does, on the val split loaded like val.py loads it (rect, pad 0.5)."""
    from utils.dataloaders.dataset import create_dataloader

    names = {int(k): v for k, v in data["names"].items()}
    model = GroundTruthModel(len(names), names, jitter)
    loader = create_dataloader(data["val"], IMG, 4, 32, pad=0.5, rect=True, workers=0)[0]
    return val.run(
        data,
        model=model,
        dataloader=TargetFeeder(loader, model),
        imgsz=IMG,
        save_json=save_json,
        save_dir=save_dir,
        plots=False,
    )


@pytest.fixture(scope="module")
def shapes_data(shapes_yaml):
    from utils.dataloaders.data_yaml import check_dataset

    return check_dataset(str(shapes_yaml))


def test_perfect_predictions_score_one(shapes_data, tmp_path):
    (mp, mr, map50, map5095, *_), maps, _ = validate(shapes_data, tmp_path, save_json=True, jitter=0.0)
    assert map50 == pytest.approx(1.0, abs=1e-3) and map5095 == pytest.approx(
        1.0, abs=0.02
    )  # the COCO evaluator's numbers


def test_pycocotools_matches_ours_with_noisy_predictions(shapes_data, tmp_path):
    ours = validate(shapes_data, tmp_path / "a", save_json=False, jitter=0.06)[0]
    coco = validate(shapes_data, tmp_path / "b", save_json=True, jitter=0.06)[0]
    pred_json = tmp_path / "b" / "_predictions.json"
    dets = json.loads(pred_json.read_text())
    anno = json.loads((Path(shapes_data["path"]) / shapes_data["val_json"]).read_text())
    assert {d["image_id"] for d in dets} <= {im["id"] for im in anno["images"]}
    assert {d["category_id"] for d in dets} <= {c["id"] for c in anno["categories"]}
    assert 0.3 < ours[3] < 0.95  # the noise costs mAP50-95: the comparison below is not trivial
    assert coco[3] == pytest.approx(ours[3], abs=0.005)  # mAP50-95
    assert coco[2] == pytest.approx(ours[2], abs=0.005)  # mAP50


def test_val_cli_save_json_end_to_end(trained_weights, shapes_yaml, tmp_path):
    """The real command: `val.py --save-json --pycocotools` with trained weights on the generated data runs
    pycocotools next to our evaluator."""
    import subprocess
    import sys

    r = subprocess.run(
        [
            sys.executable,
            str(Path(val.__file__)),
            "--data",
            str(shapes_yaml),
            "--weights",
            str(trained_weights),
            "--img",
            "128",
            "--device",
            "cpu",
            "--workers",
            "0",
            "--save-json",
            "--pycocotools",
            "--project",
            str(tmp_path),
            "--name",
            "v",
        ],
        capture_output=True,
        text=True,
        cwd="/",
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = r.stdout + r.stderr
    m = re.search(r"mAP50-95 ours ([\d.]+)\s+pycocotools ([\d.]+)", out)
    assert m, out[-2000:]
    assert float(m.group(2)) > 0.2  # the fixture model detects: pycocotools scores it
    assert abs(float(m.group(1)) - float(m.group(2))) <= 0.005
    dets = json.loads((tmp_path / "v" / "best_predictions.json").read_text())
    assert dets and {"image_id", "category_id", "bbox", "score"} <= set(dets[0])
