"""jobs/score.py --log on Spark (in-process on the shared session): the same sample and values as the
embedded engine, and the re-run after a failure between the two commits completes the log once."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sparkscore.engines.batch import score_files
from sparkscore.errors import JobError
from sparkscore.monitor import predlog
from tests.engines.test_batch import churn_model

pytestmark = pytest.mark.spark
pytest.importorskip("pyspark")
deltalake = pytest.importorskip("deltalake")

REPO = Path(__file__).resolve().parents[2]
ROWS = 1500


def _job():
    spec = importlib.util.spec_from_file_location("score_job", REPO / "jobs" / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_spark_job_logs_the_embedded_sample_and_completes_it_after_a_failure(spark, registry, tmp_path, monkeypatch,
                                                                              fail_commit):
    registry.register("churn", churn_model())
    rng = np.random.default_rng(2)
    frame = pd.DataFrame({"id": np.arange(ROWS), "age": rng.normal(size=ROWS), "spend": rng.normal(size=ROWS)})
    frame.to_parquet(tmp_path / "input.parquet")
    score_files("churn", str(tmp_path / "input.parquet"), str(tmp_path / "ref-out"), registry=registry,
                job_id="j", log=predlog.LogSpec(str(tmp_path / "ref-log"), 0.1, 60, "id"))
    job = _job()
    args = job.parse_args(["--model", "churn", "--input", str(tmp_path / "input.parquet"), "--output",
                           str(tmp_path / "out"), "--job-id", "j", "--registry", str(registry.root),
                           "--log", str(tmp_path / "log"), "--log-fraction", "0.1", "--log-max-rows", "60",
                           "--log-id", "id"])
    fail_commit("log")
    with pytest.raises(JobError, match="output is committed but its prediction log"):
        job.run(spark, args, time.time())
    assert not (tmp_path / "log" / "_delta_log").exists()
    monkeypatch.undo()
    assert job.run(spark, args, time.time()) == 0  # completes the log, adds no output rows
    assert len(deltalake.DeltaTable(str(tmp_path / "out")).history()) == 1
    logged = deltalake.DeltaTable(str(tmp_path / "log")).to_pandas().sort_values("request_id", ignore_index=True)
    ref = deltalake.DeltaTable(str(tmp_path / "ref-log")).to_pandas().sort_values("request_id", ignore_index=True)
    assert len(logged) == 60
    pd.testing.assert_frame_equal(logged.drop(columns="ts"), ref.drop(columns="ts"))  # same rows, same values
    out = deltalake.DeltaTable(str(tmp_path / "out")).to_pandas().set_index("id")
    np.testing.assert_array_equal(logged.prediction, out.loc[logged.request_id.astype(int), "prediction"])


@pytest.mark.parametrize("kind", ["udf", "fused", "arrow"])
def test_worker_functions_score_on_the_sources_backend(registry, compiled_backends, kind):
    """What a Spark worker runs (called here in-process): every scorer it compiles uses the backend its
    ModelSource carries, so a logged job's executors score on the row-stable backend as its driver does
    (a worker-side ScoringFunction on ``auto`` made 3 of 60 logged rows differ by 1 ulp in CI)."""
    import pyarrow as pa

    from sparkscore.engines.spark import FusedFunction, ModelFunction, ModelSource, PartitionScorer

    mv = registry.register("churn", churn_model())
    source = ModelSource(str(registry.root), mv.name, mv.version, mv.sha256, backend="numba")
    backends = compiled_backends
    age, spend = pa.array([0.5, -1.0, 2.0]), pa.array([1.0, 0.25, -3.0])
    if kind == "udf":
        out = list(ModelFunction("churn_v1", source, "predict", "DOUBLE")(iter([(age, spend)])))
    elif kind == "fused":
        out = list(FusedFunction("churn_v1_fused", source, (("predict", "DOUBLE"), ("proba", "DOUBLE[]")))(
            iter([(age, spend)])))
    else:
        batch = pa.RecordBatch.from_arrays([age, spend], names=["age", "spend"])
        out = list(PartitionScorer(source, ("age", "spend"), (("p", "predict", "DOUBLE"),))(iter([batch])))
    assert len(out) == 1 and backends and set(backends) == {"numba"}, backends
