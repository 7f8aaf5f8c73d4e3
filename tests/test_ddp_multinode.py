"""Multi-node DDP, shown on one machine: two `torchrun --nnodes 2 --nproc-per-node 1` launches (one per "node") meet
through a c10d rendezvous on 127.0.0.1 and train the micro model with gloo on CPU; the job is then stopped after a
checkpoint and continued with `--resume` under torchrun again.

What each rank really did is observed from outside the product code: the ranks run with a test-only
`sitecustomize.py` on PYTHONPATH that installs a PEP 578 audit hook (`sys.addaudithook`). It records, per rank, every
file the process created, opened for writing, renamed or removed under this test's tmp_path, and every training image
it read while the DataLoader fetched a sample (inside `Dataset.__getitem__`). train.py and utils/ know nothing of it.
Mosaic is off in this test's hyp so that one sample reads exactly one image file.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.fixtures_data import TINY, write_shapes_yaml
from tests.fixtures_train import free_port, train_hyp, write_micro_cfg
from utils.core.files import ROOT

EPOCHS = 3  # stopped after epoch 0's last.pt; the stop lands in epoch 1 or 2, the resume trains what is left
BATCH = 8  # total over both ranks: 4 per rank
IMGSZ = 64
N_TRAIN = TINY["n_train"]  # 32: the DistributedSampler splits it into two halves of 16, no padding
LAUNCH_TIMEOUT_S = 240  # each phase: both torchruns, start to exit

# Loaded by every Python process started with this PYTHONPATH; active only in torchrun's workers (RANK is set).
TRACER = r"""
import json, os, sys

_dir, _rank, _tag = os.environ.get("DDP_TRACE_DIR"), os.environ.get("RANK"), os.environ.get("DDP_TRACE_TAG", "")
if _dir and _rank is not None:
    _root = os.path.realpath(os.environ["DDP_TRACE_ROOT"])
    _out = open(os.path.join(_dir, f"{_tag}rank{_rank}.jsonl"), "a", buffering=1)  # before the hook: not traced
    _out.write(json.dumps({"op": "start", "pid": os.getpid()}) + "\n")  # lets the test clean up after a hang
    _write = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    _busy = [False]

    def _under_root(p):
        if isinstance(p, int) or p is None:  # a file descriptor: the path was traced when it was opened
            return None
        try:
            p = os.path.realpath(os.fsdecode(p))
        except Exception:
            return None
        return p if p == _root or p.startswith(_root + os.sep) else None

    def _in_getitem():
        f = sys._getframe(2)
        while f is not None:
            if f.f_code.co_name == "__getitem__":
                return True
            f = f.f_back
        return False

    def _record(event, args):
        if event == "open":
            path, mode, flags = args
            p = _under_root(path)
            if p is None:
                return None
            if (isinstance(flags, int) and flags & _write) or (mode and any(c in mode for c in "wax+")):
                return {"op": "write", "path": p}
            return {"op": "sample", "path": p} if _in_getitem() else None
        if event in ("os.mkdir", "os.remove", "os.rmdir", "os.truncate"):
            p = _under_root(args[0])
            return {"op": event, "path": p} if p else None
        if event == "os.rename":  # os.rename and os.replace
            src, dst = _under_root(args[0]), _under_root(args[1])
            return {"op": event, "path": dst or src, "src": src} if (src or dst) else None
        return None

    def _hook(event, args):
        if _busy[0] or event not in ("open", "os.mkdir", "os.remove", "os.rmdir", "os.truncate", "os.rename"):
            return
        _busy[0] = True
        try:
            rec = _record(event, args)
            if rec is not None:
                _out.write(json.dumps(rec) + "\n")
        finally:
            _busy[0] = False

    sys.addaudithook(_hook)
"""


def torchrun_node(port: int, rdzv_id: str, train_args: list[str]) -> list[str]:
    """One node's launcher: the command a user runs on each machine (endpoint = the first node's address)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc-per-node",
        "1",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        f"127.0.0.1:{port}",
        "--rdzv-id",
        rdzv_id,
        "--local-addr",
        "127.0.0.1",
        "--max-restarts",
        "0",
        str(ROOT / "train.py"),
        *train_args,
    ]


