"""Validate a detector on a dataset split: per-class P, R, mAP50, mAP50-95, speed, optional COCO json and COCO mAP.

    python val.py --data coco.yaml --weights best.pt --img 640
    python val.py --data data.yaml --weights best.onnx --save-json --save-txt --verbose
    python val.py --data data.yaml --weights best.pt --task speed
    python val.py --data data.yaml --weights best.pt --slice 640 640    # sliced inference on the original images

train.py calls run(...) every epoch with an in-memory model, its dataloader and compute_loss.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from utils.core import args as A
from utils.core.boxes import scale_boxes, xywh2xyxy, xyxy2xywh
from utils.core.device import check_device, select_device
from utils.core.errors import UserError, cli_main
from utils.core.files import ROOT, increment_path
from utils.core.image_io import imread
from utils.core.log import LOGGER, colorstr
from utils.core.names import names_dict
from utils.core.plots import output_to_target, plot_images
from utils.core.timing import Profile
from utils.dataloaders.data_yaml import check_dataset, class_names
from utils.dataloaders.dataset import create_dataloader
from utils.evaluation.coco import (
    CocoSummary,
    class_to_category_map,
    coco_evaluate,
    coco_summary,
    detections_to_coco,
    image_id_for,
    load_annotations,
)
from utils.evaluation.metrics import ConfusionMatrix, DetectionStats
from utils.evaluation.nms import non_max_suppression
from utils.inference.api import Detector, tta_forward
from utils.inference.backend import DetectBackend
from utils.inference.slicing import DEFAULT_MERGE, DEFAULT_OVERLAP, MERGES, SliceConfig, check_tiles, slice_config

COCO_DEFAULT_JSON = "annotations/instances_val2017.json"  # where the COCO dataset keeps its val annotations
TASKS = ("train", "val", "test", "speed")


@dataclass
class ValState:
    """What one val run accumulates image by image, and the outputs it was asked for."""

    stats: DetectionStats
    confusion: ConfusionMatrix
    image_counts: np.ndarray  # per class: images with at least one label of it
    single_cls: bool
    plots: bool
    save_txt: bool
    save_conf: bool
    save_json: bool
    save_dir: Path
    name_to_id: dict[str, int]  # --save-json: image file name -> COCO image id
    class_map: list[int]  # --save-json: class index -> COCO category id
    pycocotools: bool = False  # --pycocotools: cross-check our COCO scoring with pycocotools
    jdict: list[dict] = field(default_factory=list)  # --save-json: COCO detection records
    image_ids: list[int] = field(default_factory=list)  # --save-json: the images scored


class _ModelRunner:
    """One call signature for an in-memory Model and a DetectBackend: float (B,3,H,W) 0-1 -> (pred, raw or None)."""

    def __init__(
        self,
        model: torch.nn.Module,
        stride: int,
        names: dict[int, str],
        nc: int,
        pt: bool,
        device: torch.device,
        half: bool,
        training: bool,
    ):
        self.model, self.stride, self.names, self.nc, self.pt = model, stride, names, nc, pt
        self.device, self.half, self.training = device, half, training

    def infer(self, im: torch.Tensor, augment: bool = False) -> tuple[torch.Tensor, Any]:
        """(decoded pred (B, N, 5+nc), raw head outputs for the loss or None)."""
        if augment:
            return tta_forward(self, im), None  # scaled + flipped views merged, the same TTA as detect.py
        # autocast rather than model.half() for an in-memory model: the caller's EMA weights must stay float32
        with torch.autocast("cuda", enabled=self.half and self.training):
            y = self.model(im)
        return (y[0], y[1]) if isinstance(y, (tuple, list)) else (y, None)

    def __call__(self, im: torch.Tensor) -> torch.Tensor:
        """Decoded predictions only (the DetectBackend call signature tta_forward expects)."""
        return self.infer(im)[0]


def _load_runner(
    weights: str | Path | None,
    model: torch.nn.Module | None,
    device: str,
    half: bool,
    batch_size: int,
    dnn: bool = False,
) -> _ModelRunner:
    """The model to validate: the caller's (training) or one loaded from --weights via DetectBackend."""
    if model is not None:  # called by train.py
        dev = next(model.parameters()).device
        model.eval()
        stride = int(max(float(s) for s in model.stride))
        return _ModelRunner(
            model, stride, names_dict(model.names), int(model.nc), True, dev, bool(half) and dev.type == "cuda", True
        )
    if not weights:
        raise UserError("no model given — pass --weights path/to/best.pt (or .torchscript / .onnx)")
    dev = select_device(device, batch_size=batch_size)
    backend = DetectBackend(weights, device=dev, fp16=half, dnn=dnn)
    return _ModelRunner(
        backend, int(backend.stride), names_dict(backend.names), int(backend.nc), backend.pt, dev, backend.fp16, False
    )


