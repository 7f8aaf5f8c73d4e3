"""DDP on CPU: torchrun with 2 processes and gloo completes an epoch, each rank sees half the training images."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys

from tests.fixtures_train import free_port
from utils.core.files import ROOT


def test_torchrun_two_cpu_ranks(shapes_yaml, micro_cfg_file, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(free_port()),
        str(ROOT / "train.py"),
        "--cfg",
        str(micro_cfg_file),
        "--data",
        str(shapes_yaml),
        "--epochs",
        "1",
        "--batch-size",
        "4",
        "--img",
        "64",
        "--device",
        "cpu",
        "--workers",
        "0",
        "--project",
        str(tmp_path),
        "--name",
        "ddp",
        "--noplots",
        "--noautoanchor",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, cwd="/", env=env, timeout=240)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "gloo process group, world size 2" in out
    m = re.search(r"DDP: images per rank this epoch \[(\d+), (\d+)\]", out)
    assert m, out[-2000:]
    a, b = int(m.group(1)), int(m.group(2))
    with open(tmp_path / "ddp" / "results.csv") as f:
        rows = [r for r in csv.reader(f) if r]
    assert len(rows) == 2  # header + epoch 0, written once (rank 0 only)
    from utils.dataloaders.data_yaml import check_dataset
    from utils.dataloaders.dataset import create_dataloader

    n_train = len(create_dataloader(check_dataset(str(shapes_yaml))["train"], 64, 4, 32, workers=0)[1])
    # DistributedSampler pads to a multiple of the world size: each rank gets ceil(n / 2)
    assert a == b == (n_train + 1) // 2
    assert (tmp_path / "ddp" / "weights" / "best.pt").is_file()
