"""Concurrent registration from threads and processes at once: versions 1..N, no gaps, no duplicates."""

import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor

from sparkscore.registry import Registry
from tests.registry.models import tiny_model

N_THREADS = 20
N_PROCESSES = 8


def _register_in_process(root: str, intercept: float, start, results) -> None:
    start.wait()
    mv = Registry(root).register("churn", tiny_model(intercept))
    results.put((intercept, mv.version, mv.sha256))


def test_threads_and_processes_register_one_name_concurrently(tmp_path):
    root = str(tmp_path / "registry")
    ctx = multiprocessing.get_context("spawn")  # fork is unsafe once torch/duckdb threads exist in the runner
    start, results = ctx.Event(), ctx.Queue()
    processes = [ctx.Process(target=_register_in_process, args=(root, 1000.0 + i, start, results))
                 for i in range(N_PROCESSES)]
    for proc in processes:
        proc.start()
    barrier = threading.Barrier(N_THREADS)

    def register_in_thread(i: int):
        barrier.wait()
        mv = Registry(root).register("churn", tiny_model(float(i)))
        return float(i), mv.version, mv.sha256

    start.set()
    with ThreadPoolExecutor(N_THREADS) as pool:
        outcomes = list(pool.map(register_in_thread, range(N_THREADS)))
    outcomes += [results.get(timeout=120) for _ in processes]
    for proc in processes:
        proc.join(timeout=60)
        assert proc.exitcode == 0

    total = N_THREADS + N_PROCESSES
    assert sorted(version for _, version, _ in outcomes) == list(range(1, total + 1))
    registry = Registry(root)
    assert [mv.version for mv in registry.versions("churn")] == list(range(1, total + 1))
    for intercept, version, sha256 in outcomes:
        model = registry.load(f"churn/{version}")
        assert model.sha256 == sha256
        assert model.estimator.intercept[0] == intercept


def test_concurrent_alias_moves_always_leave_a_valid_alias(registry):
    for i in range(4):
        registry.register("churn", tiny_model(float(i)))
    stop = threading.Event()
    seen = []

    def reader():
        while not stop.is_set():
            seen.append(registry.get("churn@prod").version)

    registry.set_alias("churn", "prod", 1)
    thread = threading.Thread(target=reader)
    thread.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda v: [registry.set_alias("churn", "prod", v) for _ in range(25)], range(1, 5)))
    finally:
        stop.set()
        thread.join()
    assert set(seen) <= {1, 2, 3, 4} and seen
    assert registry.get("churn@prod").version in {1, 2, 3, 4}