def _check_data(data: str | Path | dict, runner: _ModelRunner, single_cls: bool) -> tuple[dict, int, dict]:
    """(data dict, nc, names) after checking that the model's classes fit the dataset."""
    if not isinstance(data, dict):
        data = check_dataset(data)
    names, nc = class_names(data, single_cls)
    if not runner.training and runner.nc != nc:
        where = getattr(runner.model, "weights", "the weights")
        raise UserError(
            f"{where} has {runner.nc} classes but the dataset has {nc} — pass the --data yaml the model "
            f"was trained on (or --single-cls for a 1-class model)"
        )
    return data, nc, names


def _make_dataloader(
    data: dict, task: str, imgsz: int, batch_size: int, runner: _ModelRunner, single_cls: bool, workers: int, nc: int
):
    """Letterboxed, rectangular-batch val loader for the task's split (YOLOv5's val settings)."""
    split = task if task in ("train", "val", "test") else "val"  # speed runs on val
    if not data.get(split):
        raise UserError(f"the data yaml has no '{split}' split — add {split}: images/... or use --task val")
    rect = runner.pt  # exported files run at one fixed size
    pad = 0.0 if task == "speed" else 0.5
    loader = create_dataloader(
        data[split],
        imgsz,
        batch_size,
        runner.stride,
        single_cls=single_cls,
        pad=pad,
        rect=rect,
        workers=workers,
        prefix=colorstr(f"{split}: "),
        nc=None if single_cls else nc,
    )[0]  # classes >= nc: warned about and skipped
    return loader


def _labels_in_pixels(targets: torch.Tensor, si: int, im_shape: Sequence[int], shape0, ratio_pad) -> torch.Tensor:
    """Image si's targets (rows [batch, cls, cx, cy, w, h] in input pixels) -> (m, 5) [cls x1 y1 x2 y2] original px."""
    t = targets[targets[:, 0] == si, 1:]
    box = xywh2xyxy(t[:, 1:5])
    scale_boxes(im_shape, box, shape0, ratio_pad)
    return torch.cat((t[:, :1], box), 1)


def _labels_original(targets: torch.Tensor, si: int, im_shape: Sequence[int], shape0, ratio_pad) -> torch.Tensor:
    """--slice: image si's targets (input pixels) -> (m, 5) [cls x1 y1 x2 y2] in its original pixels, each axis by
    its own letterbox ratio. The sliced boxes are exact original pixels; _labels_in_pixels' one gain (scale_boxes, as
    YOLOv5) is off by the rounding of the resized side (1.2 % in x for a 200 x 136 image at --imgsz 64), which the
    plain path's boxes share but the sliced ones do not."""
    t = targets[targets[:, 0] == si, 1:]
    box = xywh2xyxy(t[:, 1:5])
    (gain_h, gain_w), (pad_w, pad_h) = ratio_pad
    box[:, [0, 2]] = (box[:, [0, 2]] - pad_w) / gain_w
    box[:, [1, 3]] = (box[:, [1, 3]] - pad_h) / gain_h
    return torch.cat((t[:, :1], box), 1)


