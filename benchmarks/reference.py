"""Reference implementations that only tests and benchmarks run: the plain ways the fast product code replaced.

- `CanvasMosaicDataset`: LoadImagesAndLabels whose mosaics always take the 2s x 2s canvas + warp path (`mosaic4` +
  `random_perspective`), the reference for the one-step mosaic of utils/dataloaders/mosaic.py
  (tests/test_fast_mosaic.py, benchmarks/dataloader.py `reference`).
- `LoopEMA`: ModelEMA updated by YOLOv5's per-tensor loop, the reference for the batched `torch._foreach_lerp_`
  update (tests/test_ema.py, benchmarks/train_speed.py `loop`).

Tests import this module; it imports no test.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from utils.core.parallel import unwrap
from utils.dataloaders.dataset import LoadImagesAndLabels
from utils.training.ema import ModelEMA


class CanvasMosaicDataset(LoadImagesAndLabels):
    """Every mosaic on the canvas (the path copy-paste takes), whatever the hyp: the same random draws and boxes as
    the one-step mosaic, pixels resampled twice, and the HSV jitter applied to the finished image."""

    def _one_step_mosaic(self) -> bool:
        return False


class LoopEMA(ModelEMA):
    """ModelEMA with YOLOv5's update: ema = d * ema + (1 - d) * model, two kernels per tensor in a Python loop."""

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay(self.updates)
        ema, cur = self._float_pairs(unwrap(model))
        for e, m in zip(ema, cur):
            e.mul_(d).add_(m, alpha=1 - d)
