"""Benchmark: an ultralytics/yolov5 checkpoint evaluated by yolov5's own val.py / detect.py and by ours.

    python benchmarks/yolov5_parity.py --yolov5 PATH/TO/yolov5-clone --yolov5-python PATH/TO/its/venv/bin/python
    python benchmarks/yolov5_parity.py --yolov5 ... --yolov5-python ... --weights yolov5n-shapes.pt  # a file you have

Without --weights, the clone's train.py trains a yolov5n from scratch on the shapes dataset (data/shapes.yaml, which
generates it offline) for --epochs at --imgsz, so the file is a real yolov5 checkpoint (pickled modules, fp16). Then:
yolov5's val.py and ours score the file on the same val images (conf 0.001, IoU 0.6) and the mAP50 / mAP50-95 are
printed with their difference; yolov5's detect.py and ours run on the same images at --conf / --iou and the boxes are
matched per image (same class, nearest corners) to print the largest corner difference in pixels.

Validation runs at batch 1 on both sides by default: both NMS implementations stop a batch after 0.5 + 0.05 x batch
seconds, and on a busy CPU a batch of 32 at conf 0.001 exceeds that, which drops predictions (differently on each
run); the benchmark counts such warnings on both sides. yolov5's detect.py rounds its boxes to whole pixels and ours
does not, so the box difference is printed both raw (up to 0.5 px from that rounding alone) and with ours rounded.

Nothing is downloaded and nothing of yolov5 runs in this process: the clone only runs in its own subprocesses with
--yolov5-python (its train.py / detect.py CLIs, and a two-line call of its val.run for full-precision figures). Each
side reads its own hard-linked copy of the images so their label caches (both named labels/*.cache) do not collide.
Targets: |mAP50-95 difference| <= 0.005, boxes within 1 px.

With --ours PATH (one of our detection checkpoints, e.g. the quick start's best.pt) the direction is reversed: the
file is exported with our export.py to ONNX and OpenVINO at --imgsz, and yolov5's val.py / detect.py run OUR exported
files through its DetectMultiBackend (which reads their stride / names metadata), against our val.py / detect.py on
the same files; the same targets apply per format. --yolov5-pythonpath adds the clone's packages for its processes
only (e.g. a `pip install --target` folder), when --yolov5-python is this venv's python.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np
import yaml

import detect
import export
import val
from utils.core.errors import UserError, cli_main
from utils.core.image_io import imread
from utils.core.log import LOGGER
from utils.dataloaders.data_yaml import check_dataset

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:/Windows/Fonts/arial.ttf",
)
# yolov5's val.run, called in its clone; prints P, R, mAP50, mAP50-95 unrounded (its CLI prints 3 digits). half=False
# as its CLI's default: run() itself defaults to half=True, which a direct call keeps even on CPU (fp16 inference)
Y5_VAL = (
    "import json, sys; sys.path.insert(0, {root!r}); import val; "
    "r = val.run(data={data!r}, weights={weights!r}, imgsz={imgsz}, batch_size={batch}, conf_thres=0.001, "
    "iou_thres=0.6, device='cpu', workers=2, project={project!r}, name='val', exist_ok=True, plots=False, "
    "half=False); "
    "print('PARITY ' + json.dumps([float(x) for x in r[0][:4]]))"
)
NMS_LIMIT = "NMS time limit"  # both sides' warning when NMS stops a batch early


@dataclass
class Side:
    """One side's dataset: its yaml and val image folder (hard links of the same files for both sides)."""

    yaml: Path
    val_images: Path


def link_tree(src: Path, dst: Path) -> None:
    """images/ and labels/ of a dataset hard-linked (copied across file systems) under dst."""
    for f in src.rglob("*"):
        if f.is_file() and f.suffix != ".cache" and f.relative_to(src).parts[0] in ("images", "labels"):
            out = dst / f.relative_to(src)
            out.parent.mkdir(parents=True, exist_ok=True)
            if not out.exists():
                try:
                    os.link(f, out)
                except OSError:
                    shutil.copy2(f, out)


