"""Shared fixtures: one local Spark session per run, temporary registries, the model zoo."""

from __future__ import annotations

import os

import pytest

# The tests check exactness, not which kernel wins: a short calibration per compile keeps a suite of
# hundreds of compiles fast (Spark's Python workers inherit it).  The benchmarks run the default budget.
os.environ.setdefault("SPARKSCORE_CALIBRATION_BUDGET_S", "0.3")


@pytest.fixture
def registry(tmp_path):
    """An empty registry in a temporary directory."""
    import sparkscore as ss

    return ss.Registry(tmp_path / "registry")


@pytest.fixture
def runner(monkeypatch, tmp_path):
    """typer CliRunner with its own default registry ($SPARKSCORE_HOME) and a wide console."""
    from typer.testing import CliRunner

    monkeypatch.setenv("SPARKSCORE_HOME", str(tmp_path / "home-registry"))
    monkeypatch.setenv("COLUMNS", "200")
    return CliRunner()


@pytest.fixture(scope="session")
def spark():
    """One local[2] Spark session shared by every Spark test in the run (start-up is ~9 s)."""
    from tests.zoo.pyspark_cases import spark_session  # the zoo's Spark cases build the same session

    session = spark_session()
    yield session
    session.stop()


@pytest.fixture
def fail_commit(monkeypatch):
    """``fail_commit(which, exc)``: make ``delta.commit_staged`` raise ``exc`` for the table whose folder is
    named ``which`` (a job's two commit points: its output and its prediction log); ``monkeypatch.undo()``
    lifts it."""
    from pathlib import Path

    from sparkscore.engines import delta

    real = delta.commit_staged

    def arm(which: str, exc: type[BaseException] = RuntimeError) -> None:
        def commit(target, *args, **kwargs):
            if Path(target).name == which:
                raise exc("injected failure")
            return real(target, *args, **kwargs)
        monkeypatch.setattr(delta, "commit_staged", commit)
    return arm


@pytest.fixture
def compiled_backends(monkeypatch) -> list:
    """The ``backend`` of every ``compiler.cached`` call made while the test runs, in order."""
    from sparkscore import compiler

    backends: list = []
    real = compiler.cached

    def recording(key, load, backend="auto", device="cpu"):
        backends.append(backend)
        return real(key, load, backend, device)
    monkeypatch.setattr(compiler, "cached", recording)
    return backends
