"""Route refs in batch jobs (``sparkscore score`` / ``jobs/score.py --model churn@ab``): each row by its
arm as PREDICT routes it, ``--with-arm``'s columns, the idempotent re-run, and shadow arms written to
the prediction log (``shadow = true``) in the same log commit, never to the output."""

from __future__ import annotations

import importlib.util
import time
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

import sparkscore as ss
from sparkscore.engines.batch import score_files
from sparkscore.engines.functions import SCORE_LOG_ENV
from sparkscore.errors import JobError
from sparkscore.monitor import predlog
from tests.engines.test_batch import churn_model

deltalake = pytest.importorskip("deltalake")

REPO = Path(__file__).resolve().parents[2]
ROWS = 1200
ROUTE = "churn@ab"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """churn v1 (prod, 70%), v2 (challenger, 30%), v3 (candidate: shadow); keys with NULLs, inputs with NaN."""
    root = tmp_path_factory.mktemp("score_route")
    reg = ss.Registry(root / "registry")
    for weight in (0.8, -0.8, 0.3):
        reg.register("churn", churn_model(weight))
    for alias, version in (("prod", 1), ("challenger", 2), ("candidate", 3)):
        reg.set_alias("churn", alias, version)
    reg.set_route("churn", "ab", {"prod": 70, "challenger": 30}, key="customer_id", shadow=["candidate"])
    rng = np.random.default_rng(5)
    frame = pd.DataFrame({"id": np.arange(ROWS), "customer_id": pd.array(np.arange(ROWS) * 7919, dtype="Int64"),
                          "age": rng.normal(size=ROWS), "spend": rng.normal(size=ROWS)})
    frame.loc[frame.index % 40 == 3, "customer_id"] = pd.NA  # NULL keys: bucket 0, the first arm
    frame.loc[5, "age"] = np.nan
    frame.to_parquet(root / "input.parquet")
    return {"root": root, "registry": reg, "input": str(root / "input.parquet"), "frame": frame}


def _read(path) -> pd.DataFrame:
    return deltalake.DeltaTable(str(path)).to_pandas().sort_values("id", ignore_index=True)


def _sql_predict(setup) -> pd.DataFrame:
    """PREDICT / PREDICT_ARM on the route over the same file: the oracle a job must agree with."""
    con = duckdb.connect()
    con.execute(f"CREATE VIEW inp AS SELECT * FROM read_parquet('{setup['input']}')")
    rows = ss.duckdb.sql(con, f"SELECT id, PREDICT('{ROUTE}', *) AS p, PREDICT_ARM('{ROUTE}', *) AS a, "
                              "PREDICT('churn/3', *) AS shadow FROM inp ORDER BY id", registry=setup["registry"]).fetchall()
    return pd.DataFrame({"id": [r[0] for r in rows], "p": [r[1] for r in rows], "arm": [r[2]["arm"] for r in rows],
                         "version": [r[2]["version"] for r in rows], "shadow": [r[3] for r in rows]})


def _check_routed(out: pd.DataFrame, setup) -> None:
    sql = _sql_predict(setup)
    route = setup["registry"].route("churn", "ab")
    keys = setup["frame"].customer_id.astype(object).where(setup["frame"].customer_id.notna(), None).tolist()
    assert out.arm.tolist() == sql.arm.tolist() == [route.arm_of_key(k) for k in keys]  # arm per row, 3 ways
    assert out.arm_version.tolist() == sql.version.tolist() == out.model_version.tolist()
    assert set(out.arm_version) == {1, 2} and set(out.route_version) == {1}
    np.testing.assert_allclose(out.prediction, sql.p, rtol=1e-12, atol=1e-12)  # the arm's value, not the shadow's
    assert not np.isclose(out.prediction, sql.shadow, rtol=0, atol=1e-12).all()


