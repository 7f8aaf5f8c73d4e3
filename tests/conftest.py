"""Shared pytest setup. Fixtures and the helpers more than one test module uses live in tests/fixtures_<area>.py (one
owner each), loaded as pytest plugins; a test module never imports another. The project log is read with caplog.

Tests that use the trained fixture model (`trained_run` / `trained_weights`, a 120-epoch session-wide training run)
are marked `slow` here: `pytest -m "not slow"` is the quick local loop; CI runs everything.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the plugins below are imported as tests.<name> from the repository root
os.environ.setdefault("MPLBACKEND", "Agg")  # no display on CI

pytest_plugins = ["tests.fixtures_data", "tests.fixtures_models", "tests.fixtures_train", "tests.fixtures_classify"]

SLOW_FIXTURES = {"trained_run", "trained_weights"}


@pytest.fixture(autouse=True)
def _caplog_sees_project_logger(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """caplog.text / caplog.records hold the project LOGGER's lines in every test.

    LOGGER does not propagate to the root logger (a user's root handler would print every line twice), so caplog's
    handler, which pytest puts on the root logger, is attached to it here. Only recent pytest versions attach it to
    non-propagating loggers themselves; adding a handler twice is a no-op."""
    from utils.core.log import LOGGER

    LOGGER.addHandler(caplog.handler)
    yield
    LOGGER.removeHandler(caplog.handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the trained fixture model slow (directly or through another fixture)."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
