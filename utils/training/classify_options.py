"""Settings of one classifier training run (classify/train.py): the one source of their defaults and checks.

The defaults suit a small dataset trained from scratch in a few CPU minutes (the embedded shapes-cls set: light
augmentation, crops of at least 35% of the image); ImageNet-scale recipes (RandAugment, erasing 0.25, crops down to
8%, layer decay and drop-path for fine-tuning) are flags, with the README's numbers. The data layer's own defaults
(utils/dataloaders/classify.ClassifyAugment) are ConvNeXt's ImageNet recipe.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

from utils.core import args as A
from utils.core.errors import UserError
from utils.core.files import ROOT
from utils.dataloaders.classify import AUTO_AUGMENTS, ClassifyAugment
from utils.training.optim import OPTIMIZERS

# YOLOv5 classify's results.csv columns after 'epoch'
CLASSIFY_COLUMNS = ("train/loss", "val/loss", "metrics/accuracy_top1", "metrics/accuracy_top5", "lr/0")


@dataclass(kw_only=True)
class ClassifyTrainOptions:
    """Every classify/train.py flag (dest names) with its default."""

    model: str = "convnext_atto"  # classifier name, model yaml or checkpoint
    data: str = "shapes-cls"  # folder, yaml or name
    epochs: int = 60
    batch_size: int = 16  # total over DDP ranks
    imgsz: int = 64  # train and val size (the embedded set's images are 64 px; ImageNet models: 224)
    pretrained: str = ""  # official name or weights file (head kept when the class count matches)
    optimizer: str = "AdamW"
    lr0: float = 0.001
    momentum: float = 0.9  # SGD momentum / Adam beta1
    decay: float = 0.05  # weight decay (not on norms, biases and layer scales)
    label_smoothing: float = 0.1
    dropout: float = 0.0  # before the final Linear
    drop_path: float | None = None  # None: the size table's rate
    layer_decay: float | None = None  # e.g. 0.8 when fine-tuning (ConvNeXt's recipe); None: off
    warmup_epochs: float = 1.0
    lrf: float = 0.01  # final LR = lr0 * lrf (cosine)
    ema: bool = True
    ema_decay: float = 0.999  # per step, ramped up (ModelEMA); small sets take few steps
    mixup: float = 0.0
    cutmix: float = 0.0
    auto_augment: str = "none"  # ImageNet recipes: randaugment (ClassifyAugment's default)
    erasing: float = 0.0  # ImageNet recipes: 0.25
    crop_ratio: float = 0.875
    fliplr: float = 0.5
    scale: float = 0.35  # RandomResizedCrop's smallest crop area share; ImageNet recipes 0.08 (too small a crop
    # of a one-object image often cuts the object out: a wrong label)
    cache: str = ""  # '' | ram | disk
    workers: int = 8
    device: str = ""
    project: str = str(ROOT / "runs" / "train-cls")
    name: str = "exp"
    exist_ok: bool = False
    patience: int = 0  # epochs without top-1 gain before stopping; 0: off
    seed: int = 0
    resume: str | bool = False
    verbose: bool = False
    noplots: bool = False
    channels_last: bool = True
    clip_norm: float = 10.0

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> ClassifyTrainOptions:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise UserError(f"unknown classify/train.py setting(s) {', '.join(unknown)} — see --help")
        return cls(**{k: v for k, v in kwargs.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def augment(self) -> ClassifyAugment:
        """The data pipeline's settings (checked there too)."""
        return ClassifyAugment(
            fliplr=self.fliplr,
            scale=(self.scale, 1.0),
            auto_augment=self.auto_augment,
            erase=self.erasing,
            mixup=self.mixup,
            cutmix=self.cutmix,
            crop_ratio=self.crop_ratio,
        )

    def check(self) -> None:
        """One-line UserErrors for every bad number, before any data or model is touched."""
        A.check_int("epochs", self.epochs, lo=1, todo="e.g. --epochs 10")
        A.check_int("batch_size", self.batch_size, lo=1, todo="e.g. --batch-size 32")
        A.check_int("imgsz", self.imgsz, lo=16, todo="e.g. --imgsz 224")
        A.check_int("workers", self.workers, lo=0, todo="e.g. --workers 8")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"--optimizer {self.optimizer!r} is not supported — use one of {', '.join(OPTIMIZERS)}")
        for name, lo, hi in (("lr0", 0, 10), ("lrf", 0, 1), ("decay", 0, 1), ("label_smoothing", 0, 1)):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and lo <= v <= hi) or (name == "lr0" and v == 0):
                raise UserError(f"{A.flag(name)} {v} is out of range — use a number in ({lo}, {hi}]")
        for name in ("dropout", "drop_path", "layer_decay"):
            v = getattr(self, name)
            if v is not None and not 0 <= v < 1 + (name == "layer_decay"):
                raise UserError(f"{A.flag(name)} {v} must be in [0, 1) (layer decay in (0, 1])")
        if self.warmup_epochs < 0 or not 0 <= self.ema_decay < 1 or self.clip_norm <= 0:
            raise UserError("--warmup-epochs must be >= 0, --ema-decay in [0, 1), --clip-norm > 0")
        if self.auto_augment not in AUTO_AUGMENTS:
            raise UserError(f"--auto-augment {self.auto_augment!r}: use one of {', '.join(AUTO_AUGMENTS)}")
        if self.cache not in ("", "ram", "disk"):
            raise UserError(f"--cache {self.cache!r}: use ram or disk (or leave it out)")
        self.augment()  # probabilities, alphas and the crop ratio
