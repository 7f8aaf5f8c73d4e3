"""train.py's options as one typed record. Its field defaults are the only copy of train's defaults: train.run()
builds a TrainOptions from its keywords, train.parse_opt() takes its argparse defaults from here, and --resume fills
the settings an older checkpoint lacks from here too."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from utils.core.distributed import DEFAULT_TIMEOUT_S
from utils.core.files import ROOT
from utils.core.log import LOGGER

DEFAULT_DATA = ROOT / "data" / "shapes.yaml"
DEFAULT_TRAIN_HYP = ROOT / "data" / "hyps" / "hyp.shapes.yaml"  # train.py's --hyp default
RUN_STATE = ("save_dir", "total_batch_size")  # fields train.run() sets itself: not flags, not keywords
MACHINE_KEYS = ("device", "workers", "ddp_timeout")  # the machine may differ on --resume: these come from the CLI


@dataclass
class TrainOptions:
    """Every train.py flag (as its Python keyword: --batch-size -> batch_size) plus the run state in RUN_STATE."""

    weights: str = ""
    cfg: str = ""
    data: str | dict = str(DEFAULT_DATA)
    hyp: str | dict = str(DEFAULT_TRAIN_HYP)
    epochs: int = 35  # the README's quick-start numbers were measured with 35
    batch_size: int = 16
    imgsz: int = 160
    rect: bool = False
    resume: str | bool = False
    evolve: int = 0  # generations of hyperparameter evolution (utils/training/evolve.py); 0 = a plain run
    nosave: bool = False
    noval: bool = False
    noautoanchor: bool = False
    noplots: bool = False
    device: str = ""
    multi_scale: bool = False
    single_cls: bool = False
    optimizer: str = "AdamW"
    sync_bn: bool = False
    workers: int = 2
    project: str = str(ROOT / "runs" / "train")
    name: str = "exp"
    exist_ok: bool = False
    cos_lr: bool = False
    label_smoothing: float = 0.0
    patience: int = 100
    freeze: Sequence[int] = (0,)
    freeze_epochs: int = 0
    layer_decay: float = 0.0
    backbone_weights: str = ""
    save_period: int = -1
    seed: int = 0
    image_weights: bool = False
    cache: str | bool | None = None
    ddp_timeout: int = DEFAULT_TIMEOUT_S
    backbone_sha256: str = ""
    backbone_ema: bool | None = None  # a training file with weights and their EMA: None/True the EMA, False the other
    channels_last: bool = True  # NHWC weights and batches: 0.83-0.88x yolov5's step time on CPU (docs/benchmarks.md)
    compile: bool = False  # torch.compile the training forward; eager with one warning where unavailable
    local_rank: int = -1
    save_dir: str = ""  # the run folder, once chosen
    total_batch_size: int = 0  # the batch over all ranks (= batch_size), which scales weight decay and accumulation

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> TrainOptions:
        """train.run()'s keywords -> options; unknown keywords (and RUN_STATE ones) are ignored with a warning."""
        known = flag_defaults()
        unused = sorted(k for k in kwargs if k not in known)
        if unused:
            LOGGER.warning(f"WARNING ⚠️ train.run: ignoring unknown options {unused}")
        return cls(**{k: v for k, v in kwargs.items() if k in known})

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> TrainOptions:
        """Options from a checkpoint's or opt.yaml's plain dict; keys this code no longer has are dropped."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for checkpoints (weights_only loading) and opt.yaml: paths as str, tuples as lists."""
        out = asdict(self)
        return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def flag_defaults() -> dict[str, Any]:
    """{keyword: default} of every train.py flag: the one table parse_opt and run() share."""
    return {f.name: f.default for f in fields(TrainOptions) if f.name not in RUN_STATE}


def resume_defaults() -> dict[str, Any]:
    """Defaults for the settings an older checkpoint lacks, without those --resume takes from the command line."""
    skip = (*MACHINE_KEYS, "resume", "weights")
    return {k: v for k, v in flag_defaults().items() if k not in skip}