def _save_one_txt(predn: torch.Tensor, save_conf: bool, shape0: Sequence[int], file: Path) -> None:
    """YOLO-format label file of one image's predictions: cls cx cy w h [conf], normalised to the original image."""
    gn = torch.tensor(shape0)[[1, 0, 1, 0]]
    lines = []
    for *xyxy, conf, cls in predn.tolist():
        xywh = (xyxy2xywh(torch.tensor(xyxy).view(1, 4)) / gn).view(-1).tolist()
        row = (cls, *xywh, conf) if save_conf else (cls, *xywh)
        lines.append(("%g " * len(row)).rstrip() % row)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text("\n".join(lines) + ("\n" if lines else ""))


def _anno_json(data: dict) -> Path | None:
    """The dataset's COCO annotation json: `val_json` (relative to `path`), else COCO's default location."""
    base = Path(data.get("path") or ".")
    rel = data.get("val_json") or COCO_DEFAULT_JSON
    f = Path(rel) if Path(rel).is_absolute() else base / rel
    return f if f.is_file() else None


def _coco_setup(data: dict, nc: int, save_json: bool) -> tuple[Path | None, list[int], dict[str, int]]:
    """(annotation json or None, class -> category id map, file name -> image id) for --save-json."""
    if not save_json:
        return None, list(range(nc)), {}
    anno_file = _anno_json(data)
    if anno_file is None:
        LOGGER.warning(
            "WARNING ⚠️ --save-json: no COCO annotation json found (set val_json in the data yaml); "
            "predictions are written but not scored"
        )
        return None, list(range(nc)), {}
    anno = load_annotations(anno_file)
    name_to_id = {Path(im["file_name"]).name: int(im["id"]) for im in anno["images"]}
    return anno_file, class_to_category_map(anno["categories"], nc), name_to_id


