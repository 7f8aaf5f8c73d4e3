"""DDP on CPU: torchrun with 2 processes and gloo completes an epoch, each rank sees half the training images; the
process group's timeout (3 h by default) and a barrier that gives up after it with a one-line error."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from datetime import timedelta

import torch

from tests.fixtures_train import free_port
from utils.core.errors import UserError
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


# ------------------------------------------------------------------------------------------------------------- timeouts
def test_ddp_default_timeout_is_three_hours(monkeypatch):
    import torch.distributed as dist

    from utils.core import distributed

    seen = []
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, timeout: seen.append((backend, timeout)))
    info = distributed.DistInfo(0, 0, 2)
    distributed.init_distributed(info, torch.device("cpu"))
    distributed.init_distributed(info, torch.device("cpu"), timeout_s=42)
    assert seen == [("gloo", timedelta(seconds=10800)), ("gloo", timedelta(seconds=42))]


def _barrier_rank(rank: int, port: int, q) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank)
    )
    from utils.core.distributed import barrier, dist_info, init_distributed

    init_distributed(dist_info(), torch.device("cpu"), timeout_s=1)
    if rank == 0:
        time.sleep(4)  # rank 0 still "scanning the dataset"
        q.put((0, "", 0.0))
        return
    t0 = time.time()
    try:
        barrier()
        q.put((1, "no timeout", time.time() - t0))
    except UserError as e:
        q.put((1, str(e), time.time() - t0))


def test_ddp_barrier_uses_the_group_timeout():
    """Two real gloo ranks on 127.0.0.1: rank 1 waits at a barrier for a slow rank 0 and gives up after timeout_s."""
    import torch.multiprocessing as mp

    port = free_port()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_barrier_rank, args=(r, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    got = {r: (msg, dt) for r, msg, dt in (q.get(timeout=60), q.get(timeout=60))}
    for p in procs:
        p.join(30)
    msg, waited = got[1]
    assert "waited longer than 1s" in msg and "--ddp-timeout" in msg and "\n" not in msg
    assert 0.5 < waited < 3.5
