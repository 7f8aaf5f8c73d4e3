"""Train an image classifier on a folder of class sub-folders: ConvNeXt V1/V2, Conv2Former or YOLOv5 CSP.

    python classify/train.py                                                  # ConvNeXt-atto on the embedded set
    python classify/train.py --model convnext_tiny --pretrained convnext_tiny_1k --data path/to/folder --img 224 \\
        --lr0 0.0005 --layer-decay 0.8 --drop-path 0.1                        # fine-tune an ImageNet model
    python classify/train.py --model yolov5s-cls --data path/to/folder --img 224 --epochs 90   # from scratch
    torchrun --nproc_per_node 2 classify/train.py --data path/to/folder --batch-size 64       # DDP
    python classify/train.py --resume                                          # the newest runs/train-cls run

--data: root/train/<class>/*.jpg + root/val/<class>/*.jpg (or test/), a dataset yaml, or a name (shapes-cls).
Outputs in runs/train-cls/exp*/: weights/best.pt + last.pt, results.csv, results.png, train_images.jpg,
confusion_matrix.png, opt.yaml (+ TensorBoard events when tensorboard is installed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run from any cwd, as `python classify/train.py`

import torch

from models.checkpoint import load_checkpoint, model_from_record
from models.classifier import CLASSIFIER_NAMES, ClassificationModel, classifier_cfg
from models.classifier_weights import load_classifier_weights
from utils.core import args as A
from utils.core.device import check_device, select_device
from utils.core.distributed import (
    DistInfo,
    broadcast_object,
    check_batch_size,
    cleanup_distributed,
    dist_info,
    init_distributed,
)
from utils.core.errors import UserError, cli_main
from utils.core.files import check_writable, increment_path
from utils.core.log import LOGGER
from utils.dataloaders.classify import ClassifyData, check_classify_data, create_classify_loader
from utils.training.classify_options import ClassifyTrainOptions
from utils.training.classify_trainer import ClassifyParts, ClassifyRunResult, ClassifyTrainer
from utils.training.ema import ModelEMA
from utils.training.optim import build_optimizer
from utils.training.train_setup import check_resumable, ddp_wrapper, find_resume_checkpoint
from utils.training.trainer import seed_everything

MACHINE_KEYS = ("device", "workers", "cache")  # --resume takes these from the command line, the rest from the run


def _resolve_run(opt: ClassifyTrainOptions, info: DistInfo) -> tuple[ClassifyTrainOptions, Path, dict | None]:
    """(opt, save_dir, resume checkpoint or None), checked before any heavy work."""
    if opt.resume:
        path = find_resume_checkpoint(opt.resume, opt.project)
        ckpt = load_checkpoint(path)
        check_resumable(path, ckpt)
        if ckpt["model"]["yaml"].get("task") != "classify":
            raise UserError(f"{path} is a detection run — resume it with train.py --resume {path}")
        saved = {k: v for k, v in ckpt["opt"].items() if k in {f.name for f in fields(ClassifyTrainOptions)}}
        opt = replace(opt, **{**saved, **{k: getattr(opt, k) for k in MACHINE_KEYS}, "resume": str(path)})
        if ckpt["epoch"] + 1 >= opt.epochs:
            raise UserError(f"{path}: the run already trained {ckpt['epoch'] + 1} of {opt.epochs} epochs")
        LOGGER.info(f"Resuming training from {path}")
        return opt, path.parent.parent, ckpt
    save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
    if info.main:
        check_writable(save_dir)
    return opt, save_dir, None


def _new_model(opt: ClassifyTrainOptions, data: ClassifyData) -> ClassificationModel:
    """The model of --model (name, yaml or classifier checkpoint) for data's classes, with --pretrained loaded."""
    src = opt.model
    if Path(src).suffix in (".pt", ".pth") and Path(src).is_file():
        rec = load_checkpoint(src)["model"]
        if rec["yaml"].get("task") != "classify":
            raise UserError(
                f"--model {src} is a detection checkpoint — pass a classifier (name, yaml or classifier .pt); its "
                f"backbone can go the other way: train.py --backbone-weights runs/train-cls/.../best.pt"
            )
        model = ClassificationModel(rec["yaml"], nc=data.nc)
        load_classifier_weights(model, src)  # head kept for the same class count, else re-initialised
    elif src in CLASSIFIER_NAMES:
        model = ClassificationModel(classifier_cfg(src, data.nc, drop_path=opt.drop_path, dropout=opt.dropout))
    else:
        model = ClassificationModel(src, nc=data.nc)  # a yaml path or bare name under models/ (UserError if none)
    if opt.pretrained:
        load_classifier_weights(model, opt.pretrained)
    model.names = dict(data.names)
    return model


def _build_parts(
    opt: ClassifyTrainOptions, data: ClassifyData, device: torch.device, info: DistInfo, ckpt: dict | None
) -> ClassifyParts:
    model = model_from_record(ckpt["model"]) if ckpt is not None else _new_model(opt, data)
    model.names = dict(data.names)
    model = model.to(device)
    if opt.channels_last:  # before the optimizer and EMA, so both hold NHWC tensors
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, opt.optimizer, opt.lr0, opt.momentum, opt.decay, opt.layer_decay)
    batch = check_batch_size(opt.batch_size, info.world_size)
    common = dict(  # uint8 batches, normalised on the device by the trainer and the evaluator
        names=data.names, opts=opt.augment(), workers=opt.workers, rank=info.rank, seed=opt.seed, normalize=False
    )
    train_loader, _ = create_classify_loader(
        data.train, opt.imgsz, batch, augment=True, cache=opt.cache, prefix="train: ", **common
    )
    val_loader, _ = create_classify_loader(data.val, opt.imgsz, batch * 2, cache=opt.cache, prefix="val: ", **common)
    # every rank keeps the same EMA (DDP keeps the weights equal), so every rank validates the same model
    ema = ModelEMA(model, decay=opt.ema_decay) if opt.ema else None
    wrap = ddp_wrapper(info, device, sync_bn=False)
    return ClassifyParts(wrap(model), train_loader, val_loader, optimizer, ema, dict(data.names))