def prepare_data(work: Path) -> dict[str, Side]:
    """The shapes dataset (generated on first use) as one tree per side, each with its own yaml."""
    d = check_dataset(ROOT / "data" / "shapes.yaml")
    root = Path(d["path"])
    sides = {}
    for side in ("ours", "yolov5"):
        link_tree(root, work / side)
        cfg = {"path": str(work / side), "train": "images/train", "val": "images/val", "names": dict(d["names"])}
        (work / f"{side}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        sides[side] = Side(work / f"{side}.yaml", work / side / "images" / "val")
    return sides


def yolov5_env(work: Path, pythonpath: str = "") -> dict[str, str]:
    """Environment for the clone's processes: no pip installs, and a font in its config folder so that its dataset
    check does not download Arial.ttf (any TrueType font will do; only plots draw text)."""
    cfg = work / "yolov5_config"
    cfg.mkdir(parents=True, exist_ok=True)
    if not (cfg / "Arial.ttf").is_file():
        found = [Path(f) for f in FONT_CANDIDATES if Path(f).is_file()]
        found += sorted(Path(sys.prefix).glob("lib/python*/site-packages/matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf"))
        if not found:
            raise UserError(
                f"no TrueType font found for yolov5's Arial.ttf — copy any .ttf to {cfg / 'Arial.ttf'} "
                f"(yolov5 would otherwise try to download it)"
            )
        shutil.copy2(found[0], cfg / "Arial.ttf")
    env = {**os.environ, "YOLOV5_CONFIG_DIR": str(cfg), "YOLOv5_AUTOINSTALL": "false", "PYTHONWARNINGS": "ignore"}
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [pythonpath, env.get("PYTHONPATH", "")]))
    return env


def run_yolov5(args: list[str], a: argparse.Namespace, env: dict[str, str], what: str) -> str:
    """Run the clone's python with args (cwd = the clone); its stdout + stderr, or exit with its tail on failure."""
    t0 = time.time()
    r = subprocess.run([a.yolov5_python, *args], cwd=a.yolov5, env=env, capture_output=True, text=True)
    out = r.stdout + r.stderr
    if r.returncode:
        sys.exit(f"yolov5 {what} failed (exit {r.returncode}):\n{out[-3000:]}")
    print(f"yolov5 {what}: {time.time() - t0:.0f} s", flush=True)
    return out


def train_yolov5(a: argparse.Namespace, side: Side, work: Path, env: dict[str, str]) -> Path:
    """A yolov5n trained from scratch by the clone's train.py with its default hyp.scratch-low.yaml (seed 0: the
    same file on every run), validated only after the last epoch."""
    run_yolov5(
        [
            "train.py",
            "--img",
            str(a.imgsz),
            "--batch",
            str(a.batch),
            "--epochs",
            str(a.epochs),
            "--cfg",
            "models/yolov5n.yaml",
            "--weights",
            "",
            "--data",
            str(side.yaml),
            "--workers",
            "2",
            "--noplots",
            "--noval",
            "--device",
            "cpu",
            "--project",
            str(work / "yolov5_runs"),
            "--name",
            "train",
            "--exist-ok",
        ],
        a,
        env,
        f"train.py ({a.epochs} epochs, {a.imgsz} px)",
    )
    return work / "yolov5_runs" / "train" / "weights" / "last.pt"


@dataclass
class Scores:
    pr_map: list[float]  # P, R, mAP50, mAP50-95
    nms_cut: int  # NMS time-limit warnings: batches whose predictions were cut short


def val_yolov5(a: argparse.Namespace, weights: Path, side: Side, work: Path, env: dict[str, str]) -> Scores:
    code = Y5_VAL.format(
        root=str(Path(a.yolov5).resolve()),
        data=str(side.yaml),
        weights=str(weights),
        imgsz=a.imgsz,
        batch=a.val_batch,
        project=str(work / "yolov5_runs"),
    )
    out = run_yolov5(["-c", code], a, env, "val.run")
    line = next(ln for ln in out.splitlines() if ln.startswith("PARITY "))
    return Scores(json.loads(line[len("PARITY ") :]), out.count(NMS_LIMIT))


def val_ours(a: argparse.Namespace, weights: Path, side: Side, work: Path) -> Scores:
    t0, log = time.time(), io.StringIO()
    handler = logging.StreamHandler(log)
    LOGGER.addHandler(handler)
    try:
        r = val.run(
            data=str(side.yaml),
            weights=str(weights),
            imgsz=a.imgsz,
            batch_size=a.val_batch,
            conf_thres=0.001,
            iou_thres=0.6,
            device="cpu",
            workers=2,
            project=str(work / "ours_runs"),
            name="val",
            exist_ok=True,
            plots=False,
        )
    finally:
        LOGGER.removeHandler(handler)
    print(f"our val.run: {time.time() - t0:.0f} s", flush=True)
    return Scores([float(x) for x in r[0][:4]], log.getvalue().count(NMS_LIMIT))


