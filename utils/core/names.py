"""Class names in the one shape the code base uses: {int id: str name}. A leaf: imports nothing of ours."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def names_dict(names: Mapping[Any, Any] | Sequence[Any] | None) -> dict[int, str]:
    """A list/tuple ['cat', 'dog'] or a mapping {0: 'cat', '1': 'dog'} (yaml may give str keys) -> {0: 'cat', 1: 'dog'}.

    None or empty gives {}."""
    if not names:
        return {}
    if isinstance(names, Mapping):
        return {int(k): str(v) for k, v in names.items()}
    return {i: str(v) for i, v in enumerate(names)}