def run(**kwargs: Any) -> ClassifyRunResult:
    """Train and return ClassifyRunResult (save_dir, best, last, epochs_trained, top1, top5, loss, metrics).

    The keywords are the CLI flags' names (batch_size for --batch-size): the fields of
    utils.training.classify_options.ClassifyTrainOptions, whose defaults are the CLI's. Under torchrun each process
    calls run()."""
    opt = ClassifyTrainOptions.from_kwargs(kwargs)
    opt.check()
    check_device(opt.device)
    info = dist_info()
    check_batch_size(opt.batch_size, info.world_size)
    opt, save_dir, ckpt = _resolve_run(opt, info)
    data = check_classify_data(opt.data)  # layout errors before the model is built
    dev = select_device(opt.device, batch_size=opt.batch_size)
    init_distributed(info, dev)
    save_dir = Path(broadcast_object(str(save_dir)))
    try:
        seed_everything(opt.seed, deterministic=True)
        parts = _build_parts(opt, data, dev, info, ckpt)
        trainer = ClassifyTrainer(opt, parts, dev, info, save_dir)
        if ckpt is not None:
            trainer.restore(ckpt, Path(str(opt.resume)))
        else:
            trainer.out.save_settings(opt.to_dict(), asdict(opt.augment()))
        return trainer.train()
    finally:
        cleanup_distributed()


def parse_opt(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """YOLOv5's classify/train.py flags plus the ConvNeXt fine-tuning recipe's; every default is
    ClassifyTrainOptions'."""
    p = A.ArgParser(description="Train an image classifier", defaults=ClassifyTrainOptions().to_dict())
    p.add_argument("--model", type=str, help="classifier name (convnext_tiny, conv2former_n, yolov5s-cls), yaml or .pt")
    p.add_argument("--data", type=str, help="folder root/train/<class>/*, root/val/<class>/*, a yaml, or a name")
    p.add_argument("--epochs", type=int, help="total training epochs")
    p.add_argument("--batch-size", type=int, help="total batch size over all GPUs / ranks")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, help="train and val image size (pixels)")
    p.add_argument("--pretrained", type=str, help="official name (convnext_tiny_1k) or a weights file")
    p.add_argument("--optimizer", type=str, choices=("SGD", "Adam", "AdamW"), help="optimizer")
    p.add_argument("--lr0", type=float, help="peak learning rate (after warmup)")
    p.add_argument("--lrf", type=float, help="final learning rate = lr0 * lrf (cosine)")
    p.add_argument("--momentum", type=float, help="SGD momentum / Adam beta1")
    p.add_argument("--decay", type=float, help="weight decay")
    p.add_argument("--label-smoothing", type=float, help="label smoothing epsilon")
    p.add_argument("--dropout", type=float, help="dropout before the final Linear")
    p.add_argument("--drop-path", type=float, help="stochastic depth rate (default: the size table's)")
    p.add_argument("--layer-decay", type=float, help="layer-wise LR decay, e.g. 0.8 for fine-tuning")
    p.add_argument("--warmup-epochs", type=float, help="linear LR warmup epochs")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, help="EMA of the weights (validated and saved)")
    p.add_argument("--ema-decay", type=float, help="EMA decay")
    p.add_argument("--mixup", type=float, help="MixUp Beta alpha (0: off)")
    p.add_argument("--cutmix", type=float, help="CutMix Beta alpha (0: off)")
    p.add_argument("--auto-augment", type=str, help="randaugment, trivialaugment, autoaugment or none")
    p.add_argument("--erasing", type=float, help="RandomErasing probability")
    p.add_argument("--fliplr", type=float, help="horizontal flip probability")
    p.add_argument("--scale", type=float, help="smallest RandomResizedCrop area share (ImageNet: 0.08)")
    p.add_argument("--crop-ratio", type=float, help="eval centre-crop share (0.875: 224 of 256)")
    p.add_argument("--cache", type=str, nargs="?", const="ram", help="cache images in ram (default) or disk")
    p.add_argument("--workers", type=int, help="max dataloader workers (per rank)")
    p.add_argument("--device", help="cuda device, i.e. 0 or 0,1 or cpu")
    p.add_argument("--project", help="save to project/name")
    p.add_argument("--name", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--patience", type=int, help="epochs without top-1 gain before stopping (0: off)")
    p.add_argument("--seed", type=int, help="global training seed")
    p.add_argument("--resume", nargs="?", const=True, help="resume the newest run, or the given last.pt / run folder")
    p.add_argument("--verbose", action="store_true", help="per-class accuracy for 50+ classes too")
    p.add_argument("--noplots", action="store_true", help="save no plot files")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, help="NHWC memory format")
    p.add_argument("--clip-norm", type=float, help="gradient clipping max norm")
    return p.parse_args(argv)


def main(opt: argparse.Namespace) -> ClassifyRunResult:
    return run(**vars(opt))


if __name__ == "__main__":
    cli_main(lambda: main(parse_opt()))
