"""Prediction logs written by batch jobs (embedded engine, ``sparkscore score --log``): sampled,
bounded, deterministic, and all-or-nothing with the job across the crash windows of the protocol."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from sparkscore.cli import app
from sparkscore.engines import delta, joblog
from sparkscore.engines.batch import score_files
from sparkscore.errors import JobError
from sparkscore.monitor import predlog
from tests.engines.test_batch import churn_model
from tests.test_cli import assert_one_line_error

deltalake = pytest.importorskip("deltalake")

ROWS = 3000


@pytest.fixture
def setup(registry, tmp_path):
    registry.register("churn", churn_model())
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"id": np.arange(ROWS) * 7, "age": rng.normal(size=ROWS), "spend": rng.normal(size=ROWS)})
    frame.loc[5, "age"] = np.nan
    frame.to_parquet(tmp_path / "input.parquet")
    return {"registry": registry, "input": str(tmp_path / "input.parquet"), "data": frame, "tmp": tmp_path}


def run(setup, out: str = "out", log: str = "log", job_id: str = "day-1", fraction: float = 0.2,
        max_rows: int = 100_000, id_column: str | None = "id"):
    tmp = setup["tmp"]
    return score_files("churn", setup["input"], str(tmp / out), registry=setup["registry"], job_id=job_id,
                       batch_rows=700, log=predlog.LogSpec(str(tmp / log), fraction, max_rows, id_column))


def rows(path: Path) -> pd.DataFrame:
    return deltalake.DeltaTable(str(path)).to_pandas()


def test_log_rows_are_the_jobs_inputs_and_outputs(setup):
    result = run(setup)
    tmp, data = setup["tmp"], setup["data"].set_index("id")
    out = rows(tmp / "out").set_index("id")
    logged = rows(tmp / "log")
    mv = setup["registry"].get("churn")
    assert list(logged.columns) == [*predlog.FIXED_COLUMNS, "age", "spend", "prediction", "proba"]
    assert result.log_rows == len(logged) and result.log_version == 0
    assert abs(len(logged) / ROWS - 0.2) < 0.04  # binomial: 3000 rows, sd 0.0073
    ids = logged.request_id.astype(int)
    assert ids.is_unique
    # same values as the output table and the input, row by row
    np.testing.assert_array_equal(logged.prediction.to_numpy(), out.loc[ids, "prediction"].to_numpy())
    np.testing.assert_array_equal(logged.spend.to_numpy(), data.loc[ids, "spend"].to_numpy())
    np.testing.assert_array_equal(logged.age.isna().to_numpy(), data.loc[ids, "age"].isna().to_numpy())
    proba = np.stack(logged.proba.to_numpy())
    np.testing.assert_array_equal(proba[:, 1], logged.prediction.to_numpy())
    np.testing.assert_allclose(proba, setup["registry"].load("churn").predict_proba(data.loc[ids]), rtol=1e-12)
    assert set(logged.source) == {"day-1"} and set(logged.model) == {"churn"}
    assert set(logged.version) == {mv.version} and set(logged.sha256) == {mv.sha256}
    assert logged.route.isna().all() and logged.arm.isna().all() and not logged.shadow.any()
    out_commit = delta.find_commit(str(tmp / "out"), result.stamp)
    assert set(logged.ts) == {pd.Timestamp(out_commit["timestamp"], unit="ms", tz="UTC")}
    assert delta.find_commit(str(tmp / "log"), result.stamp) is not None  # the log commit carries the job stamp


def test_a_logged_job_scores_on_the_row_stable_backend(setup, compiled_backends):
    """The log re-scores its sampled rows in one small batch; under ``auto`` a GLM's kernel (BLAS or
    numba, last bits apart) can differ between that batch and the job's, so a logged job compiles
    every arm for ``row_stable_backend()``; a job without a log keeps ``auto``."""
    from sparkscore import compiler

    backends = compiled_backends
    run(setup)
    assert backends and set(backends) == {compiler.row_stable_backend()}, backends
    backends.clear()
    tmp = setup["tmp"]
    score_files("churn", setup["input"], str(tmp / "plain"), registry=setup["registry"], batch_rows=700)
    assert backends and set(backends) == {"auto"}, backends


def test_sample_is_deterministic_in_job_id_and_bounded_by_bottom_k(setup):
    first = set(rows(setup["tmp"] / "log").request_id) if run(setup) else None
    run(setup, out="out2", log="log2")  # same job id, other tables: the same rows
    assert set(rows(setup["tmp"] / "log2").request_id) == first
    run(setup, out="out3", log="log3", job_id="day-2")  # another job samples other rows
    other = set(rows(setup["tmp"] / "log3").request_id)
    assert 0 < len(first & other) < 0.5 * len(first)
    bounded = run(setup, out="out4", log="log4", max_rows=50)
    kept = set(rows(setup["tmp"] / "log4").request_id)
    assert bounded.log_rows == len(kept) == 50 and kept < first
    hashes = dict(zip(sorted(first), predlog.sample_hash("day-1", sorted(first))))
    assert max(hashes[k] for k in kept) < min(hashes[k] for k in first - kept)  # the 50 smallest hashes


def test_default_request_id_is_job_and_row_ordinal(setup):
    run(setup, id_column=None, fraction=1.0, max_rows=10)
    logged = rows(setup["tmp"] / "log")
    ordinals = logged.request_id.str.split(":").str[1].astype(int)
    assert (logged.request_id.str.split(":").str[0] == "day-1").all()
    np.testing.assert_array_equal(logged.spend.to_numpy(), setup["data"].spend.to_numpy()[ordinals])


def test_rerun_of_a_committed_job_adds_nothing_to_either_table(setup):
    run(setup)
    again = run(setup)
    assert again.already_committed and again.log_rows == 0
    for table in ("out", "log"):
        assert len(deltalake.DeltaTable(str(setup["tmp"] / table)).history()) == 1


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_failure_before_the_output_commit_leaves_no_rows_in_either_table(setup, monkeypatch, fail_commit, exc):
    fail_commit("out", exc)
    with pytest.raises((JobError, KeyboardInterrupt)):
        run(setup)
    for table in ("out", "log"):
        assert not (setup["tmp"] / table / "_delta_log").exists()
    monkeypatch.undo()
    result = run(setup)  # the re-run does the whole job once
    assert result.rows == ROWS and result.log_rows == len(rows(setup["tmp"] / "log")) > 0


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_failure_between_the_commits_is_completed_by_the_rerun_exactly_once(setup, monkeypatch, fail_commit, exc):
    clean = run(setup, out="ref-out", log="ref-log")  # what one uninterrupted run logs
    fail_commit("log", exc)
    with pytest.raises(JobError, match="output is committed but its prediction log .* re-run the same command"):
        run(setup)
    assert len(rows(setup["tmp"] / "out")) == ROWS
    assert not (setup["tmp"] / "log" / "_delta_log").exists()
    monkeypatch.undo()
    completed = run(setup)
    assert completed.already_committed and completed.rows == 0 and completed.log_rows == clean.log_rows
    assert len(deltalake.DeltaTable(str(setup["tmp"] / "out")).history()) == 1  # no output rows added
    logged, ref = rows(setup["tmp"] / "log"), rows(setup["tmp"] / "ref-log")
    pd.testing.assert_frame_equal(logged.drop(columns="ts"), ref.drop(columns="ts"))
    out_commit = delta.find_commit(str(setup["tmp"] / "out"), completed.stamp)
    assert set(logged.ts) == {pd.Timestamp(out_commit["timestamp"], unit="ms", tz="UTC")}  # the first attempt's
    assert run(setup).log_rows == 0 and len(rows(setup["tmp"] / "log")) == clean.log_rows


def test_a_kill_between_the_commits_leaves_a_leftover_the_rerun_removes(setup, monkeypatch, fail_commit):
    """kill -9 after the output commit: the log's staging folder stays behind, its lock held by nobody."""
    clean = run(setup, out="ref-out", log="ref-log")
    fail_commit("log", Boom)
    with pytest.raises(JobError):
        run(setup)
    monkeypatch.undo()
    log = setup["tmp"] / "log"
    folder = log / "sparkscore-staging-dead0000"  # what a killed run leaves (lock file, no holder)
    folder.mkdir(parents=True)
    (log / f"_{folder.name}.lock").touch()
    (folder / "part-00000.parquet").write_bytes((setup["tmp"] / "input.parquet").read_bytes())
    result = run(setup)
    assert result.log_rows == clean.log_rows == len(rows(log))
    assert not folder.exists() and not (log / f"_{folder.name}.lock").exists()