class Job:
    """Both nodes' torchruns, started at once, each in its own session; output to logs/<tag>-node<i>.log."""

    def __init__(self, tag: str, train_args: list[str], env: dict[str, str], logs: Path, trace: Path):
        self.tag, self.trace = tag, trace
        port, rdzv_id = free_port(), f"yolo-test-{tag}-{os.getpid()}-{time.time_ns()}"
        env = {**env, "DDP_TRACE_TAG": f"{tag}-"}
        self.logs = [logs / f"{tag}-node{node}.log" for node in range(2)]
        self.procs = []
        for log in self.logs:
            with open(log, "w") as f:
                self.procs.append(
                    subprocess.Popen(
                        torchrun_node(port, rdzv_id, train_args),
                        stdout=f,
                        stderr=subprocess.STDOUT,
                        cwd=str(logs),
                        env=env,
                        start_new_session=True,
                    )
                )

    def running(self) -> bool:
        return all(p.poll() is None for p in self.procs)

    def output(self) -> str:
        return "\n".join(f"----- {log.name}\n{log.read_text(errors='replace')}" for log in self.logs)

    def stop(self) -> None:
        """SIGTERM to both launchers (torchrun passes it on to its worker and waits for it). Past 60 s: SIGKILL the
        launchers and the workers they started (each worker leads its own session; its pid is in the trace)."""
        for p in self.procs:
            try:
                if p.poll() is None:
                    os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:  # it exited in between
                pass
        try:
            for p in self.procs:
                p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        for pid in [p.pid for p in self.procs if p.poll() is None] + self.worker_pids():
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for p in self.procs:
            p.wait(timeout=30)

    def worker_pids(self) -> list[int]:
        return [
            r["pid"]
            for f in self.trace.glob(f"{self.tag}-rank*.jsonl")
            for r in map(json.loads, f.read_text().splitlines())
            if r["op"] == "start"
        ]

    def wait(self, timeout_s: float) -> tuple[list[int], str]:
        """(exit codes, both nodes' output) once both launchers exit; a job still running at the deadline is killed."""
        deadline = time.monotonic() + timeout_s
        try:
            for p in self.procs:
                p.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"torchrun job still running after {timeout_s}s:\n{self.output()[-4000:]}")
        return [p.returncode for p in self.procs], self.output()


def read_trace(trace: Path, tag: str, rank: int) -> list[dict]:
    f = trace / f"{tag}-rank{rank}.jsonl"
    assert f.is_file(), f"no trace from rank {rank} ({tag}): the audit-hook sitecustomize did not load"
    return [json.loads(line) for line in f.read_text().splitlines() if line.strip()]


def epochs_of(samples: list[str], n: int) -> list[list[str]]:
    """A rank's training samples cut into its epochs (n per rank per epoch, read in order with --workers 0);
    a last, incomplete epoch (the job was stopped in it) is left out."""
    return [samples[i : i + n] for i in range(0, len(samples) - n + 1, n)]


def expected_split(im_files: list[str], epoch: int, rank: int) -> list[str]:
    """What torch's DistributedSampler (seed 0, 2 replicas, shuffled) gives rank `rank` in `epoch`."""
    from torch.utils.data import DistributedSampler

    s = DistributedSampler(range(len(im_files)), num_replicas=2, rank=rank, shuffle=True, seed=0)
    s.set_epoch(epoch)
    return [im_files[i] for i in s]


def results_epochs(csv_file: Path) -> list[int]:
    with open(csv_file) as f:
        rows = [r for r in csv.reader(f) if r][1:]
    return [int(float(r[0])) for r in rows]


def check_samples(trace: Path, tag: str, train_dir: Path, im_files: list[str], epochs: list[int]) -> None:
    """Per epoch: the two ranks read disjoint halves that cover the training set, exactly DistributedSampler's."""
    half = N_TRAIN // 2
    per_rank = []
    for rank in (0, 1):
        samples = [
            r["path"]
            for r in read_trace(trace, tag, rank)
            if r["op"] == "sample" and Path(r["path"]).parent == train_dir
        ]
        per_rank.append(epochs_of(samples, half))
    for k, epoch in enumerate(epochs):
        assert len(per_rank[0]) > k and len(per_rank[1]) > k, f"{tag}: epoch {epoch} not traced on both ranks"
        a, b = per_rank[0][k], per_rank[1][k]
        assert len(set(a)) == len(set(b)) == half, f"{tag} epoch {epoch}: a rank read an image twice"
        assert not set(a) & set(b), f"{tag} epoch {epoch}: both ranks trained on {sorted(set(a) & set(b))}"
        assert set(a) | set(b) == set(im_files), f"{tag} epoch {epoch}: the two halves miss training images"
        for rank, got in enumerate((a, b)):
            assert got == expected_split(im_files, epoch, rank), (
                f"{tag} epoch {epoch}: rank {rank} did not read DistributedSampler's split for this epoch"
            )


def check_writes(trace: Path, tag: str) -> list[dict]:
    """Rank 1 created, wrote, renamed and removed nothing under tmp_path; returns rank 0's file operations."""
    ops1 = [r for r in read_trace(trace, tag, 1) if r["op"] not in ("start", "sample")]
    assert ops1 == [], f"{tag}: rank 1 wrote files: {ops1[:10]}"
    assert any(r["op"] == "sample" for r in read_trace(trace, tag, 1)), f"{tag}: rank 1's tracer saw no samples"
    return [r for r in read_trace(trace, tag, 0) if r["op"] not in ("start", "sample")]


