"""Shared pytest setup. Fixtures live in tests/fixtures_<area>.py (one owner each), loaded as pytest plugins.

Tests that use the trained fixture model (`trained_run` / `trained_weights`, a 120-epoch session-wide training run)
are marked `slow` here: `pytest -m "not slow"` is the quick local loop; CI runs everything.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the plugins below are imported as tests.<name> from the repository root
os.environ.setdefault("MPLBACKEND", "Agg")  # no display on CI

pytest_plugins = ["tests.fixtures_data", "tests.fixtures_models", "tests.fixtures_train"]

SLOW_FIXTURES = {"trained_run", "trained_weights"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the trained fixture model slow (directly or through another fixture)."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