def test_log_problems_fail_before_anything_is_written(setup, registry):
    tmp = setup["tmp"]
    with pytest.raises(JobError, match="is the --output table"):
        run(setup, log="out")
    with pytest.raises(JobError, match="--log-id 'nope' is not an input column"):
        run(setup, id_column="nope")
    from sparkscore import Model
    from sparkscore.ir import LinearModel, Signature

    registry.register("other", Model(LinearModel(np.array([1.0]), [0.0], "identity"), Signature.from_names(["age"])))
    score_files("other", setup["input"], str(tmp / "o"), registry=registry, log=predlog.LogSpec(str(tmp / "log")))
    with pytest.raises(JobError, match="columns differ from the table's"):
        run(setup)
    assert not (tmp / "out").exists()
    with pytest.raises(predlog.PredictionLogError, match="--log-fraction"):
        predlog.LogSpec("x", 0.0)


def test_cli_score_log_options(setup, runner):
    tmp = setup["tmp"]
    args = ["--registry", str(setup["registry"].root), "score", "--model", "churn", "--input", setup["input"],
            "--output", str(tmp / "out"), "--log", str(tmp / "log"), "--log-fraction", "0.5", "--log-max-rows", "40",
            "--log-id", "id"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "40 rows logged to" in result.output
    assert len(rows(tmp / "log")) == 40
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 rows added" in again.output and "0 rows logged" in again.output
    bad = runner.invoke(app, [*args[:-6], "--log", str(tmp / "log2"), "--log-fraction", "2"])
    assert_one_line_error(bad, 1, "--log-fraction 2.0 must be in (0, 1]")


def test_a_path_is_a_log_with_the_defaults_and_object_stores_are_refused(setup):
    tmp = setup["tmp"]
    result = score_files("churn", setup["input"], str(tmp / "out"), registry=setup["registry"], log=str(tmp / "log"))
    logged = rows(tmp / "log")
    assert result.log_rows == len(logged) and 0 < len(logged) < 0.03 * ROWS  # the 1% default
    assert predlog.input_columns(logged.columns) == ["age", "spend"]
    with pytest.raises(JobError, match="is not a local path"):
        score_files("churn", setup["input"], str(tmp / "out2"), registry=setup["registry"], log="s3://bucket/log")
    assert not (tmp / "out2").exists()


def _reference_hash(salt: str, rid: str) -> int:
    """The documented definition, byte by byte in Python ints."""
    h = 0xCBF29CE484222325
    for byte in salt.encode() + b"\0" + rid.encode():
        h = ((h ^ byte) * 0x100000001B3) % 2 ** 64
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) % 2 ** 64
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) % 2 ** 64
    return h ^ (h >> 31)


