"""utils/core/host_memory: CPU training keeps freed tensor memory instead of page-faulting it in again every step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from utils.core.host_memory import _glibc, user_chose_allocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Page faults of ten rounds of a training step's pattern (allocate, fill and free 64/32/48 MiB tensors) after five
# warm-up rounds, with glibc's defaults and then after keep_freed_memory(), in a fresh process (this test process may
# have applied it already: train tests run the trainer in-process). Steady state is what a step sees: with the
# defaults every round maps and faults its blocks in again; once kept, the heap holds its high-water mark.
PROBE = r"""
import json, resource, torch
from utils.core.host_memory import keep_freed_memory
def faults(rounds):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        a = torch.ones(16 << 20); b = torch.ones(8 << 20); del a; c = torch.ones(12 << 20); del b, c
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
faults(5); plain = faults(10)
applied = keep_freed_memory()
faults(5)
print(json.dumps({"plain": plain, "applied": applied, "kept": faults(10)}))
"""


def _probe(**env: str) -> dict:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES", "LD_PRELOAD")
    }
    r = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=120, env={**clean, **env}
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(_glibc() is None, reason="mallopt thresholds are glibc's")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    out = _probe()
    if out["plain"] < 40000:  # e.g. transparent huge pages on every mapping: little to save on this kernel
        pytest.skip(f"this kernel took only {out['plain']} faults for 1.4 GiB of fresh mappings")
    assert out["applied"] is True
    assert out["kept"] < out["plain"] / 20, out  # here: 368,670 faults of 4 KiB each -> 0


@pytest.mark.skipif(_glibc() is None, reason="mallopt thresholds are glibc's")
def test_users_allocator_settings_are_left_alone():
    out = _probe(MALLOC_TOP_PAD_="0")
    assert out["applied"] is False


def test_user_choice_detection():
    assert not user_chose_allocator({})
    assert user_chose_allocator({"MALLOC_TRIM_THRESHOLD_": "0"}) and user_chose_allocator({"GLIBC_TUNABLES": "x"})
    assert user_chose_allocator({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"})
    assert user_chose_allocator({"LD_PRELOAD": "libtcmalloc_minimal.so.4"})
    assert not user_chose_allocator({"LD_PRELOAD": "libfoo.so"})


def test_environment_form_names_the_same_settings():
    from utils.core.host_memory import SETTINGS, as_environment

    env = as_environment()
    assert env == {
        "MALLOC_MMAP_THRESHOLD_": str(1 << 30),
        "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
        "MALLOC_TOP_PAD_": str(256 << 20),
    } and len(env) == len(SETTINGS)
    assert user_chose_allocator(env)  # a child started with them leaves them alone
