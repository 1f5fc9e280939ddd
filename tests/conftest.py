"""Fixtures shared by the tests (helpers live in helpers.py)."""

import pytest
from helpers import golden


@pytest.fixture(scope="session")
def golden_path():
    """Path of a golden model, building it first if it is built on demand."""

    def get(m) -> str:
        return golden.build(m)

    return get
