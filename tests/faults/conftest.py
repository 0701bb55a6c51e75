"""The `leaks` fixture of the fault tests (tests/faults/faultkit.py)."""

from __future__ import annotations

import pytest
from faultkit import Leaks


@pytest.fixture
def leaks() -> Leaks:
    return Leaks()