def test_embedded_job_scores_each_row_by_its_arm_and_logs_the_shadow_arm(setup, tmp_path, monkeypatch):
    reg = setup["registry"]
    spec = predlog.LogSpec(str(tmp_path / "log"), 0.25, 10_000, "id")
    result = score_files(ROUTE, setup["input"], str(tmp_path / "out"), registry=reg, job_id="j", with_arm=True,
                         log=spec, batch_rows=500)
    assert result.stamp.model == ROUTE and result.stamp.version == 1 and result.rows == ROWS
    out = _read(tmp_path / "out")
    _check_routed(out, setup)
    # re-running the job adds nothing to either table
    again = score_files(ROUTE, setup["input"], str(tmp_path / "out"), registry=reg, job_id="j", with_arm=True,
                        log=spec, batch_rows=500)
    assert again.already_committed and again.log_rows == 0
    assert len(deltalake.DeltaTable(str(tmp_path / "out")).history()) == 1
    assert len(deltalake.DeltaTable(str(tmp_path / "log")).history()) == 1
    # the log: every sampled row once per answering arm, and once more by the shadow arm
    logged = deltalake.DeltaTable(str(tmp_path / "log")).to_pandas()
    answered, shadow = logged[~logged.shadow], logged[logged.shadow]
    assert 0 < len(answered) < ROWS and sorted(shadow.request_id) == sorted(answered.request_id)
    assert set(logged.route) == {ROUTE} and set(shadow.arm) == {"candidate"} and set(shadow.version) == {3}
    by_id = out.set_index("id")
    ids = answered.request_id.astype(int)
    assert answered.arm.tolist() == by_id.loc[ids, "arm"].tolist()
    np.testing.assert_array_equal(answered.prediction, by_id.loc[ids, "prediction"])  # the output's values, bit for bit
    sql = _sql_predict(setup).set_index("id")
    np.testing.assert_allclose(shadow.prediction, sql.loc[shadow.request_id.astype(int), "shadow"], rtol=1e-12)
    assert set(answered.arm) == {"prod", "challenger"}  # rows of both arms were sampled
    # the output is the same without a log: shadow arms never reach it, and nothing scores them then;
    # each arm scores exactly the rows routed to it
    counted = tmp_path / "scored.txt"
    monkeypatch.setenv(SCORE_LOG_ENV, str(counted))
    plain = score_files(ROUTE, setup["input"], str(tmp_path / "plain"), registry=reg, job_id="j", with_arm=True)
    monkeypatch.delenv(SCORE_LOG_ENV)
    assert plain.log_rows is None
    pd.testing.assert_frame_equal(_read(tmp_path / "plain"), out)
    scored: Counter = Counter()
    for line in counted.read_text().splitlines():
        name, n = line.split()
        scored[int(name.split("_v")[1].split("_")[0])] += int(n)
    assert scored == Counter(out.arm_version.tolist())  # {1: rows of prod, 2: rows of challenger}, no 3


