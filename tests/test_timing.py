"""utils/core/timing.Profile: seconds per block and their total; CUDA synchronised around a block only on CUDA."""

from __future__ import annotations

import time

import pytest
import torch

from utils.core.timing import Profile


def test_profile_adds_each_block_and_keeps_the_last():
    p = Profile()
    with p:
        time.sleep(0.02)
    first = p.dt
    with p:
        time.sleep(0.05)
    assert 0.02 <= first < 0.05 + 0.5  # sleep may overshoot on a loaded machine, never undershoot
    assert 0.05 <= p.dt and p.t == pytest.approx(first + p.dt)


def test_profile_synchronises_cuda_only_on_a_cuda_device(monkeypatch):
    synced = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(device))
    with Profile("cpu"), Profile(torch.device("cpu")), Profile():
        pass
    assert synced == []
    with Profile("cuda:0"):  # needs no GPU: synchronize is the stand-in above
        assert synced == [torch.device("cuda:0")]  # entry: the work queued before the block is not counted
    assert synced == [torch.device("cuda:0")] * 2  # exit: the block's kernels have finished


def test_rotated_ms_rotates_the_order_and_times_each_call():
    """benchmarks.common.rotated_ms: each round starts one call later (no call always runs first or after the same
    neighbour), each call runs once untimed then `iters` times, and a slower call gets the larger median."""
    from benchmarks.common import rotated_ms

    log: list[int] = []

    def call(i: int, s: float):
        return lambda: (log.append(i), time.sleep(s))

    ms = rotated_ms([call(0, 0.0), call(1, 0.01), call(2, 0.0)], runs=3, iters=2)
    rounds = [log[k * 9 : (k + 1) * 9] for k in range(3)]  # 3 calls x (1 untimed + 2 timed) per round
    assert [r[::3] for r in rounds] == [[0, 1, 2], [1, 2, 0], [2, 0, 1]]
    assert len(log) == 27 and all(r[i : i + 3] == [r[i]] * 3 for r in rounds for i in (0, 3, 6))
    assert ms[1] >= 10 and ms[0] < 10 and ms[2] < 10