def _print_table(
    res: dict, seen: int, nt: np.ndarray, names: dict[int, str], image_counts: np.ndarray, verbose: bool
) -> None:
    """YOLOv5's results table: 'all' row, then one row per class with labels when verbose."""
    pf = "%22s" + "%11i" * 2 + "%11.3g" * 4
    LOGGER.info(("%22s" + "%11s" * 6) % ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95"))
    LOGGER.info(pf % ("all", seen, nt.sum(), res["mp"], res["mr"], res["map50"], res["map"]))
    if nt.sum() == 0:
        LOGGER.warning("WARNING ⚠️ no labels found in the validation set, metrics cannot be computed")
    if verbose:
        for i, c in enumerate(res["classes"]):
            LOGGER.info(
                pf
                % (
                    names.get(int(c), str(c)),
                    image_counts[c],
                    nt[c],
                    res["p"][i],
                    res["r"][i],
                    res["ap50"][i],
                    res["ap"][i],
                )
            )


def _process_image(
    si: int,
    pred: torch.Tensor,
    im: torch.Tensor,
    targets: torch.Tensor,
    paths,
    shapes,
    state: ValState,
    original: bool = False,
) -> None:
    """Scale one image's predictions and labels to original pixels and feed metrics, confusion matrix, txt, json.
    original: the predictions are in original pixels already (--slice)."""
    path = Path(paths[si])
    shape0, ratio_pad = (shapes[si][0], shapes[si][1]) if shapes[si] is not None else (im.shape[2:], None)
    labelsn = (_labels_original if original else _labels_in_pixels)(targets, si, im.shape[2:], shape0, ratio_pad)
    if state.single_cls:
        pred[:, 5] = 0
    predn = pred.clone()
    if not original:
        scale_boxes(im.shape[2:], predn[:, :4], shape0, ratio_pad)
    state.stats.update(predn, labelsn)
    state.image_counts[np.unique(labelsn[:, 0].long().cpu().numpy())] += 1
    if state.plots:
        state.confusion.process_batch(predn, labelsn)
    if state.save_txt:
        _save_one_txt(predn, state.save_conf, shape0, state.save_dir / "labels" / f"{path.stem}.txt")
    if state.save_json:
        image_id = image_id_for(path, state.name_to_id)
        state.jdict += detections_to_coco(predn, image_id, state.class_map)
        state.image_ids.append(image_id)


def check_opts(
    batch_size: int, imgsz: int, conf_thres: float, iou_thres: float, max_det: int, task: str, device: str, workers: int
) -> str:
    """The numeric and choice flags, checked before any model load, data scan or run folder; returns the device spec.

    --imgsz follows train.py's rule (>= 32 and a multiple of 32; of the model's max stride once it is loaded)."""
    A.check_int("batch_size", batch_size, lo=1, todo="e.g. --batch-size 32")
    A.check_imgsz(imgsz, counts=(1,))
    A.check_float("conf_thres", conf_thres, 0.0, 1.0, todo="e.g. 0.001 for mAP")
    A.check_float("iou_thres", iou_thres, 0.0, 1.0, todo="e.g. 0.6")
    A.check_int("max_det", max_det, lo=1, todo="e.g. --max-det 300")
    A.check_choice("task", task, TASKS)
    A.check_int("workers", workers, lo=0, todo="0 loads data in the main process")
    return check_device(device)


def _slicer(
    cfg: SliceConfig,
    runner: _ModelRunner,
    shapes: np.ndarray,
    imgsz: int,
    nms: tuple[float, float, int],
    agnostic: bool,
) -> Detector:
    """--slice: a Detector on the validated backend with val's NMS settings (multi-label, conf_thres, iou_thres,
    max_det), after checking the tile against the images' (w, h) shapes (some image must be larger than a tile)."""
    if runner.training:
        raise UserError("slice= needs weights= (a model file), not an in-memory model — pass weights")
    check_tiles([(int(h), int(w)) for w, h in shapes], cfg.tile)
    conf, iou, max_det = nms
    det = Detector(runner.model, runner.device, imgsz, conf, iou, agnostic=agnostic, max_det=max_det, fp16=runner.half)
    det.multi_label = True  # val's NMS, so the sliced and the plain mAP differ only by the slicing
    det.slice, det.slice_overlap, det.slice_merge = cfg.tile, cfg.overlap, cfg.merge
    return det


def _val_sliced(
    slicer: Detector,
    cfg: SliceConfig,
    im: torch.Tensor,
    targets: torch.Tensor,
    paths,
    shapes,
    augment: bool,
    dt: list[Profile],
    state: ValState,
) -> int:
    """--slice: each image of the batch read again at its original size and detected tile by tile (boxes in the
    original pixels), then scored like any image; returns the image count. Reading counts as pre-process; the
    detector's three stages add to dt."""
    with dt[0]:
        ims = [imread(p) for p in paths]
    if any(x is None for x in ims):
        raise UserError(f"--slice: cannot read {paths[[x is None for x in ims].index(True)]} again — is it intact?")
    preds = slicer.detect_sliced(ims, cfg, augment=augment, dt=dict(zip(("preprocess", "inference", "nms"), dt)))[0]
    targets = targets.clone()
    targets[:, 2:] *= torch.tensor(im.shape[2:], device=targets.device)[[1, 0, 1, 0]]  # to input pixels
    for si, pred in enumerate(preds):
        _process_image(si, pred.to(targets.device), im, targets, paths, shapes, state, original=True)
    return len(preds)


def _warn_flags(conf_thres: float, task: str, training: bool) -> None:
    """Flags that give numbers nobody else would get."""
    if conf_thres > 0.001 and task != "speed" and not training:
        LOGGER.warning(
            f"WARNING ⚠️ --conf-thres {conf_thres} > 0.001: mAP is not comparable to published numbers (they use 0.001)"
        )


def _coco_score(state: ValState, anno_file: Path | None, res: dict, weights: Any) -> None:
    """Write the predictions json and, with an annotation file, score it once with our COCO evaluator (COCOeval's
    rules): its 12 numbers are logged and its mAP50-95 / mAP50 reported. --pycocotools adds pycocotools' scoring of
    the same json as a cross-check (both logged, and their largest difference); the reported numbers stay ours."""
    w = Path(weights[0] if isinstance(weights, (list, tuple)) else weights).stem if weights else ""
    pred_json = state.save_dir / f"{w}_predictions.json"
    pred_json.write_text(json.dumps(state.jdict))
    LOGGER.info(f"COCO json with {len(state.jdict)} detections saved to {pred_json}")
    if anno_file is None:
        return
    summary = coco_summary(load_annotations(anno_file), state.jdict, state.image_ids)
    LOGGER.info(f"COCO summary (our evaluator, COCOeval's rules) against {anno_file}:")
    for line in summary.lines():  # the 12 numbers, laid out as pycocotools' summarize() prints them
        LOGGER.info(line)
    res["map"], res["map50"] = summary.AP, summary.AP50
    if state.pycocotools:
        _pycocotools_check(summary, anno_file, pred_json, state.image_ids)


def _pycocotools_check(ours: CocoSummary, anno_file: Path, pred_json: Path, image_ids: list[int]) -> None:
    """--pycocotools: the same json scored by pycocotools, logged next to ours with the largest difference."""
    LOGGER.info(f"Cross-checking with pycocotools against {anno_file}...")
    ref = coco_evaluate(anno_file, pred_json, image_ids)
    diff = max(abs(a - b) for a, b in zip(ours.as_list(), ref.as_list()))
    LOGGER.info(
        f"mAP50-95 ours {ours.AP:.4f}  pycocotools {ref.AP:.4f} | mAP50 ours {ours.AP50:.4f}  pycocotools "
        f"{ref.AP50:.4f} | largest difference of the 12 COCO numbers {diff:.2g} (ours reported)"
    )


def _val_plots(state: ValState, batch_i: int, im: torch.Tensor, targets: torch.Tensor, paths, preds, names) -> None:
    """First three batches: labels and predictions side by side as val_batch{i}_labels.jpg / _pred.jpg."""
    if state.plots and batch_i < 3:
        d = state.save_dir
        plot_images(im, targets, paths, d / f"val_batch{batch_i}_labels.jpg", names)
        plot_images(im, output_to_target(preds, max_det=15), paths, d / f"val_batch{batch_i}_pred.jpg", names)


@torch.no_grad()
def run(
    data: str | Path | dict = str(ROOT / "data" / "coco128.yaml"),
    weights: str | Path | None = None,
    batch_size: int = 32,
    imgsz: int = 640,
    conf_thres: float = 0.001,
    iou_thres: float = 0.6,
    max_det: int = 300,
    task: str = "val",
    device: str = "",
    workers: int = 8,
    single_cls: bool = False,
    augment: bool = False,
    verbose: bool = False,
    save_txt: bool = False,
    save_conf: bool = False,
    save_json: bool = False,
    pycocotools: bool = False,
    project: str | Path = str(ROOT / "runs" / "val"),
    name: str = "exp",
    exist_ok: bool = False,
    half: bool = False,
    dnn: bool = False,
    slice: list[int] | tuple[int, ...] | None = None,
    slice_overlap: float = DEFAULT_OVERLAP,
    slice_merge: str = DEFAULT_MERGE,
    model: torch.nn.Module | None = None,
    dataloader=None,
    save_dir: Path = Path(""),
    plots: bool = True,
    compute_loss=None,
):
    """Validate and return ((mp, mr, map50, map, *val_losses), maps (per-class mAP50-95, nc), times (ms/image:
    pre-process, inference, NMS)). See the module docstring for the CLI, whose defaults are these.

    slice=(W, H): sliced inference (utils/inference/slicing.py) on each original image, with slice_overlap and
    slice_merge; model, dataloader, save_dir, plots and compute_loss are for train.py's in-memory calls (no CLI
    flags)."""
    sliced = slice_config(slice, slice_overlap, slice_merge)
    device = check_opts(
        batch_size=batch_size,
        imgsz=imgsz,
        conf_thres=conf_thres,
        iou_thres=iou_thres,
        max_det=max_det,
        task=task,
        device=device,
        workers=workers,
    )
    runner = _load_runner(weights, model, device, half, batch_size, dnn)
    if task == "speed":  # YOLOv5's speed benchmark settings
        conf_thres, iou_thres, save_json, pycocotools, plots = 0.25, 0.45, False, False, False
    save_json = save_json or pycocotools  # pycocotools scores the predictions json
    _warn_flags(conf_thres, task, runner.training)
    data, nc, names = _check_data(data, runner, single_cls)
    if dataloader is None:
        A.check_stride_multiple(imgsz, runner.stride)  # the same rule as train.py
        dataloader = _make_dataloader(data, task, imgsz, batch_size, runner, single_cls, workers, nc)
    if len(dataloader.dataset) == 0:
        raise UserError(f"the {task} set has no images — check '{task}' in the data yaml")
    nms = (conf_thres, iou_thres, max_det)
    slicer = _slicer(sliced, runner, dataloader.dataset.shapes, imgsz, nms, single_cls) if sliced else None
    if not runner.training:  # only now that data, model and flags are checked: no empty run folders on errors
        save_dir = increment_path(Path(project) / name, exist_ok=exist_ok)
    save_dir = Path(save_dir)
    (save_dir / "labels" if save_txt else save_dir).mkdir(parents=True, exist_ok=True)
    anno_file, class_map, name_to_id = _coco_setup(data, nc, save_json)
    state = ValState(
        DetectionStats(),
        ConfusionMatrix(nc=nc),
        np.zeros(nc, dtype=int),
        single_cls,
        plots,
        save_txt,
        save_conf,
        save_json,
        save_dir,
        name_to_id,
        class_map,
        pycocotools,
    )
    dt = [Profile(runner.device) for _ in range(3)]  # pre-process, inference, NMS
    seen, loss = 0, torch.zeros(3, device=runner.device)
    desc = ("%22s" + "%11s" * 6) % ("Class", "Images", "Instances", "P", "R", "mAP50", "mAP50-95")
    for batch_i, (im, targets, paths, shapes) in enumerate(tqdm(dataloader, desc=desc, leave=not runner.training)):
        with dt[0]:
            im = im.to(runner.device, non_blocking=True)
            im = (im.half() if runner.half and not runner.training else im.float()) / 255
            targets = targets.to(runner.device)
        if slicer is not None:  # boxes in original pixels: no plots of the letterboxed batch
            seen += _val_sliced(slicer, sliced, im, targets, paths, shapes, augment, dt, state)
            continue
        with dt[1]:
            preds, raw = runner.infer(im, augment=augment)
        if compute_loss is not None and raw is not None:
            loss += compute_loss([x.float() for x in raw], targets)[1]
        targets = targets.clone()
        targets[:, 2:] *= torch.tensor(im.shape[2:], device=runner.device)[[1, 0, 1, 0]]  # to input pixels
        with dt[2]:
            preds = non_max_suppression(
                preds.float(), conf_thres, iou_thres, multi_label=True, agnostic=single_cls, max_det=max_det
            )
        for si, pred in enumerate(preds):
            _process_image(si, pred, im, targets, paths, shapes, state)
        seen += len(preds)
        _val_plots(state, batch_i, im, targets, paths, preds, names)
    verbose = (verbose or (not runner.training and nc < 50)) and nc > 1
    seconds = [p.t for p in dt]
    return _finish(state, seen, seconds, loss, len(dataloader), names, nc, verbose, anno_file, weights, runner, task)


def _finish(
    state: ValState,
    seen: int,
    dt: list[float],
    loss: torch.Tensor,
    n_batches: int,
    names: dict[int, str],
    nc: int,
    verbose: bool,
    anno_file: Path | None,
    weights: Any,
    runner: _ModelRunner,
    task: str,
):
    """Compute and print the summary, plots, COCO eval; build run()'s return value."""
    res = state.stats.compute(plot=state.plots, save_dir=state.save_dir, names=names)
    nt = (
        np.bincount(np.concatenate(state.stats.target_cls).astype(int), minlength=nc)
        if state.stats.target_cls
        else np.zeros(nc, dtype=int)
    )
    _print_table(res, seen, nt, names, state.image_counts, verbose)
    times = tuple(x / max(seen, 1) * 1e3 for x in dt)  # ms per image
    if not runner.training:
        LOGGER.info("Speed: {:.1f}ms pre-process, {:.1f}ms inference, {:.1f}ms NMS per image".format(*times))
    if state.plots:
        state.confusion.plot(save_dir=state.save_dir, names=names)
    if state.save_json and seen:
        _coco_score(state, anno_file, res, weights)
    if not runner.training and task != "speed":
        LOGGER.info(f"Results saved to {colorstr('bold', state.save_dir)}")
    maps = np.zeros(nc) + res["map"]
    for i, c in enumerate(res["classes"]):
        maps[c] = res["ap"][i]
    losses = (loss.cpu() / max(n_batches, 1)).tolist()
    return (res["mp"], res["mr"], res["map50"], res["map"], *losses), maps, times


def parse_opt(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """val.py's flags; every default is run()'s."""
    p = A.ArgParser(description="Validate a detector on a dataset split", defaults=A.signature_defaults(run))
    p.add_argument("--data", type=str, help="dataset yaml")
    p.add_argument("--weights", type=str, help="model .pt / .torchscript / .onnx")
    p.add_argument("--batch-size", type=int, help="batch size")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, help="inference size (pixels)")
    p.add_argument("--conf-thres", type=float, help="confidence threshold (0.001 for mAP)")
    p.add_argument("--iou-thres", type=float, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, help="maximum detections per image")
    p.add_argument("--task", choices=TASKS, help="split, or speed")
    p.add_argument("--device", help="cuda device, i.e. 0 or 0,1 or cpu")
    p.add_argument("--workers", type=int, help="max dataloader workers")
    p.add_argument("--single-cls", action="store_true", help="treat as a single-class dataset")
    p.add_argument("--augment", action="store_true", help="test-time augmentation")
    p.add_argument("--verbose", action="store_true", help="report mAP by class")
    p.add_argument("--save-txt", action="store_true", help="save results to *.txt")
    p.add_argument("--save-conf", action="store_true", help="save confidences in --save-txt labels")
    p.add_argument("--save-json", action="store_true", help="save a COCO results json and score it (COCO mAP)")
    p.add_argument("--pycocotools", action="store_true", help="also score it with pycocotools, print both (a check)")
    p.add_argument("--project", help="save to project/name")
    p.add_argument("--name", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--half", action="store_true", help="FP16 half-precision inference (CUDA only)")
    p.add_argument("--dnn", action="store_true", help="run an .onnx file with OpenCV DNN")
    p.add_argument("--slice", nargs="+", type=int, metavar=("W", "H"), help="sliced inference: W x H pixel tiles")
    p.add_argument("--slice-overlap", type=float, help="tile overlap, a fraction of the tile size")
    p.add_argument("--slice-merge", choices=MERGES, help="how tile boxes are merged: nmm (joins cut boxes) or nms")
    opt = p.parse_args(argv)
    opt.save_txt |= opt.save_conf  # --save-conf implies --save-txt
    return opt


def main(opt: argparse.Namespace):
    return run(**vars(opt))


if __name__ == "__main__":
    cli_main(lambda: main(parse_opt()))