def test_a_moved_arm_is_another_job_and_plain_refs_refuse_with_arm(setup, tmp_path):
    reg = ss.Registry(setup["root"] / "registry")
    first = score_files(ROUTE, setup["input"], str(tmp_path / "out"), registry=reg, job_id="k")
    assert set(_read(tmp_path / "out").columns) == {"id", "customer_id", "age", "spend", "prediction", "model",
                                                      "model_version"}  # no arm columns unless asked
    reg.set_alias("churn", "challenger", 3)
    try:
        moved = score_files(ROUTE, setup["input"], str(tmp_path / "out"), registry=reg, job_id="k")
    finally:
        reg.set_alias("churn", "challenger", 2)
    assert first.stamp.sha256 != moved.stamp.sha256 and not moved.already_committed  # new pins: new rows
    assert sorted(set(_read(tmp_path / "out").model_version)) == [1, 2, 3]
    with pytest.raises(JobError, match="--with-arm needs a route ref"):
        score_files("churn@prod", setup["input"], str(tmp_path / "x"), registry=reg, with_arm=True)
    pd.DataFrame({"id": [1], "age": [0.1], "spend": [0.2]}).to_parquet(tmp_path / "nokey.parquet")
    with pytest.raises(JobError, match="picks each row's arm by column 'customer_id'"):
        score_files(ROUTE, str(tmp_path / "nokey.parquet"), str(tmp_path / "y"), registry=reg)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def _job():
    spec = importlib.util.spec_from_file_location("score_job", REPO / "jobs" / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.spark
def test_spark_job_scores_the_route_as_the_embedded_engine_and_sql(spark, setup, tmp_path):
    reg = setup["registry"]
    score_files(ROUTE, setup["input"], str(tmp_path / "ref-out"), registry=reg, job_id="s", with_arm=True,
                log=predlog.LogSpec(str(tmp_path / "ref-log"), 0.25, 10_000, "id"))
    job = _job()
    args = job.parse_args(["--model", ROUTE, "--input", setup["input"], "--output", str(tmp_path / "out"),
                           "--job-id", "s", "--registry", str(reg.root), "--with-arm", "--log", str(tmp_path / "log"),
                           "--log-fraction", "0.25", "--log-max-rows", "10000", "--log-id", "id"])
    assert job.run(spark, args, time.time()) == 0
    out = _read(tmp_path / "out")
    _check_routed(out, setup)
    pd.testing.assert_frame_equal(out, _read(tmp_path / "ref-out"))  # the same rows and values as the embedded job
    spark.read.parquet(setup["input"]).createOrReplaceTempView("route_job_input")
    rows = ss.spark.sql(spark, f"SELECT id, PREDICT_ARM('{ROUTE}', *).arm AS a FROM route_job_input ORDER BY id",
                        reg).collect()
    assert [r.a for r in rows] == out.arm.tolist()  # Spark SQL's PREDICT_ARM routes each row the same way
    logged = deltalake.DeltaTable(str(tmp_path / "log")).to_pandas()
    ref = deltalake.DeltaTable(str(tmp_path / "ref-log")).to_pandas()
    key = ["shadow", "request_id"]
    pd.testing.assert_frame_equal(logged.drop(columns="ts").sort_values(key, ignore_index=True),
                                  ref.drop(columns="ts").sort_values(key, ignore_index=True))
    assert logged.shadow.sum() == (~logged.shadow).sum() > 0
    assert job.run(spark, args, time.time()) == 0  # re-run: nothing added to either table
    assert len(deltalake.DeltaTable(str(tmp_path / "out")).history()) == 1
    assert len(deltalake.DeltaTable(str(tmp_path / "log")).history()) == 1


def test_cli_score_takes_a_route_ref(setup, tmp_path):
    from typer.testing import CliRunner

    from sparkscore.cli import app, spark_submit_command

    res = CliRunner().invoke(app, ["--registry", str(setup["registry"].root), "score", "--model", ROUTE, "--input",
                                   setup["input"], "--output", str(tmp_path / "out"), "--with-arm",
                                   "--keep-columns", "id,customer_id"])
    assert res.exit_code == 0, res.output
    assert f"with route {ROUTE} v1" in res.output
    out = _read(tmp_path / "out")
    assert list(out.columns) == ["id", "customer_id", "prediction", "model", "model_version", "arm", "arm_version",
                                 "route_version"]
    _check_routed(out, setup)
    command = spark_submit_command(ROUTE, "in", "out", "append", None, None, None, None, with_arm=True)
    assert command[-1] == "--with-arm" and command[command.index("--model") + 1] == ROUTE


def test_a_routed_log_left_behind_by_a_failure_is_completed_once_with_its_shadow_rows(setup, tmp_path, monkeypatch,
                                                                                     fail_commit):
    spec = predlog.LogSpec(str(tmp_path / "log"), 0.1, 10_000, "id")
    fail_commit("log")
    with pytest.raises(JobError, match="output is committed but its prediction log"):
        score_files(ROUTE, setup["input"], str(tmp_path / "out"), registry=setup["registry"], job_id="f", log=spec)
    monkeypatch.undo()
    done = score_files(ROUTE, setup["input"], str(tmp_path / "out"), registry=setup["registry"], job_id="f", log=spec)
    assert done.already_committed and done.log_rows > 0  # the re-run wrote the log only
    logged = deltalake.DeltaTable(str(tmp_path / "log")).to_pandas()
    assert logged.shadow.sum() == (~logged.shadow).sum() == done.log_rows // 2
    assert len(deltalake.DeltaTable(str(tmp_path / "out")).history()) == 1
    again = score_files(ROUTE, setup["input"], str(tmp_path / "out"), registry=setup["registry"], job_id="f", log=spec)
    assert again.already_committed and again.log_rows == 0
