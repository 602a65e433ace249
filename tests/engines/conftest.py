"""Engine test fixtures."""

from __future__ import annotations

import duckdb
import pytest


@pytest.fixture
def con():
    """A fresh in-memory DuckDB connection, closed after the test."""
    connection = duckdb.connect()
    yield connection
    connection.close()
