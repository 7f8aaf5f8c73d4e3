"""Shared pytest setup. Fixtures live in tests/fixtures_<area>.py (one owner each) and are gathered here."""
import importlib
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")  # no display on CI

for _name in ("fixtures_data", "fixtures_models", "fixtures_train"):
    if (ROOT / "tests" / f"{_name}.py").exists():
        _mod = importlib.import_module(f"tests.{_name}")
        globals().update({k: v for k, v in vars(_mod).items() if not k.startswith("_")})
