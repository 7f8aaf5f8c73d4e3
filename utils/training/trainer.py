"""The YOLOv5 training loop: warmup, LR schedule, gradient accumulation to a nominal batch of 64, AMP (CUDA only),
gradient clipping, EMA, per-epoch validation, checkpoints, early stopping, NaN guard, DDP.

train.py builds the pieces (model, loaders, validate function) and hands them to Trainer; utils never import the
scripts, so val.run arrives as the `validate` callable.
"""

from __future__ import annotations

import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from models.checkpoint import (
    load_checkpoint_model,
    new_checkpoint,
    save_checkpoint,
    save_last_and_best,
    strip_optimizer,
)
from utils.core.distributed import DistInfo, any_rank, broadcast_flag, gather_counts
from utils.core.errors import UserError
from utils.core.host_memory import keep_freed_memory_for_training
from utils.core.log import LOGGER, colorstr
from utils.core.parallel import unwrap
from utils.dataloaders.dataset import LoadImagesAndLabels
from utils.evaluation.metrics import fitness
from utils.training.compiled import CompiledForward
from utils.training.ema import ModelEMA
from utils.training.loss import ComputeLoss
from utils.training.optim import accumulate_steps, nominal_batch
from utils.training.train_options import TrainOptions
from utils.training.train_outputs import METRIC_KEYS, TrainOutputs

CLIP_NORM = 10.0
NONFINITE_PATIENCE = 10  # with AMP, consecutive non-finite steps the GradScaler may skip before training stops


class EarlyStopping:
    """Stop when fitness has not improved for `patience` epochs (0 or less disables it)."""

    def __init__(self, patience: int = 100):
        self.best_fitness, self.best_epoch = 0.0, 0
        self.patience = patience if patience > 0 else float("inf")

    def __call__(self, epoch: int, fi: float) -> bool:
        if fi >= self.best_fitness:
            self.best_epoch, self.best_fitness = epoch, fi
        stop = (epoch - self.best_epoch) >= self.patience
        if stop:
            LOGGER.info(
                f"Stopping training early: no improvement in the last {self.patience} epochs (best at epoch "
                f"{self.best_epoch}). Set --patience 0 to disable, or a larger --patience."
            )
        return stop