@pytest.mark.slow
def test_torchrun_two_nodes_c10d_and_resume(tmp_path):
    from data.scripts.make_shapes import generate_shapes
    from models.checkpoint import load_checkpoint
    from utils.dataloaders.dataset import create_dataloader

    # a private dataset (under tmp_path, traced): its label caches do not exist yet, so who writes them is observed
    data_root = generate_shapes(tmp_path / "data" / "shapes", **TINY)
    data_yaml = write_shapes_yaml(data_root, tmp_path / "data" / "shapes.yaml")
    train_dir = (data_root / "images" / "train").resolve()
    inputs, logs, trace, project = (tmp_path / d for d in ("inputs", "logs", "trace", "runs"))
    for d in (inputs, logs, trace):
        d.mkdir()
    hyp = inputs / "hyp.yaml"
    hyp.write_text(yaml.safe_dump(train_hyp(mosaic=0.0, mixup=0.0, copy_paste=0.0)))  # a sample = one image file
    nc = len(yaml.safe_load(data_yaml.read_text())["names"])
    cfg = write_micro_cfg(inputs / "micro.yaml", nc=nc)
    (inputs / "sitecustomize.py").write_text(TRACER)
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(inputs), os.environ.get("PYTHONPATH")])),
        "DDP_TRACE_DIR": str(trace),
        "DDP_TRACE_ROOT": str(tmp_path),
    }
    # --ddp-timeout: a rank left waiting by a broken job fails within minutes, not the default 3 h
    machine = ["--device", "cpu", "--workers", "0", "--ddp-timeout", "120"]
    last = project / "ddp" / "weights" / "last.pt"

    # ---- phase 1: a 3-epoch job, stopped (SIGTERM to both nodes) as soon as epoch 0's last.pt is in place
    job = Job(
        "train",
        [
            "--cfg",
            str(cfg),
            "--data",
            str(data_yaml),
            "--hyp",
            str(hyp),
            "--epochs",
            str(EPOCHS),
            "--batch-size",
            str(BATCH),
            "--img",
            str(IMGSZ),
            "--project",
            str(project),
            "--name",
            "ddp",
            "--noplots",
            "--noautoanchor",
            "--seed",
            "0",
            *machine,
        ],
        env,
        logs,
        trace,
    )
    try:
        deadline = time.monotonic() + LAUNCH_TIMEOUT_S
        while not last.is_file() and job.running() and time.monotonic() < deadline:
            time.sleep(0.05)  # save_checkpoint is atomic (temp + os.replace): present means complete
    finally:
        job.stop()
    out1 = job.output()
    assert last.is_file(), f"no last.pt after epoch 0:\n{out1[-4000:]}"
    assert "gloo process group, world size 2" in out1, out1[-3000:]
    m = re.search(r"DDP: images per rank this epoch \[(\d+), (\d+)\]", out1)  # rank 0's log of epoch 0
    assert m and m.groups() == (str(N_TRAIN // 2), str(N_TRAIN // 2)), out1[-3000:]
    stopped_after = load_checkpoint(last)["epoch"]
    assert 0 <= stopped_after < EPOCHS - 1, (
        f"the stop came too late (last.pt of epoch {stopped_after}): nothing left to resume"
    )

    # ---- phase 2: the same two launches with --resume; settings come from the checkpoint, the machine from the CLI
    codes, out2 = Job("resume", ["--resume", str(last), *machine], env, logs, trace).wait(LAUNCH_TIMEOUT_S)
    assert codes == [0, 0], out2[-5000:]
    assert f"Resuming training from epoch {stopped_after + 1} to {EPOCHS} total epochs" in out2, out2[-3000:]
    resumed = list(range(stopped_after + 1, EPOCHS))
    counts = re.findall(r"DDP: images per rank this epoch \[(\d+), (\d+)\]", out2)
    assert counts == [(str(N_TRAIN // 2), str(N_TRAIN // 2))] * len(resumed), out2[-3000:]

    # one run folder, each epoch once in results.csv, a finished run's weights
    assert sorted(p.name for p in project.iterdir()) == ["ddp"]
    assert results_epochs(project / "ddp" / "results.csv") == list(range(EPOCHS))
    assert (project / "ddp" / "weights" / "best.pt").is_file()
    assert load_checkpoint(last)["epoch"] == -1  # stripped at the end: this run is finished

    # what each rank read: disjoint halves, each epoch's own DistributedSampler shuffle (also after the resume)
    dataset = create_dataloader(str(train_dir), IMGSZ, 4, 32, workers=0, nc=nc)[1]  # nc as trained: cache current
    im_files = [str(Path(f).resolve()) for f in dataset.im_files]
    assert len(im_files) == N_TRAIN
    check_samples(trace, "train", train_dir, im_files, [0])
    check_samples(trace, "resume", train_dir, im_files, resumed)

    # only rank 0 wrote: rank 1 touched no file under tmp_path in either phase; rank 0 wrote the labels cache once
    ops0 = check_writes(trace, "train")
    cache = str((data_root / "labels" / "train.cache").resolve())
    assert [r["op"] for r in ops0 if r["path"] == cache] == ["os.rename"], [r for r in ops0 if "cache" in r["path"]]
    assert any(r["op"] == "os.rename" and r["path"] == str(last.resolve()) for r in ops0)  # the tracer sees writes
    ops0 = check_writes(trace, "resume")
    assert not [r for r in ops0 if r["path"] == cache]  # the resumed job read the cache, wrote none
    assert any(r["path"] == str((project / "ddp" / "weights" / "best.pt").resolve()) for r in ops0)
