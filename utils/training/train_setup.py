"""Training set-up steps that run before the loop: which checkpoint to resume, building the model,
transferring detector weights (--weights) and ImageNet backbone weights (--backbone-weights)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

from models.checkpoint import CHECKPOINT_VERSION, load_checkpoint
from models.pretrained import load_backbone_weights
from models.yolo import Model, find_cfg
from utils.core.distributed import barrier
from utils.core.errors import UserError
from utils.core.files import yaml_load
from utils.core.log import LOGGER, colorstr
from utils.dataloaders.data_yaml import check_dataset, class_names
from utils.dataloaders.dataset import AUGMENT_DEFAULTS_YAML, create_dataloader
from utils.training.optim import accumulate_steps, build_optimizer, lr_lambda, nominal_batch
from utils.training.train_options import TrainOptions, resume_defaults


def find_resume_checkpoint(resume: str | bool, project: str | Path) -> Path:
    """The last.pt to resume: the given path, or the newest last.pt under project (runs/train)."""
    if isinstance(resume, str) and resume not in ("", "True", "true"):
        path = Path(resume)
        if path.is_dir():  # a run folder is accepted too
            path = path / "weights" / "last.pt"
        if not path.is_file():
            raise UserError(
                f"--resume {resume}: no such checkpoint — pass a run's weights/last.pt "
                f"(or plain --resume for the newest run)"
            )
        return path
    found = sorted(Path(project).glob("**/last.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(
            f"--resume: nothing to resume, no last.pt under {project} — start a run without --resume "
            f"(or pass --resume path/to/last.pt)"
        )
    return found[-1]


def load_resume(
    resume: str | bool, project: str | Path, opt_defaults: Mapping[str, Any] | None = None
) -> tuple[Path, dict[str, Any]]:
    """(checkpoint path, checkpoint) of an unfinished run, checked before any heavy work.

    Settings keys the checkpoint lacks (it was written by older code) are filled from opt_defaults (default:
    TrainOptions' defaults, less the machine's settings that --resume takes from the command line) and
    hyp.scratch-low.yaml, with one warning listing them. What really cannot be resumed (finished, no optimizer
    state, newer checkpoint version, no dataset recorded) is a UserError.
    """
    path = find_resume_checkpoint(resume, project)
    ckpt = load_checkpoint(path)
    check_resumable(path, ckpt)
    filled = _fill_settings(path, ckpt, resume_defaults() if opt_defaults is None else opt_defaults)
    if filled:
        LOGGER.warning(
            f"WARNING ⚠️ {path} lacks settings this code expects (older version?): using the current "
            f"defaults for {', '.join(filled)}"
        )
    epochs = ckpt["opt"].get("epochs")
    if isinstance(epochs, int) and ckpt["epoch"] + 1 >= epochs:
        raise UserError(
            f"{path}: the run already trained {ckpt['epoch'] + 1} of {epochs} epochs — nothing to "
            f"resume; start a new run, e.g. --weights {path} to fine-tune from it"
        )
    return path, ckpt


def check_resumable(path: Path, ckpt: dict[str, Any]) -> None:
    """UserError for a checkpoint --resume cannot continue: newer format, finished, or missing optimizer state."""
    version = ckpt.get("version", 0)  # absent: written before versions were recorded (older, fine)
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise UserError(
            f"{path} has checkpoint version {version!r}, newer than this code reads "
            f"({CHECKPOINT_VERSION}) — update the code to resume it, or start a new run"
        )
    epoch = ckpt.get("epoch")
    if epoch == -1:
        raise UserError(
            f"{path} is from a finished run (training completed, optimizer stripped) — nothing to "
            f"resume; start a new run, e.g. --weights {path} to fine-tune from it"
        )
    if not isinstance(epoch, int) or epoch < 0 or not isinstance(ckpt.get("optimizer"), dict):
        what = "no epoch" if not isinstance(epoch, int) or epoch < 0 else "no optimizer state"
        raise UserError(
            f"{path} cannot be resumed: it records {what} — start a new run, e.g. --weights {path} "
            f"to fine-tune from its weights"
        )


def _fill_settings(path: Path, ckpt: dict[str, Any], opt_defaults: Mapping[str, Any]) -> list[str]:
    """Fill missing ckpt['opt'] / ckpt['hyp'] keys in place from the defaults; returns the filled keys. A
    section missing entirely comes from the run folder's opt.yaml / hyp.yaml (written when the run started)."""
    filled = []
    # hyp defaults: the base utils/dataloaders/dataset.py also uses for missing augmentation keys
    for name, defaults in (("opt", opt_defaults), ("hyp", yaml_load(AUGMENT_DEFAULTS_YAML))):
        section = ckpt.get(name)
        saved = path.parent.parent / f"{name}.yaml"
        if not isinstance(section, dict) and saved.is_file():
            section = yaml_load(saved)
        if not isinstance(section, dict):
            raise UserError(
                f"{path} cannot be resumed: it records no training settings ({name}) and {saved} is "
                f"missing — start a new run, e.g. --weights {path}"
            )
        if name == "opt" and not section.get("data"):  # a default dataset would silently train the wrong data
            raise UserError(f"{path} cannot be resumed: its settings name no dataset (opt.data) — start a new run")
        missing = [k for k in defaults if k not in section]
        ckpt[name] = {**section, **{k: defaults[k] for k in missing}}
        filled += [f"{name}.{k}" for k in missing]
    return filled


def transfer_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> int:
    """Copy tensors whose names and shapes match; log 'Transferred N/M items' (M = model tensors)."""
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in matched.items()}, strict=False)
    LOGGER.info(f"Transferred {len(matched)}/{len(own)} items from {source}")
    left = [k for k in own if k not in matched]
    if left:
        LOGGER.info(f"Not transferred (name or shape differs, kept at init): {len(left)} tensors, e.g. {left[:3]}")
    return len(matched)


