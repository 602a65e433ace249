"""The per-executor model cache of the Spark engine, without a JVM: the worker side of a UDF
(``ModelSource``) run in this process and in forked processes standing in for an executor's
Python workers (what tests/engines/test_spark_cluster.py shows on two real executor JVMs)."""

from __future__ import annotations

import multiprocessing
import time

import numpy as np
import pytest

from sparkscore import Model
from sparkscore.errors import IntegrityError
from sparkscore.ir import LinearModel, Signature
from sparkscore.registry import Registry

pytestmark = pytest.mark.spark

ss_spark = pytest.importorskip("sparkscore.engines.spark")


@pytest.fixture
def source(registry):
    model = Model(LinearModel(np.array([0.5, -1.0]), [0.1], "logistic"), Signature.from_names(["a", "b"]),
                  task="classification", classes=(0, 1))
    mv = registry.register("glm", model)
    return ss_spark.ModelSource(str(registry.root), "glm", mv.version, mv.sha256)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """This process is 'an executor worker' whose shared model directory is ``cache_dir``."""
    path = tmp_path / "executor-cache"
    monkeypatch.setenv(ss_spark.EXECUTOR_CACHE_ENV, str(path))
    return path


@pytest.fixture
def registry_reads(monkeypatch):
    """Counts Registry.load calls (each one a read of the registry's files)."""
    reads: list[str] = []
    real = Registry.load

    def load(self, ref, *args, **kwargs):
        reads.append(ref)
        return real(self, ref, *args, **kwargs)

    monkeypatch.setattr(Registry, "load", load)
    return reads


def test_the_second_worker_loads_the_executors_copy_not_the_registry(source, cache_dir, registry_reads):
    first, where_first = source._load()
    second, where_second = source._load()
    assert (where_first, where_second) == ("registry", "executor-cache")
    assert registry_reads == ["glm/1"]
    assert first.sha256 == second.sha256 == source.sha256
    assert sorted(p.name for p in cache_dir.iterdir()) == [source.sha256, f"{source.sha256}.lock"]
    X = np.array([[0.3, -2.0], [np.nan, 1.0]])
    np.testing.assert_array_equal(first.predict_proba(X, backend="numpy"), second.predict_proba(X, backend="numpy"))


def test_a_damaged_executor_copy_is_replaced_from_the_registry(source, cache_dir, registry_reads):
    source._load()
    arrays = next((cache_dir / source.sha256).glob("*.npz"))
    arrays.write_bytes(arrays.read_bytes()[:-7] + b"garbage")
    model, where = source._load()                  # sha256 re-checked on read: the copy is not trusted
    assert where == "registry" and model.sha256 == source.sha256 and len(registry_reads) == 2
    assert source._load()[1] == "executor-cache"   # and written again, whole
    assert Model.load(cache_dir / source.sha256).sha256 == source.sha256


def test_a_version_whose_registry_files_changed_is_refused_and_not_cached(source, cache_dir):
    stale = ss_spark.ModelSource(source.registry_uri, source.name, source.version, "0" * 64)
    with pytest.raises(IntegrityError, match="glm/1: stored model has sha256"):
        stale._load()
    assert not (cache_dir / ("0" * 64)).exists() and not (cache_dir / source.sha256).exists()


@pytest.mark.parametrize("setting", ["off", None])
def test_without_an_executor_directory_every_worker_reads_the_registry(source, monkeypatch, registry_reads, setting):
    """``off``, or no SPARK_LOCAL_DIRS (not a Spark worker): the process cache alone, as before."""
    monkeypatch.delenv("SPARK_LOCAL_DIRS", raising=False)
    if setting is None:
        monkeypatch.delenv(ss_spark.EXECUTOR_CACHE_ENV, raising=False)
    else:
        monkeypatch.setenv(ss_spark.EXECUTOR_CACHE_ENV, setting)
    assert [source._load()[1] for _ in range(2)] == ["registry", "registry"]
    assert len(registry_reads) == 2


def test_spark_local_dirs_is_the_default_location(source, tmp_path, monkeypatch):
    monkeypatch.delenv(ss_spark.EXECUTOR_CACHE_ENV, raising=False)
    monkeypatch.setenv("SPARK_LOCAL_DIRS", f"{tmp_path / 'blockmgr-1'},{tmp_path / 'blockmgr-2'}")
    assert ss_spark.executor_cache_root() == tmp_path / "blockmgr-1" / ss_spark.EXECUTOR_CACHE_DIR
    assert source._load()[1] == "registry" and source._load()[1] == "executor-cache"


def _worker(source, start, out) -> None:  # one 'Python worker' of the executor (a forked process)
    start.wait()
    out.put(source._load()[1])


def test_concurrent_workers_of_one_executor_read_the_registry_once(source, cache_dir, monkeypatch):
    """Four workers start at the same moment (as PREDICT + PREDICT_PROBA's two do in every task); a
    slow registry read would let all of them miss without the lock: exactly one reads it."""
    real = Registry.load
    monkeypatch.setattr(Registry, "load", lambda self, ref: (time.sleep(0.3), real(self, ref))[1])
    ctx = multiprocessing.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(source, start, out)) for _ in range(4)]
    for w in workers:
        w.start()
    start.set()
    for w in workers:
        w.join(timeout=60)
    assert [w.exitcode for w in workers] == [0] * 4
    assert sorted(out.get(timeout=5) for _ in workers) == ["executor-cache"] * 3 + ["registry"]


def test_the_load_log_says_where_each_worker_got_the_model(source, cache_dir, tmp_path, monkeypatch):
    from sparkscore import compiler

    log = tmp_path / "loads.log"
    monkeypatch.setenv(ss_spark.LOAD_LOG_ENV, str(log))
    key = (source.name, source.version, source.sha256, "cpu")
    for _ in range(2):                    # a fresh worker each time: its process cache is empty
        compiler.forget(key)
        source.scorer()
        source.scorer()                   # later batches: no load, no line
    compiler.forget(key)
    lines = [line.split() for line in log.read_text().splitlines()]
    assert [(f[1], f[2], f[3], f[6]) for f in lines] == [("glm/1", source.sha256, "registry", str(cache_dir)),
                                                         ("glm/1", source.sha256, "executor-cache", str(cache_dir))]
    assert all(int(f[4]) >= 0 and float(f[5]) >= 0 for f in lines)   # numba cache misses, load + compile seconds
