"""Fixtures shared by the tests (helpers live in helpers.py)."""

import os

import pytest
from helpers import golden

from graphopt.pipeline.base import VERIFY_ENV

# Every pipeline a test runs verifies the IR after every pass (docs/ARCHITECTURE.md, The IR).
os.environ[VERIFY_ENV] = "1"


@pytest.fixture(scope="session")
def golden_path():
    """Path of a golden model, building it first if it is built on demand."""

    def get(m) -> str:
        return golden.build(m)

    return get


@pytest.fixture(autouse=True)
def _fresh_graphopt_logger():
    """The CLI configures the `graphopt` logger (own handler, no propagation); undo that after
    each test so later tests can capture its warnings with caplog."""
    import logging

    yield
    logger = logging.getLogger("graphopt")
    logger.handlers, logger.propagate = [], True
    logger.setLevel(logging.NOTSET)
