"""Shared fixtures: one local Spark session per run, temporary registries, the model zoo."""

from __future__ import annotations

import os
import sys

import pytest


@pytest.fixture
def registry(tmp_path):
    """An empty registry in a temporary directory."""
    import sparkscore as ss

    return ss.Registry(tmp_path / "registry")


@pytest.fixture(scope="session")
def spark():
    """One local[2] Spark session shared by every Spark test in the run (start-up is ~9 s)."""
    pyspark = pytest.importorskip("pyspark")
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master("local[2]")
        .appName("sparkscore-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", "2g")
        .config("spark.pyspark.python", sys.executable)
        .getOrCreate()
    )
    assert pyspark is not None
    yield session
    session.stop()