def detect_yolov5(
    a: argparse.Namespace, weights: Path, images: Path, work: Path, env: dict[str, str]
) -> dict[str, np.ndarray]:
    """{image stem: (n, 6) x1 y1 x2 y2 conf cls in pixels} from the clone's detect.py --save-txt --save-conf."""
    out = work / "yolov5_runs" / "detect"
    shutil.rmtree(out, ignore_errors=True)  # its labels/*.txt are appended to
    run_yolov5(
        [
            "detect.py",
            "--weights",
            str(weights),
            "--source",
            str(images),
            "--imgsz",
            str(a.imgsz),
            "--conf-thres",
            str(a.conf),
            "--iou-thres",
            str(a.iou),
            "--device",
            "cpu",
            "--save-txt",
            "--save-conf",
            "--nosave",
            "--project",
            str(out.parent),
            "--name",
            "detect",
            "--exist-ok",
        ],
        a,
        env,
        "detect.py",
    )
    boxes = {}
    for f in sorted(images.iterdir()):
        h, w = imread(f).shape[:2]
        txt = out / "labels" / f"{f.stem}.txt"
        rows = np.loadtxt(txt, ndmin=2) if txt.is_file() else np.zeros((0, 6))  # cls cx cy w h conf, normalised
        xyxy = np.stack(
            [
                rows[:, 1] - rows[:, 3] / 2,
                rows[:, 2] - rows[:, 4] / 2,
                rows[:, 1] + rows[:, 3] / 2,
                rows[:, 2] + rows[:, 4] / 2,
            ],
            1,
        ) * [w, h, w, h]
        boxes[f.stem] = np.concatenate([xyxy, rows[:, 5:6], rows[:, 0:1]], 1)
    return boxes


def detect_ours(a: argparse.Namespace, weights: Path, images: Path, work: Path) -> dict[str, np.ndarray]:
    t0 = time.time()
    r = detect.run(
        weights=str(weights),
        source=str(images),
        imgsz=a.imgsz,
        conf_thres=a.conf,
        iou_thres=a.iou,
        device="cpu",
        nosave=True,
        project=str(work / "ours_runs"),
        name="detect",
        exist_ok=True,
    )
    print(f"our detect.run: {time.time() - t0:.0f} s", flush=True)
    return {Path(f["path"]).stem: f["boxes"].numpy().astype(np.float64) for f in r["frames"]}


@dataclass
class BoxDiff:
    boxes: tuple[int, int]  # (ours, yolov5) box counts over all images
    images_differing: int  # images where the two found a different number of boxes
    max_px: float  # largest corner difference of a matched pair (same class, nearest)
    max_px_rounded: float  # the same with our corners rounded to whole pixels, as yolov5's detect.py rounds its own
    max_conf: float  # largest confidence difference of a matched pair