def seed_everything(seed: int, deterministic: bool = True) -> None:
    """Seed python, numpy and torch; deterministic algorithms where PyTorch has them (warn, don't fail, otherwise)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def image_weight_indices(labels: list[np.ndarray], nc: int, maps: np.ndarray, n: int) -> list[int]:
    """--image-weights: resample image indices, favouring images of rare / poorly detected classes (YOLOv5 rule)."""
    counts = np.bincount(
        np.concatenate([l[:, 0].astype(int) for l in labels if len(l)] or [np.zeros(0, int)]), minlength=nc
    ).astype(float)
    cw = (1.0 - maps) ** 2 / np.maximum(counts, 1.0)  # class weight: rare and low-mAP classes weigh more
    cw = cw / max(cw.sum(), 1e-12)
    iw = np.array([cw[l[:, 0].astype(int)].sum() if len(l) else 0.0 for l in labels]) + 1e-6
    return random.choices(range(n), weights=iw, k=n)


@dataclass
class TrainParts:
    """What train.py builds for one run and the loop works with."""

    model: nn.Module  # the trained model, DDP-wrapped under torchrun
    data: dict[str, Any]  # the checked dataset yaml (names as {id: name}, nc)
    train_loader: DataLoader
    dataset: LoadImagesAndLabels  # the training set (labels for --image-weights)
    val_loader: DataLoader | None  # None on non-zero DDP ranks: only rank 0 validates
    compute_loss: ComputeLoss
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    lf: Callable[[int], float]  # epoch -> LR factor, also read by the warmup
    ema: ModelEMA | None  # rank 0 only
    gs: int  # grid size: the model's max stride, at least 32
    validate: Callable[..., tuple]  # val.run (utils cannot import the script)
    ddp_wrap: Callable[[nn.Module], nn.Module]  # wraps a bare model for DDP again (identity outside DDP)
    scaler: torch.amp.GradScaler
    set_backbone_frozen: Callable[[bool], None]  # --freeze-epochs: freeze / unfreeze the backbone rows


class Trainer:
    """One training run: opt the run's options, hyp the (unscaled) hyperparameters, parts what train.py built."""

    def __init__(
        self,
        opt: TrainOptions,
        hyp: dict[str, Any],
        parts: TrainParts,
        device: torch.device,
        info: DistInfo,
        save_dir: Path,
    ):
        self.opt, self.hyp, self.parts, self.device, self.info = opt, hyp, parts, device, info
        self.save_dir = Path(save_dir)
        self.wdir = self.save_dir / "weights"
        self.out = TrainOutputs(self.save_dir, enabled=info.main, plots=not opt.noplots)
        self.epochs = int(opt.epochs)
        self.start_epoch, self.best_fitness = 0, 0.0
        self.amp = device.type == "cuda"
        self.stopper = EarlyStopping(opt.patience)
        self.maps = np.zeros(parts.data["nc"])
        self.results: tuple = (0.0,) * 7
        self.model = parts.model
        self.forward = CompiledForward(self.model, opt.compile)  # rebuilt when DDP re-wraps the model
        self.memory_format = torch.channels_last if opt.channels_last else torch.contiguous_format
        self.last_opt_step = -1
        self.nonfinite_steps = 0  # consecutive steps with a non-finite loss (AMP only; CPU stops at the first)
        self.nb = len(parts.train_loader)
        # warmup: max(warmup_epochs, warmup_min_iters) iterations (YOLOv5: 100); tiny datasets may lower the floor
        min_iters = int(hyp.get("warmup_min_iters", 100))
        self.nw = max(round(hyp["warmup_epochs"] * self.nb), min_iters) if hyp["warmup_epochs"] > 0 else 0
        self.accumulate = accumulate_steps(hyp, opt.total_batch_size)
        self.nbs_ratio = nominal_batch(hyp) / opt.total_batch_size  # warmup ramps accumulate 1 -> this
        self.samples_per_rank: list[int] = []
        self.best, self.last = self.wdir / "best.pt", self.wdir / "last.pt"

    # ------------------------------------------------------------------------------------------------ restore
    def restore(self, ckpt: dict[str, Any]) -> None:
        """--resume: optimizer, scaler, EMA (+updates), best fitness and the next epoch from a last.pt."""
        p = self.parts
        try:
            p.optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:  # parameter groups differ: the model or code changed since the run
            src = self.opt.resume or self.last
            raise UserError(
                f"{src}: the saved optimizer state does not fit this model ({e}) — cannot be "
                f"resumed; start a new run with --weights {src}"
            ) from None
        if ckpt.get("scaler") and self.amp:
            p.scaler.load_state_dict(ckpt["scaler"])
        if ckpt.get("ema") and p.ema is not None:
            ema_sd = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["ema"]["state_dict"].items()}
            p.ema.ema.load_state_dict(ema_sd)
            p.ema.updates = int(ckpt.get("updates") or 0)
        self.best_fitness = float(ckpt.get("best_fitness") or 0.0)
        self.stopper.best_fitness = self.best_fitness
        self.start_epoch = int(ckpt["epoch"]) + 1
        self.stopper.best_epoch = self.start_epoch - 1
        if self.start_epoch >= self.epochs:
            raise UserError(f"the run already trained {self.start_epoch} of {self.epochs} epochs — nothing to resume")
        p.scheduler.last_epoch = self.start_epoch - 1  # the LR schedule continues where it stopped
        self.out.trim_csv(self.start_epoch)
        LOGGER.info(
            f"Resuming training from epoch {self.start_epoch} to {self.epochs} total epochs "
            f"(EMA updates {p.ema.updates if p.ema is not None else 0})"
        )

    # ------------------------------------------------------------------------------------------------ loop
    def train(self) -> dict[str, Any]:
        """Run the remaining epochs; returns the results dict of train.run()."""
        t0 = time.time()
        keep_freed_memory_for_training(self.device.type)  # after the data scan: only the steps' memory is kept
        LOGGER.info(
            f"Image sizes {self.opt.imgsz} train, {self.opt.imgsz} val\n"
            f"Logging results to {colorstr('bold', self.save_dir)}\n"
            f"Starting training for {self.epochs} epochs..."
        )
        epoch = self.start_epoch
        for epoch in range(self.start_epoch, self.epochs):
            self._freeze_schedule(epoch)
            mloss = self._train_epoch(epoch)
            stop = self._end_epoch(epoch, mloss)
            if broadcast_flag(stop):  # rank 0 decides; every rank leaves the loop together
                break
        hours = (time.time() - t0) / 3600
        LOGGER.info(f"\n{epoch - self.start_epoch + 1} epochs completed in {hours:.3f} hours.")
        return self._finish(epoch)

    def _freeze_schedule(self, epoch: int) -> None:
        """--freeze-epochs N: the backbone is frozen for epochs 0..N-1 and trains from epoch N on."""
        n = int(self.opt.freeze_epochs or 0)
        if n <= 0 or epoch not in (self.start_epoch, n):
            return
        frozen = epoch < n
        self.parts.set_backbone_frozen(frozen)
        if self.info.ddp:  # DDP registers trainable parameters at wrap time: wrap again after a change
            self.model = self.parts.ddp_wrap(unwrap(self.model))
            self.forward = CompiledForward(self.model, self.opt.compile and self.forward.active)
        LOGGER.info(f"{'Freezing' if frozen else 'Unfreezing'} the backbone at epoch {epoch} (--freeze-epochs {n})")

    def _prepare_epoch(self, epoch: int) -> None:
        """Train mode, --image-weights resampling, DistributedSampler epoch seed."""
        self.model.train()
        p = self.parts
        sampler = getattr(p.train_loader, "sampler", None)
        if self.opt.image_weights and hasattr(sampler, "indices"):  # a WeightedIndexSampler (not under DDP)
            labels = p.dataset.labels
            sampler.indices = image_weight_indices(labels, p.data["nc"], self.maps, len(labels))
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)  # a different shuffle each epoch, the same on every rank

    def _train_epoch(self, epoch: int) -> torch.Tensor:
        """One pass over the training loader; returns the mean (box, obj, cls) loss."""
        self._prepare_epoch(epoch)
        p, mloss, seen, n_ok = self.parts, torch.zeros(3, device=self.device), 0, 0
        LOGGER.info(("\n" + "%11s" * 7) % ("Epoch", "GPU_mem", "box_loss", "obj_loss", "cls_loss", "Instances", "Size"))
        pbar = enumerate(p.train_loader)
        if self.info.main:
            pbar = tqdm(pbar, total=self.nb, bar_format="{l_bar}{bar:10}{r_bar}")
        p.optimizer.zero_grad()
        for i, (imgs, targets, paths, _) in pbar:
            ni = i + self.nb * epoch
            # the layout change on the uint8 batch: a quarter of the bytes of the float one; float() and / keep it
            imgs = imgs.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format).float() / 255
            self._warmup(ni, epoch)
            imgs = self._multi_scale(imgs)
            items = self._step(imgs, targets.to(self.device), ni, epoch)
            if torch.isfinite(items).all():  # a step AMP skipped for a non-finite loss does not enter the mean
                n_ok += 1
                mloss = mloss + (items - mloss) / n_ok
            seen += imgs.shape[0]
            if self.info.main:
                mem = f"{torch.cuda.memory_reserved() / 1e9 if torch.cuda.is_available() else 0:.3g}G"
                pbar.set_description(
                    ("%11s" * 2 + "%11.4g" * 5)
                    % (f"{epoch}/{self.epochs - 1}", mem, *mloss, targets.shape[0], imgs.shape[-1])
                )
                if epoch == self.start_epoch:
                    self.out.plot_batch(i, imgs, targets, paths)
        self.samples_per_rank = gather_counts(seen)
        if self.info.ddp:
            LOGGER.info(f"DDP: images per rank this epoch {self.samples_per_rank}")
        return mloss

    def _warmup(self, ni: int, epoch: int) -> None:
        """Linear warmup over nw iterations: accumulate 1 -> nbs/batch, bias LR warmup_bias_lr -> lr, momentum."""
        if ni > self.nw:
            return
        xi = [0, self.nw]
        self.accumulate = max(1, int(np.interp(ni, xi, [1, self.nbs_ratio]).round()))
        lf = self.parts.lf(epoch)
        for g in self.parts.optimizer.param_groups:
            # bias groups start from warmup_bias_lr (YOLOv5); groups come from utils.training.optim.build_optimizer
            start = self.hyp["warmup_bias_lr"] * g["lr_scale"] if g["name"] == "bias" else 0.0
            g["lr"] = float(np.interp(ni, xi, [start, g["initial_lr"] * lf]))
            if "momentum" in g:
                g["momentum"] = float(np.interp(ni, xi, [self.hyp["warmup_momentum"], self.hyp["momentum"]]))
            elif "betas" in g:  # Adam/AdamW: warm beta1 like SGD momentum
                b1 = float(np.interp(ni, xi, [self.hyp["warmup_momentum"], self.hyp["momentum"]]))
                g["betas"] = (b1, g["betas"][1])

    def _multi_scale(self, imgs: torch.Tensor) -> torch.Tensor:
        """--multi-scale: a random size in imgsz x [0.5, 1.5], a multiple of the max stride."""
        if not self.opt.multi_scale:
            return imgs
        gs, sz0 = self.parts.gs, self.opt.imgsz
        sz = random.randrange(int(sz0 * 0.5), int(sz0 * 1.5) + gs) // gs * gs
        sf = sz / max(imgs.shape[2:])
        if sf != 1:
            ns = [math.ceil(x * sf / gs) * gs for x in imgs.shape[2:]]
            imgs = nn.functional.interpolate(imgs, size=ns, mode="bilinear", align_corners=False)
        return imgs

    def _step(self, imgs: torch.Tensor, targets: torch.Tensor, ni: int, epoch: int) -> torch.Tensor:
        """Forward, loss, NaN guard, backward; an optimizer step every `accumulate` batches. Returns loss items."""
        p = self.parts
        with torch.autocast("cuda", enabled=self.amp):
            pred = self.forward(imgs)
            loss, items = p.compute_loss(pred, targets)
        if self.info.ddp:
            loss = loss * self.info.world_size  # DDP averages gradients over ranks; YOLOv5 keeps the sum
        finite = not any_rank(not bool(torch.isfinite(loss).all()), self.device)  # every rank decides alike
        self.nonfinite_guard(finite, epoch, ni - self.nb * epoch, items)
        p.scaler.scale(loss).backward()
        if ni - self.last_opt_step >= self.accumulate:
            p.scaler.unscale_(p.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=CLIP_NORM)
            p.scaler.step(p.optimizer)
            p.scaler.update()
            p.optimizer.zero_grad()
            if p.ema is not None:
                p.ema.update(self.model)
            self.last_opt_step = ni
        return items.detach().to(self.device)

    def nonfinite_guard(self, finite: bool, epoch: int, batch: int, items: torch.Tensor) -> None:
        """Stop (UserError) on a non-finite loss. With AMP the GradScaler skips such a step and lowers its scale,
        which is how fp16 overflow recovers: stop only after NONFINITE_PATIENCE consecutive ones."""
        if finite:
            self.nonfinite_steps = 0
            return
        self.nonfinite_steps += 1
        amp = bool(getattr(self.parts.scaler, "is_enabled", lambda: False)())
        if amp and self.nonfinite_steps < NONFINITE_PATIENCE:
            return  # scaler.step() sees the inf/NaN gradients and skips this optimizer step
        how = (
            f"for {self.nonfinite_steps} consecutive steps (AMP's GradScaler skipped them without recovering) "
            if amp
            else ""
        )
        saved = f"the last good checkpoint is {self.last}" if self.last.is_file() else "no checkpoint was written yet"
        raise UserError(
            f"non-finite training loss {how}at epoch {epoch}, batch {batch} (loss items "
            f"{[round(float(x), 4) for x in items]}) — training stopped; {saved}. Lower lr0 in --hyp, "
            f"or check the labels"
        )

    # ------------------------------------------------------------------------------------------------ epoch end
    def _end_epoch(self, epoch: int, mloss: torch.Tensor) -> bool:
        """Scheduler step; on rank 0: validate, log results.csv, save checkpoints. Returns the early-stop flag."""
        p = self.parts
        lr = [g["lr"] for g in p.optimizer.param_groups]
        p.scheduler.step()
        if not self.info.main:
            return False
        final = epoch + 1 == self.epochs
        if p.ema is not None:
            p.ema.update_attr(unwrap(self.model), include=["yaml", "nc", "hyp", "names", "stride"])
        if not self.opt.noval or final:
            self.results, self.maps, _ = self._validate(plots=False)
        fi = fitness(np.array(self.results).reshape(1, -1))[0]
        stop = self.stopper(epoch, fi) or final
        self.best_fitness = max(self.best_fitness, fi)
        lrs = (lr + [lr[-1]] * 3)[:3]  # lr0-lr2 columns: the first three groups
        self.out.log_epoch(epoch, [*mloss.tolist(), *self.results, *lrs])
        if not self.opt.nosave or final:
            self._save(epoch, fi)
        return stop

    def _validate(self, plots: bool, model: nn.Module | None = None, verbose: bool = False) -> tuple:
        p = self.parts
        model = model if model is not None else (p.ema.ema if p.ema is not None else unwrap(self.model))
        return p.validate(
            data=p.data,
            batch_size=self.opt.batch_size // self.info.world_size * 2,
            imgsz=self.opt.imgsz,
            half=self.amp,
            model=model,
            single_cls=self.opt.single_cls,
            dataloader=p.val_loader,
            save_dir=self.save_dir,
            plots=plots,
            compute_loss=p.compute_loss,
            verbose=verbose,
        )

    def _save(self, epoch: int, fi: float) -> None:
        """last.pt every epoch, best.pt when fitness improved (>=), epoch{N}.pt every --save-period epochs."""
        p = self.parts
        ema = p.ema.ema if p.ema is not None else None
        ckpt = new_checkpoint(
            epoch,
            self.best_fitness,
            unwrap(self.model),
            ema,
            p.ema.updates if p.ema is not None else 0,
            p.optimizer,
            p.scaler if self.amp else None,
            self.opt.to_dict(),
            self.hyp,
        )
        save_last_and_best(ckpt, self.last, self.best if fi >= self.best_fitness else None)
        period = int(self.opt.save_period or -1)
        if period > 0 and epoch % period == 0:
            save_checkpoint(ckpt, self.wdir / f"epoch{epoch}.pt")

    def _finish(self, epoch: int) -> dict[str, Any]:
        """Strip best/last to EMA fp16, validate best.pt with plots, results.png; the run's summary dict."""
        if not self.info.main:
            return {"save_dir": str(self.save_dir), "rank": self.info.rank, "samples_per_rank": self.samples_per_rank}
        for f in (self.last, self.best):
            if f.exists():
                strip_optimizer(f)
        results, maps = self.results, self.maps
        if self.best.exists():
            LOGGER.info(f"\nValidating {self.best}...")
            best_model = load_checkpoint_model(self.best, device=self.device)
            # per-class rows at the end, like YOLOv5
            results, maps, _ = self._validate(plots=not self.opt.noplots, model=best_model, verbose=True)
        self.out.finish()
        LOGGER.info(f"Results saved to {colorstr('bold', self.save_dir)}")
        return {
            "save_dir": str(self.save_dir),
            "best": str(self.best) if self.best.exists() else None,
            "last": str(self.last) if self.last.exists() else None,
            "epochs_trained": epoch + 1,
            "best_fitness": float(self.best_fitness),
            "maps": [float(x) for x in maps],
            "samples_per_rank": self.samples_per_rank,
            **{k: float(v) for k, v in zip(METRIC_KEYS, results)},
        }
