"""utils/host_memory: CPU training keeps freed tensor memory instead of page-faulting it in again every step."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from utils.host_memory import _glibc, user_chose_allocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Faults of allocating and filling 64 MiB a second time, before and after keep_freed_memory(), in a fresh process
# (this test process may have applied it already: train tests run the trainer in-process).
PROBE = r"""
import json, resource, sys, torch
from utils.host_memory import keep_freed_memory
def refaults():
    x = torch.ones(16 << 20); del x              # 64 MiB, filled: the first time is paid either way
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = torch.ones(16 << 20); del y
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
plain = refaults()
applied = keep_freed_memory()
print(json.dumps({"plain": plain, "applied": applied, "kept": refaults()}))
"""


def _probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("GLIBC_TUNABLES",
                                                                                              "LD_PRELOAD")}
    r = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={**clean, **env})
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(_glibc() is None, reason="mallopt thresholds are glibc's")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    out = _probe()
    if out["plain"] < 4096:  # e.g. transparent huge pages on every mapping: nothing to save on this kernel
        pytest.skip(f"this kernel faults 64 MiB in {out['plain']} faults without the setting")
    assert out["applied"] is True
    assert out["kept"] < out["plain"] / 10, out  # 16384 faults of 4 KiB each -> (almost) none


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
