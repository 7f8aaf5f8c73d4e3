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