def test_sample_hash_is_the_documented_function_on_any_ids():
    ids = ["", "0", "1", "day-1:17", "ümlaut-ß", "x" * 300, "a\0b", "42"]
    got = predlog.sample_hash("job ü", ids)
    assert got.dtype == np.uint64
    assert [int(v) for v in got] == [_reference_hash("job ü", r) for r in ids]
    sliced = predlog.request_ids(pa.table({"id": np.arange(10)}), "id", "j", 0).slice(3, 4)  # offsets mid-buffer
    assert [int(v) for v in predlog.sample_hash("s", sliced)] == [_reference_hash("s", str(i)) for i in range(3, 7)]
    uniform = predlog.sample_hash("j", [f"j:{i}" for i in range(20000)]) / 2.0 ** 64
    assert abs(uniform.mean() - 0.5) < 0.01 and abs((uniform < 0.1).mean() - 0.1) < 0.01


def test_a_job_that_samples_nothing_still_records_its_log_commit(setup, monkeypatch):
    first = run(setup, fraction=1e-9)
    assert first.log_rows == 0 and rows(setup["tmp"] / "log").empty
    assert delta.find_commit(str(setup["tmp"] / "log"), first.stamp) is not None
    monkeypatch.setattr(joblog.LogCollector, "add", lambda *a: pytest.fail("a complete job re-read its input"))
    assert run(setup, fraction=1e-9).log_rows == 0


def test_engine_spark_hands_the_log_options_to_the_job():
    pytest.importorskip("pyspark")
    from sparkscore import cli

    command = cli.spark_submit_command("churn", "in", "out", "append", None, None, None, None,
                                       log=predlog.LogSpec("/logs/churn", 0.05, 500, "id"))
    job = _job_args(command)
    assert (job.log, job.log_fraction, job.log_max_rows, job.log_id) == ("/logs/churn", 0.05, 500, "id")


def _job_args(command):
    import importlib.util

    i = next(i for i, part in enumerate(command) if part.endswith("jobs/score.py"))
    spec = importlib.util.spec_from_file_location("score_job", command[i])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.parse_args(command[i + 1:])


def test_two_concurrent_reruns_complete_the_log_once(setup, monkeypatch, fail_commit):
    from concurrent.futures import ThreadPoolExecutor

    fail_commit("log", Boom)
    with pytest.raises(JobError):
        run(setup)
    monkeypatch.undo()
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: run(setup), range(2)))
    logged = rows(setup["tmp"] / "log")
    assert sorted(r.log_rows for r in results)[0] == 0 and sum(r.log_rows for r in results) == len(logged)
    assert logged.request_id.is_unique and len(deltalake.DeltaTable(str(setup["tmp"] / "log")).history()) == 1
