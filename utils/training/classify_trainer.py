"""The classifier training loop (classify/train.py builds the parts): per-step warmup + cosine LR, label-smoothed
cross-entropy on hard or MixUp/CutMix soft targets, AMP on CUDA, gradient clipping, EMA, per-epoch top-1 / top-5 of
the EMA model, atomic last.pt / best.pt, exact resume, early stopping, DDP.

Exact resume: every epoch starts from RNG seeds derived from (seed, epoch, rank) and the LR is a pure function of
the step, so an interrupted run resumed from last.pt trains the remaining epochs exactly as an uninterrupted one
would (with in-process data loading, --workers 0; worker processes draw their own augmentation streams).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from models.checkpoint import load_checkpoint_model, new_checkpoint, save_last_and_best, strip_optimizer
from utils.core.distributed import DistInfo, any_rank, barrier, broadcast_flag
from utils.core.errors import UserError
from utils.core.host_memory import keep_freed_memory_for_training
from utils.core.log import LOGGER, colorstr
from utils.core.parallel import unwrap
from utils.core.plots import plot_confusion_matrix, plot_images
from utils.dataloaders.classify import BatchMix, denormalize, normalize_batch
from utils.evaluation.classify import ClassifyMetrics, confusion_for_plot, evaluate_classifier, format_table
from utils.training.classify_options import CLASSIFY_COLUMNS, ClassifyTrainOptions
from utils.training.ema import ModelEMA
from utils.training.train_outputs import TrainOutputs


@dataclass
class ClassifyParts:
    """What classify/train.py builds for the loop. model may be DDP-wrapped; ema is rank 0's (None elsewhere)."""

    model: nn.Module
    train_loader: DataLoader
    val_loader: DataLoader
    optimizer: torch.optim.Optimizer
    ema: ModelEMA | None
    names: dict[int, str]


@dataclass
class ClassifyRunResult:
    """What classify/train.py's run() returns (rank 0; other ranks get save_dir and epochs only)."""

    save_dir: Path
    best: Path | None
    last: Path | None
    epochs_trained: int
    top1: float = 0.0
    top5: float = 0.0
    loss: float = 0.0
    metrics: ClassifyMetrics | None = None