def nearest_pairs(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> tuple[float, float]:
    """(largest corner difference in px, largest confidence difference) when every box is matched to the nearest
    box of the same class in the same image on the other side (both directions); inf when a box has no partner."""
    max_px = max_conf = 0.0
    for stem in sorted(set(ours) | set(theirs)):
        a, b = ours.get(stem, np.zeros((0, 6))), theirs.get(stem, np.zeros((0, 6)))
        for x, y in ((a, b), (b, a)):
            for box in x:
                same = y[y[:, 5] == box[5]]
                if not len(same):
                    return float("inf"), float("inf")
                d = np.abs(same[:, :4] - box[:4]).max(1)
                j = int(d.argmin())
                max_px, max_conf = max(max_px, float(d[j])), max(max_conf, abs(float(same[j, 4] - box[4])))
    return max_px, max_conf


def compare_boxes(ours: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> BoxDiff:
    rounded = {k: np.concatenate([np.round(v[:, :4]), v[:, 4:]], 1) for k, v in ours.items()}
    max_px, max_conf = nearest_pairs(ours, theirs)
    differing = sum(len(ours.get(k, ())) != len(theirs.get(k, ())) for k in set(ours) | set(theirs))
    return BoxDiff(
        (sum(map(len, ours.values())), sum(map(len, theirs.values()))),
        differing,
        max_px,
        nearest_pairs(rounded, theirs)[0],
        max_conf,
    )


def report(weights: Path, ours: Scores, y5: Scores, boxes: BoxDiff, a: argparse.Namespace) -> dict:
    print(f"\n{weights} — val images scored at {a.imgsz} px, batch {a.val_batch} (conf 0.001, IoU 0.6):")
    print(f"{'':10s}{'yolov5':>10s}{'ours':>10s}{'diff':>10s}")
    for i, name in enumerate(("P", "R", "mAP50", "mAP50-95")):
        print(f"{name:10s}{y5.pr_map[i]:10.5f}{ours.pr_map[i]:10.5f}{ours.pr_map[i] - y5.pr_map[i]:+10.5f}")
    if ours.nms_cut or y5.nms_cut:
        print(
            f"CAUTION: NMS time limit hit in {y5.nms_cut} yolov5 / {ours.nms_cut} our batches — predictions were "
            f"dropped; rerun on a quieter machine or with a smaller --val-batch"
        )
    print(
        f"detect at conf {a.conf}, IoU {a.iou}: boxes ours {boxes.boxes[0]} / yolov5 {boxes.boxes[1]}, images with "
        f"a different count {boxes.images_differing}, max corner difference {boxes.max_px:.4f} px raw, "
        f"{boxes.max_px_rounded:.4f} px with ours rounded like yolov5's; max confidence difference "
        f"{boxes.max_conf:.5f}"
    )
    ok = abs(ours.pr_map[3] - y5.pr_map[3]) <= 0.005 and boxes.max_px <= 1.0
    print(f"targets (|mAP50-95 diff| <= 0.005, boxes within 1 px): {'met' if ok else 'NOT met'}")
    return {"ours": ours.__dict__, "yolov5": y5.__dict__, "boxes": boxes.__dict__, "ok": ok}


def exported_parity(a: argparse.Namespace, ours: Path, sides: dict[str, Side], work: Path, env: dict) -> dict:
    """--ours: our checkpoint exported to ONNX and OpenVINO, each file scored and run by yolov5's val.py / detect.py
    and by ours; {format: report}."""
    files = export.run(weights=ours, imgsz=(a.imgsz, a.imgsz), include=["onnx", "openvino"])
    out = {}
    for fmt, f in files.items():
        y5_scores, our_scores = val_yolov5(a, f, sides["yolov5"], work, env), val_ours(a, f, sides["ours"], work)
        boxes = compare_boxes(
            detect_ours(a, f, sides["ours"].val_images, work),
            detect_yolov5(a, f, sides["yolov5"].val_images, work, env),
        )
        out[fmt] = report(f, our_scores, y5_scores, boxes, a)
    return out


def run(
    yolov5: str = "",
    yolov5_python: str = "",
    yolov5_pythonpath: str = "",
    ours: str = "",
    weights: str = "",
    epochs: int = 10,
    imgsz: int = 160,
    batch: int = 16,
    val_batch: int = 1,
    conf: float = 0.25,
    iou: float = 0.45,
    out: str = str(ROOT / "runs" / "yolov5_parity"),
) -> dict:
    """Train (unless weights) with the clone, then val and detect on both sides; prints and returns the figures."""
    if not (Path(yolov5) / "utils" / "dataloaders.py").is_file():
        raise UserError(
            f"--yolov5 {yolov5!r}: not an ultralytics/yolov5 clone (no utils/dataloaders.py) — pass the "
            f"folder of a git clone of github.com/ultralytics/yolov5"
        )
    if not Path(yolov5_python or "").is_file():
        raise UserError(
            f"--yolov5-python {yolov5_python!r}: no such python — pass the python of a venv with the "
            f"clone's requirements.txt installed"
        )
    a = argparse.Namespace(
        yolov5=str(Path(yolov5).resolve()),
        yolov5_python=yolov5_python,
        epochs=epochs,
        imgsz=imgsz,
        batch=batch,
        val_batch=val_batch,
        conf=conf,
        iou=iou,
    )
    work = Path(out).resolve()
    work.mkdir(parents=True, exist_ok=True)
    sides, env = prepare_data(work), yolov5_env(work, yolov5_pythonpath)
    if ours:
        return exported_parity(a, Path(ours).resolve(), sides, work, env)
    w = Path(weights).resolve() if weights else train_yolov5(a, sides["yolov5"], work, env)
    y5_scores, our_scores = val_yolov5(a, w, sides["yolov5"], work, env), val_ours(a, w, sides["ours"], work)
    boxes = compare_boxes(
        detect_ours(a, w, sides["ours"].val_images, work), detect_yolov5(a, w, sides["yolov5"].val_images, work, env)
    )
    return report(w, our_scores, y5_scores, boxes, a)


def parse_opt() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--yolov5", required=True, help="folder of an ultralytics/yolov5 git clone")
    p.add_argument("--yolov5-python", required=True, help="python of a venv with the clone's requirements")
    p.add_argument("--yolov5-pythonpath", default="", help="extra PYTHONPATH for the clone's processes only")
    p.add_argument("--ours", default="", help="our .pt: export it to ONNX + OpenVINO and run those with yolov5's code")
    p.add_argument("--weights", default="", help="a yolov5 .pt trained on shapes (default: train one with the clone)")
    p.add_argument("--epochs", type=int, default=10, help="yolov5 training epochs (without --weights)")
    p.add_argument("--imgsz", type=int, default=160, help="train, val and detect image size")
    p.add_argument("--batch", type=int, default=16, help="yolov5 training batch size")
    p.add_argument("--val-batch", type=int, default=1, help="val batch size (both sides; 1 avoids NMS time limits)")
    p.add_argument("--conf", type=float, default=0.25, help="detect confidence threshold (both sides)")
    p.add_argument("--iou", type=float, default=0.45, help="detect NMS IoU threshold (both sides)")
    p.add_argument("--out", default=str(ROOT / "runs" / "yolov5_parity"), help="work folder (data copies, runs)")
    return p.parse_args()


if __name__ == "__main__":
    cli_main(lambda: run(**vars(parse_opt())))