def resolve_cfg(cfg: str | Path | dict | None) -> str | Path | dict | None:
    """cfg as given when empty or a dict, else the model yaml (path or bare name in models/); a miss: UserError."""
    if not cfg or isinstance(cfg, dict):
        return cfg or None
    return find_cfg(cfg, flag="--cfg")


def build_model(
    cfg: Any,
    weights: str | Path | None,
    nc: int,
    names: dict[int, str],
    device: torch.device,
    backbone_weights: str | None = None,
    backbone_sha256: str | None = None,
    backbone_ema: bool | None = None,
) -> nn.Module:
    """Model for training: from --cfg (or the checkpoint's own yaml), with --weights transferred by name+shape
    and --backbone-weights loaded onto the ConvNeXt / Conv2Former stages (backbone_sha256: the download's expected
    SHA-256; backbone_ema: which weights of a training file holding both, None = the EMA)."""
    cfg = resolve_cfg(cfg)
    ckpt = load_checkpoint(weights) if weights else None
    if cfg is None and ckpt is None:
        raise UserError("no model given — pass --cfg models/<name>.yaml or --weights path/to/last.pt")
    record = (ckpt.get("ema") or ckpt["model"]) if ckpt else None
    model = Model(cfg if cfg is not None else record["yaml"], nc=nc)
    if record is not None:
        if int(record["nc"]) != nc:
            LOGGER.warning(
                f"WARNING ⚠️ {weights} was trained for nc={record['nc']} but the dataset has nc={nc}: "
                f"class-dependent Detect layers are re-initialised, everything else that matches transfers"
            )
        transfer_state(model, record["state_dict"], str(weights))
    if backbone_weights:
        load_backbone_weights(model, backbone_weights, sha256=backbone_sha256, ema=backbone_ema)
    model.names = dict(names)
    model.nc = nc
    return model.to(device)


# ---------------------------------------------------------------------------------------------------- run pieces
def prepare_data(data: Any, single_cls: bool, main: bool) -> dict[str, Any]:
    """check_dataset on rank 0 first (it may generate/download the data), then on the other ranks."""
    if not main:
        barrier()  # wait until rank 0 has the dataset in place
    d = check_dataset(data)
    if main:
        barrier()
    d["names"], d["nc"] = class_names(d, single_cls)
    return d


def freeze_indices(freeze: list[int] | None, model: nn.Module) -> list[int]:
    """--freeze N -> rows 0..N-1; --freeze 0 2 5 -> those rows (YOLOv5 semantics); [] / [0] -> none."""
    freeze = [int(x) for x in (freeze or [])]
    if len(freeze) == 1:
        return list(range(freeze[0]))
    return [i for i in freeze if 0 <= i < len(model.model)]


def make_optimizer(model: nn.Module, opt: TrainOptions, hyp: dict[str, Any]) -> tuple[Any, Any, Callable]:
    """(optimizer, scheduler, lf): decay scaled to the nominal batch (hyp nbs, 64), per-group lr_scale (layer decay)."""
    accumulate = accumulate_steps(hyp, opt.total_batch_size)
    decay = hyp["weight_decay"] * opt.total_batch_size * accumulate / nominal_batch(hyp)
    optimizer = build_optimizer(
        model, opt.optimizer, hyp["lr0"], hyp["momentum"], decay, layer_decay=opt.layer_decay or None
    )
    lf = lr_lambda(opt.epochs, hyp["lrf"], opt.cos_lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lf)
    return optimizer, scheduler, lf


def make_loaders(
    data: dict[str, Any], opt: TrainOptions, hyp: dict[str, Any], gs: int, batch: int, info: Any
) -> tuple[Any, Any, Any]:
    """(train_loader, train_dataset, val_loader or None on non-zero ranks)."""
    cache = opt.cache or False
    # labels whose class is >= nc are reported and skipped by the label check (single_cls maps every class to 0)
    nc = None if opt.single_cls else data["nc"]
    train_loader, dataset = create_dataloader(
        data["train"],
        opt.imgsz,
        batch,
        gs,
        single_cls=opt.single_cls,
        hyp=hyp,
        augment=True,
        cache=cache,
        rect=opt.rect,
        rank=info.rank,  # global rank: with 2 nodes both have LOCAL_RANK 0
        workers=opt.workers,
        image_weights=opt.image_weights,
        prefix=colorstr("train: "),
        shuffle=True,
        seed=opt.seed,
        nc=nc,
    )
    val_loader = None
    if info.main:
        val_loader = create_dataloader(
            data["val"],
            opt.imgsz,
            batch * 2,
            gs,
            single_cls=opt.single_cls,
            hyp=hyp,
            cache=None if opt.noval else cache,
            rect=True,
            rank=-1,
            workers=opt.workers * 2,
            pad=0.5,
            prefix=colorstr("val: "),
            nc=nc,
        )[0]
    return train_loader, dataset, val_loader


def ddp_wrapper(info: Any, device: torch.device, sync_bn: bool) -> Callable[[nn.Module], nn.Module]:
    """A function wrapping a model for DDP (identity outside DDP). No find_unused_parameters: the ConvNeXt
    backbone has none, and frozen parameters are excluded by requires_grad at wrap time."""

    def wrap(model: nn.Module) -> nn.Module:
        if not info.ddp:
            return model
        if sync_bn and device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ids = [device.index] if device.type == "cuda" else None
        return DDP(model, device_ids=ids, output_device=ids[0] if ids else None)

    return wrap