class ClassifyTrainer:
    """One classifier training run."""

    def __init__(
        self, opt: ClassifyTrainOptions, parts: ClassifyParts, device: torch.device, info: DistInfo, save_dir: Path
    ):
        self.opt, self.parts, self.device, self.info = opt, parts, device, info
        self.save_dir = Path(save_dir)
        self.wdir = self.save_dir / "weights"
        self.best, self.last = self.wdir / "best.pt", self.wdir / "last.pt"
        self.out = TrainOutputs(self.save_dir, enabled=info.main, plots=not opt.noplots, columns=CLASSIFY_COLUMNS)
        self.amp = device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=opt.label_smoothing)
        self.mix = BatchMix(len(parts.names), mixup=opt.mixup, cutmix=opt.cutmix)
        self.nb = len(parts.train_loader)
        self.total_steps = max(opt.epochs * self.nb, 1)
        self.warmup_steps = round(opt.warmup_epochs * self.nb)
        self.start_epoch, self.best_fitness, self.best_epoch = 0, 0.0, 0
        self.memory_format = torch.channels_last if opt.channels_last else torch.contiguous_format

    # ------------------------------------------------------------------------------------------------ schedule
    def lr_factor(self, step: int) -> float:
        """LR multiplier at a global step: linear warmup from 0, then cosine from 1 down to lrf."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        t = (step - self.warmup_steps) / max(self.total_steps - self.warmup_steps, 1)
        return self.opt.lrf + (1 - self.opt.lrf) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))

    def _set_lr(self, step: int) -> float:
        f = self.lr_factor(step)
        for g in self.parts.optimizer.param_groups:
            g["lr"] = self.opt.lr0 * g.get("lr_scale", 1.0) * f
        return self.opt.lr0 * f

    def _seed_epoch(self, epoch: int) -> None:
        """Every random stream of the epoch from (seed, epoch, rank): what makes resume exact."""
        s = self.opt.seed + 1000 * epoch + max(self.info.rank, 0)
        random.seed(s)
        np.random.seed(s % 2**32)
        torch.manual_seed(s)
        loader = self.parts.train_loader
        if isinstance(loader.sampler, DistributedSampler):
            loader.sampler.set_epoch(epoch)
        elif loader.generator is not None:
            loader.generator.manual_seed(s)

    # ------------------------------------------------------------------------------------------------ restore
    def restore(self, ckpt: dict[str, Any], where: Path) -> None:
        """--resume: optimizer, scaler, EMA, best top-1 and the next epoch from a last.pt."""
        p = self.parts
        try:
            p.optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:
            raise UserError(
                f"{where}: the saved optimizer state does not fit this model ({e}) — start a new run"
            ) from None
        if ckpt.get("scaler") and self.amp:
            self.scaler.load_state_dict(ckpt["scaler"])
        if ckpt.get("ema") and p.ema is not None:
            sd = ckpt["ema"]["state_dict"]
            p.ema.ema.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
            p.ema.updates = int(ckpt.get("updates") or 0)
        self.best_fitness = float(ckpt.get("best_fitness") or 0.0)
        self.start_epoch = self.best_epoch = int(ckpt["epoch"]) + 1
        self.out.trim_csv(self.start_epoch)
        LOGGER.info(f"Resuming training from epoch {self.start_epoch} to {self.opt.epochs} total epochs")

    # ------------------------------------------------------------------------------------------------ loop
    def train(self) -> ClassifyRunResult:
        t0 = time.time()
        keep_freed_memory_for_training(self.device.type)  # 1.08x the CPU step (ConvNeXt-T, 224 px, batch 8)
        LOGGER.info(
            f"Image size {self.opt.imgsz} train and val\nLogging results to {colorstr('bold', str(self.save_dir))}\n"
            f"Starting training for {self.opt.epochs} epochs..."
        )
        epoch = self.start_epoch
        for epoch in range(self.start_epoch, self.opt.epochs):
            self._seed_epoch(epoch)
            loss, lr = self._train_epoch(epoch)
            stop = self._end_epoch(epoch, loss, lr)
            if broadcast_flag(stop):
                break
        LOGGER.info(f"\n{epoch - self.start_epoch + 1} epochs completed in {(time.time() - t0) / 3600:.3f} hours.")
        return self._finish(epoch)

    def _train_epoch(self, epoch: int) -> tuple[float, float]:
        """One pass over the training set; (mean training loss, last LR)."""
        model, p = self.parts.model, self.parts
        model.train()
        total, n, lr = 0.0, 0, self.opt.lr0
        bar = enumerate(p.train_loader)
        if self.info.main:
            bar = tqdm(bar, total=self.nb, bar_format="{l_bar}{bar:10}{r_bar}", desc=f"{epoch + 1}/{self.opt.epochs}")
        for i, (images, labels) in bar:
            if epoch == self.start_epoch and i == 0:
                self._plot_batch(images, labels)
            lr = self._set_lr(epoch * self.nb + i)
            loss = self._step(images, labels, epoch, i)
            total, n = total + loss, n + 1
            if self.info.main:
                bar.set_postfix_str(f"loss {total / n:.4g} lr {lr:.3g}")
        return total / max(n, 1), lr

    def _step(self, images: torch.Tensor, labels: torch.Tensor, epoch: int, i: int) -> float:
        """Forward, loss, backward, clip, optimizer and EMA step of one batch; the batch's loss."""
        p = self.parts
        images = normalize_batch(images.to(self.device, non_blocking=True)).contiguous(memory_format=self.memory_format)
        labels = labels.to(self.device, non_blocking=True)
        images, targets = self.mix(images, labels) if self.mix.active else (images, labels)
        with torch.autocast(self.device.type, enabled=self.amp):
            loss = self.criterion(p.model(images).float(), targets)
        if any_rank(not bool(torch.isfinite(loss)), self.device):
            raise UserError(
                f"non-finite training loss at epoch {epoch}, batch {i} — lower --lr0 (now {self.opt.lr0}) or check "
                f"the images"
            )
        p.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(p.optimizer)
        nn.utils.clip_grad_norm_(p.model.parameters(), self.opt.clip_norm)
        self.scaler.step(p.optimizer)
        self.scaler.update()
        if p.ema is not None:
            p.ema.update(p.model)
        return float(loss.detach())

    def _plot_batch(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """train_images.jpg: the first training batch as the model sees it, each tile titled with its class."""
        if not (self.info.main and not self.opt.noplots):
            return
        names = [self.parts.names.get(int(c), str(int(c))) for c in labels[:16]]
        try:
            plot_images(denormalize(images[:16]), np.zeros((0, 6)), names, self.save_dir / "train_images.jpg")
        except Exception as e:  # a plot must never stop training
            LOGGER.warning(f"WARNING ⚠️ train_images.jpg not written: {e}")

    # ------------------------------------------------------------------------------------------------ epoch end
    def _eval_model(self) -> nn.Module:
        return self.parts.ema.ema if self.parts.ema is not None else unwrap(self.parts.model)

    def _validate(self, model: nn.Module) -> ClassifyMetrics:
        model.eval()
        return evaluate_classifier(
            model,
            self.parts.val_loader,
            len(self.parts.names),
            self.device,
            desc="val" if self.info.main else None,
            channels_last=self.opt.channels_last,
        )

    def _end_epoch(self, epoch: int, loss: float, lr: float) -> bool:
        """Validate, log a results.csv row, save checkpoints; True when early stopping says stop."""
        if self.parts.ema is not None:
            self.parts.ema.update_attr(self.parts.model, include=("yaml", "nc", "names", "stride"))
        m = self._validate(self._eval_model())
        if not self.info.main:
            return False
        LOGGER.info(f"{epoch + 1}/{self.opt.epochs} train loss {loss:.4g}, val loss {m.loss:.4g}, top1 {m.top1:.4g}")
        self.out.log_epoch(epoch, (loss, m.loss, m.top1, m.top5, lr))
        improved = m.fitness >= self.best_fitness
        if improved:
            self.best_fitness, self.best_epoch = m.fitness, epoch
        self._save(epoch, improved)
        patience = self.opt.patience
        if patience > 0 and epoch - self.best_epoch >= patience:
            LOGGER.info(f"Stopping early: no top-1 gain for {patience} epochs (best at epoch {self.best_epoch})")
            return True
        return False

    def _save(self, epoch: int, improved: bool) -> None:
        p = self.parts
        ckpt = new_checkpoint(
            epoch,
            self.best_fitness,
            unwrap(p.model),
            p.ema.ema if p.ema is not None else None,
            p.ema.updates if p.ema is not None else 0,
            p.optimizer,
            self.scaler if self.amp else None,
            self.opt.to_dict(),
            {},
        )
        save_last_and_best(ckpt, self.last, self.best if improved else None)

    def _finish(self, epoch: int) -> ClassifyRunResult:
        """Strip best/last, validate best.pt with the per-class table and confusion matrix, results.png."""
        if self.info.main:
            for f in (self.last, self.best):
                if f.exists():
                    strip_optimizer(f)
            LOGGER.info(f"\nValidating {self.best}...")
        barrier()  # under DDP every rank validates its shard of best.pt once rank 0 has written it
        m = self._validate(load_checkpoint_model(self.best, device=self.device))
        if not self.info.main:
            return ClassifyRunResult(self.save_dir, None, None, epoch + 1, m.top1, m.top5, m.loss, m)
        for line in format_table(m, self.parts.names, verbose=self.opt.verbose or len(self.parts.names) < 50):
            LOGGER.info(line)
        if not self.opt.noplots:
            names = list(self.parts.names.values())
            plot_confusion_matrix(confusion_for_plot(m), names, self.save_dir / "confusion_matrix.png")
        self.out.finish()
        LOGGER.info(f"Results saved to {colorstr('bold', str(self.save_dir))}\ntop-1 {m.top1:.4f}, top-5 {m.top5:.4f}")
        return ClassifyRunResult(self.save_dir, self.best, self.last, epoch + 1, m.top1, m.top5, m.loss, m)
