"""Train a YOLOv5 / ConvNeXt-YOLOv5 detector.

    python train.py                                   # quick start: small ConvNeXt on the embedded shapes dataset
    python train.py --cfg models/yolov5_ConvNeXt.yaml --data coco.yaml --backbone-weights convnext_tiny_1k \\
        --hyp data/hyps/hyp.convnext.yaml --layer-decay 0.8 --img 640
    python train.py --resume                          # continue the newest unfinished run
    python train.py --evolve 30 --epochs 10           # hyperparameter evolution -> runs/evolve/exp/hyp_evolve.yaml
    torchrun --nproc_per_node 2 train.py --data coco.yaml --batch-size 64 --device 0,1

run(**opts) is callable from Python and returns a results dict (save_dir, best, last, mAP50, mAP50-95, ...).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import val as validate
from models.checkpoint import model_from_record
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
from utils.core.files import ROOT, check_writable, increment_path, yaml_load
from utils.core.log import LOGGER, colorstr
from utils.training.autoanchor import check_anchors
from utils.training.ema import ModelEMA
from utils.training.evolve import evolve_dir, generation_options, run_generations
from utils.training.loss import ComputeLoss, scale_loss_gains
from utils.training.optim import backbone_indices, freeze_layers, unfreeze_layers
from utils.training.train_options import MACHINE_KEYS, TrainOptions, flag_defaults
from utils.training.train_setup import (
    build_model,
    ddp_wrapper,
    freeze_indices,
    load_resume,
    make_loaders,
    make_optimizer,
    prepare_data,
    resolve_cfg,
)
from utils.training.trainer import Trainer, TrainParts, seed_everything

DEFAULT_CFG = ROOT / "models" / "yolov5_ConvNeXt-atto.yaml"
OPTIMIZERS = ("SGD", "Adam", "AdamW")
CACHE_MODES = ("ram", "disk")
MAX_SEED = 2**31 - 1  # numpy seeds must fit 32 bits; ranks add 1 + rank
HYP_KEYS = ("lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "warmup_momentum", "warmup_bias_lr")


def load_hyp(hyp: str | Path | dict, label_smoothing: float) -> dict[str, Any]:
    """Hyperparameters from a yaml (path or name under data/hyps/) or dict, checked for the keys the loop needs."""
    if not isinstance(hyp, dict):
        path = Path(hyp)
        if not path.is_file() and (ROOT / "data" / "hyps" / path.name).is_file():
            path = ROOT / "data" / "hyps" / path.name
        hyp = yaml_load(path)
        if not isinstance(hyp, dict):
            raise UserError(f"--hyp {path}: expected a mapping of hyperparameters (lr0: 0.01, ...)")
    missing = [k for k in HYP_KEYS if k not in hyp]
    if missing:
        raise UserError(f"--hyp is missing {missing} — start from data/hyps/hyp.scratch-low.yaml")
    hyp = dict(hyp)
    hyp["label_smoothing"] = float(label_smoothing or hyp.get("label_smoothing", 0.0))
    return hyp


def _resolve_run(opt: TrainOptions, info: DistInfo) -> tuple[TrainOptions, dict[str, Any], Path, dict | None]:
    """(opt, hyp, save_dir, resume checkpoint or None): a new run folder, or the resumed run's own settings.
    Checked before any heavy work: the checkpoint can be resumed, and rank 0 can write the run folder."""
    if opt.resume:
        # settings an older checkpoint lacks are filled from TrainOptions' defaults (load_resume warns)
        path, ckpt = load_resume(opt.resume, opt.project)
        keep = {k: getattr(opt, k) for k in MACHINE_KEYS}  # the machine may differ: from the command line
        opt = TrainOptions.from_dict({**ckpt["opt"], **keep, "resume": str(path), "weights": str(path)})
        save_dir = path.parent.parent
        if info.main:
            check_writable(save_dir / "weights")
        LOGGER.info(f"Resuming training from {path}")
        return opt, dict(ckpt["hyp"]), save_dir, ckpt
    hyp = load_hyp(opt.hyp, opt.label_smoothing)
    save_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
    if info.main:
        check_writable(save_dir)  # a read-only or full --project fails now, not after the data scan
    return replace(opt, save_dir=str(save_dir)), hyp, save_dir, None


def _model_for_run(opt: TrainOptions, data: dict[str, Any], device: torch.device, ckpt: dict | None):
    """The bare model: restored from the resume checkpoint, or built from --cfg/--weights/--backbone-weights."""
    if ckpt is not None:
        model = model_from_record(ckpt["model"]).to(device)
        model.names = dict(data["names"])
        return model
    cfg = opt.cfg or (None if opt.weights else DEFAULT_CFG)
    return build_model(
        cfg,
        opt.weights or None,
        data["nc"],
        data["names"],
        device,
        opt.backbone_weights,
        backbone_sha256=opt.backbone_sha256 or None,
        backbone_ema=opt.backbone_ema,
    )


def _set_frozen(model: torch.nn.Module, rows: list[int], frozen: bool) -> None:
    """Freeze/unfreeze the parameters of the given model rows."""
    (freeze_layers if frozen else unfreeze_layers)(model, rows)


def _build_parts(
    opt: TrainOptions, hyp: dict[str, Any], device: torch.device, info: DistInfo, ckpt: dict | None
) -> TrainParts:
    """Model, data, loss, optimizer, schedule, EMA, scaler and loaders for the Trainer."""
    data = prepare_data(opt.data, opt.single_cls, info.main)
    model = _model_for_run(opt, data, device, ckpt)
    if opt.channels_last:  # before the optimizer and EMA are built, so both hold NHWC tensors
        model = model.to(memory_format=torch.channels_last)
    frozen_rows = freeze_indices(opt.freeze, model)
    if frozen_rows:
        _set_frozen(model, frozen_rows, True)
    gs = max(int(model.stride.max()), A.SIZE_MULTIPLE)
    A.check_stride_multiple(opt.imgsz, gs)  # the same rule as val.py
    batch = check_batch_size(opt.batch_size, info.world_size)
    optimizer, scheduler, lf = make_optimizer(model, opt, hyp)
    train_loader, dataset, val_loader = make_loaders(data, opt, hyp, gs, batch, info)
    if info.main and ckpt is None and not opt.noautoanchor:
        check_anchors(dataset, model=model, thr=hyp.get("anchor_t", 4.0), imgsz=opt.imgsz)
    model.hyp = scale_loss_gains(hyp, model.model[-1].nl, data["nc"], opt.imgsz)  # box/cls/obj gains: nl, nc, imgsz
    model.nc, model.names = data["nc"], data["names"]
    ema = ModelEMA(model) if info.main else None  # of the bare model, before DDP / SyncBatchNorm wrapping
    wrap = ddp_wrapper(info, device, opt.sync_bn)
    rows = backbone_indices(model)
    return TrainParts(
        model=wrap(model),
        data=data,
        train_loader=train_loader,
        dataset=dataset,
        val_loader=val_loader,
        compute_loss=ComputeLoss(model),
        optimizer=optimizer,
        scheduler=scheduler,
        lf=lf,
        ema=ema,
        gs=gs,
        validate=validate.run,
        ddp_wrap=wrap,
        scaler=torch.amp.GradScaler("cuda", enabled=device.type == "cuda"),
        set_backbone_frozen=lambda frozen: _set_frozen(model, rows, frozen),
    )


def _check_evolve(o: TrainOptions) -> None:
    """--evolve N: N >= 0, one process (each generation is a whole run), continued with --exist-ok, not --resume."""
    A.check_int("evolve", o.evolve, lo=0, todo="N generations, e.g. --evolve 30 (0 = a plain run)")
    if o.evolve and o.resume:
        A.fail(
            "evolve",
            o.evolve,
            "cannot be combined with --resume",
            "to continue an evolution rerun it with --exist-ok --name <its folder name>",
        )
    if o.evolve and dist_info().ddp:
        A.fail("evolve", o.evolve, "does not run under torchrun (DDP)", "run train.py --evolve as one process")


def check_opts(o: TrainOptions) -> dict[str, Any]:
    """Every numeric and choice option, checked before any data scan, model build, download or run folder.

    Returns the normalised values to use (device spec, lower-case SHA-256, freeze list, imgsz int). One UserError
    line per problem.
    """
    A.check_int("epochs", o.epochs, lo=1, todo="e.g. --epochs 30")
    if isinstance(o.batch_size, int) and o.batch_size == -1:
        A.fail("batch_size", -1, "AutoBatch is not supported", "pass a batch size, e.g. --batch-size 16")
    A.check_int("batch_size", o.batch_size, lo=1, todo="e.g. --batch-size 16")
    imgsz = A.check_imgsz(o.imgsz, counts=(1,))[0]
    A.check_int("workers", o.workers, lo=0, todo="0 loads data in the main process")
    A.check_choice("optimizer", o.optimizer, OPTIMIZERS)
    A.check_choice("cache", o.cache if o.cache is not True else "ram", (None, False, *CACHE_MODES))
    A.check_float("label_smoothing", o.label_smoothing, 0.0, 1.0, hi_open=True, todo="e.g. 0.1 (0 = off)")
    A.check_int("patience", o.patience, lo=0, todo="0 disables early stopping")
    raw = o.freeze
    freeze = A.check_int_list(
        "freeze",
        [0] if raw is None or (isinstance(raw, (list, tuple)) and not raw) else raw,
        todo="--freeze N freezes rows 0..N-1, --freeze 0 2 5 those rows, 0 none",
    )
    A.check_int(
        "freeze_epochs",
        o.freeze_epochs,
        lo=0,
        hi=o.epochs - 1,
        todo=f"fewer than --epochs {o.epochs}, so the backbone trains unfrozen at least one epoch (0 = off)",
    )
    A.check_float("layer_decay", o.layer_decay, 0.0, 1.0, todo="e.g. 0.8 (0 = off)")
    A.check_int("save_period", o.save_period, lo=-1, todo="N saves epochN.pt every N epochs, -1 = off")
    A.check_int("seed", o.seed, lo=0, hi=MAX_SEED, todo="e.g. --seed 0")
    A.check_int("ddp_timeout", o.ddp_timeout, lo=1, hi=7 * 24 * 3600, todo="seconds, e.g. 10800 (3 h)")
    _check_evolve(o)
    sha = A.check_sha256("backbone_sha256", o.backbone_sha256)
    if sha and not o.backbone_weights:
        A.fail(
            "backbone_sha256",
            o.backbone_sha256,
            "given without --backbone-weights",
            "add --backbone-weights FILE_OR_URL, or drop --backbone-sha256",
        )
    if o.backbone_ema is not None and not o.backbone_weights:
        flag = "--backbone-ema" if o.backbone_ema else "--no-backbone-ema"
        raise UserError(f"{flag}: given without --backbone-weights — add --backbone-weights FILE, or drop {flag}")
    return {"device": check_device(o.device), "backbone_sha256": sha, "freeze": freeze, "imgsz": imgsz}


def _run_evolve(opt: TrainOptions) -> dict[str, Any]:
    """--evolve N: generations of mutated hyperparameters, each a full run() (utils.training.evolve); returns
    save_dir,
    generations, failed, best_generation, best_fitness, best_hyp, evolve_csv, hyp_evolve."""
    save_dir = evolve_dir(opt.project, opt.name, opt.exist_ok)
    check_writable(save_dir)
    base = load_hyp(opt.hyp, opt.label_smoothing)
    kwargs = generation_options(opt, save_dir)
    return run_generations(lambda hyp: run(**kwargs, hyp=hyp), base, save_dir, opt.evolve, seed=opt.seed).to_dict()


def run(**kwargs: Any) -> dict[str, Any]:
    """Train and return {save_dir, best, last, precision, recall, mAP50, mAP50-95, val losses, epochs_trained, ...}.

    The keywords are the CLI flags' names (batch_size for --batch-size), i.e. the fields of
    utils.training.train_options.TrainOptions, whose defaults are the CLI's. Under torchrun each process calls run();
    only rank 0 returns the full results.
    """
    opt = TrainOptions.from_kwargs(kwargs)  # unknown keywords: one warning, ignored
    opt = replace(opt, **check_opts(opt))  # bad flags fail here, before any data scan, download or run folder
    if opt.evolve:
        return _run_evolve(opt)
    info = dist_info()  # torchrun's LOCAL_RANK/RANK/WORLD_SIZE; --local-rank is ignored
    check_batch_size(opt.batch_size, info.world_size)
    if not opt.resume:
        resolve_cfg(opt.cfg)  # a wrong --cfg fails now, before any data is prepared
    opt, hyp, save_dir, ckpt = _resolve_run(opt, info)
    opt = replace(opt, total_batch_size=opt.batch_size)
    dev = select_device(opt.device, batch_size=opt.batch_size)
    init_distributed(info, dev, timeout_s=opt.ddp_timeout)
    save_dir = Path(broadcast_object(str(save_dir)))  # every rank names rank 0's run folder
    try:
        seed_everything(int(opt.seed) + 1 + max(info.rank, 0))
        parts = _build_parts(opt, hyp, dev, info, ckpt)
        trainer = Trainer(opt, hyp, parts, dev, info, save_dir)
        if ckpt is not None:
            trainer.restore(ckpt)
        else:
            trainer.out.save_settings(opt.to_dict(), hyp)
            trainer.out.plot_labels(getattr(parts.dataset, "labels", []), parts.data["names"])
        LOGGER.info(f"{colorstr('hyperparameters: ')}" + ", ".join(f"{k}={v}" for k, v in hyp.items()))
        return trainer.train()
    finally:
        cleanup_distributed()


def parse_opt(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """YOLOv5's train.py flags, plus --freeze-epochs, --layer-decay, --backbone-weights/-sha256 and --ddp-timeout.
    Every default comes from TrainOptions, the same table run() uses."""
    p = A.ArgParser(description="Train a YOLOv5 / ConvNeXt-YOLOv5 detector", defaults=flag_defaults())
    p.add_argument("--weights", type=str, help="detector checkpoint to start from ('' = from scratch)")
    p.add_argument("--cfg", type=str, help=f"model yaml (default {DEFAULT_CFG.name} when no --weights)")
    p.add_argument("--data", type=str, help="dataset yaml")
    p.add_argument("--hyp", type=str, help="hyperparameters yaml")
    p.add_argument("--epochs", type=int, help="total training epochs")
    p.add_argument("--batch-size", type=int, help="total batch size for all GPUs/processes")
    p.add_argument("--imgsz", "--img", "--img-size", type=int, help="train, val image size (pixels)")
    p.add_argument("--rect", action="store_true", help="rectangular training")
    p.add_argument("--resume", nargs="?", const=True, help="resume the newest run, or a last.pt")
    p.add_argument(
        "--evolve",
        type=int,
        nargs="?",
        const=300,
        help="evolve hyperparameters for N generations (bare --evolve: 300, as YOLOv5; 0 = off)",
    )
    p.add_argument("--nosave", action="store_true", help="only save the final checkpoint")
    p.add_argument("--noval", action="store_true", help="only validate the final epoch")
    p.add_argument("--noautoanchor", action="store_true", help="disable AutoAnchor")
    p.add_argument("--noplots", action="store_true", help="save no plot files")
    p.add_argument("--device", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    p.add_argument("--multi-scale", action="store_true", help="vary img-size +/- 50%%")
    p.add_argument("--single-cls", action="store_true", help="train multi-class data as single-class")
    p.add_argument("--optimizer", type=str, choices=OPTIMIZERS, help="optimizer")
    p.add_argument("--sync-bn", action="store_true", help="SyncBatchNorm, only in DDP mode on CUDA")
    p.add_argument("--workers", type=int, help="max dataloader workers (per process in DDP)")
    p.add_argument("--project", help="save to project/name")
    p.add_argument("--name", help="save to project/name")
    p.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    p.add_argument("--cos-lr", action="store_true", help="cosine LR scheduler")
    p.add_argument("--label-smoothing", type=float, help="label smoothing epsilon")
    p.add_argument("--patience", type=int, help="EarlyStopping patience (epochs without improvement)")
    p.add_argument("--freeze", nargs="+", type=int, help="freeze rows: first N (one value) or indices")
    p.add_argument("--freeze-epochs", type=int, help="train with the backbone frozen for N epochs")
    p.add_argument("--layer-decay", type=float, help="ConvNeXt layer-wise LR decay rate (0 = off)")
    p.add_argument(
        "--backbone-weights", type=str, help="ImageNet ConvNeXt (file or name) or Conv2Former (file) weights"
    )
    p.add_argument("--backbone-sha256", type=str, help="expected SHA-256 of the --backbone-weights file")
    p.add_argument(
        "--backbone-ema",
        action=argparse.BooleanOptionalAction,
        help="a --backbone-weights training file holding weights and their EMA: the EMA (default) or, with "
        "--no-backbone-ema, the other",
    )
    p.add_argument("--save-period", type=int, help="save epoch{N}.pt every N epochs (-1 = off)")
    p.add_argument("--seed", type=int, help="global training seed")
    p.add_argument("--image-weights", action="store_true", help="weighted image selection for training")
    p.add_argument(
        "--cache", type=str, nargs="?", const="ram", choices=CACHE_MODES, help="cache images in ram (default) or disk"
    )
    p.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        help="channels-last (NHWC) memory format for training (default on; --no-channels-last: NCHW)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the training forward (falls back to eager)")
    p.add_argument("--ddp-timeout", type=int, help="seconds a DDP rank waits for the others before failing (torchrun)")
    p.add_argument("--local-rank", "--local_rank", type=int, help="ignored: torchrun sets LOCAL_RANK")
    return p.parse_args(argv)


def main(opt: argparse.Namespace) -> dict[str, Any]:
    return run(**vars(opt))


if __name__ == "__main__":
    cli_main(lambda: main(parse_opt()))
