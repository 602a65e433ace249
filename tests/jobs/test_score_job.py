"""jobs/score.py under spark-submit (local[2]): idempotent, atomic under kill -9, concurrent, recorded."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sparkscore import Model
from sparkscore.ir import LinearModel, Signature

pytestmark = pytest.mark.spark
pyspark = pytest.importorskip("pyspark")
deltalake = pytest.importorskip("deltalake")

REPO = Path(__file__).resolve().parents[2]
SPARK_SUBMIT = Path(pyspark.__file__).parent / "bin" / "spark-submit"
ROWS = 2000
KILL_ATTEMPTS = 10


def _env() -> dict:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
            "PYTHONPATH": path}


def _command(setup, output: Path, job_id: str | None, mode: str = "append", *extra: str) -> list[str]:
    return [str(SPARK_SUBMIT), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
            "--conf", "spark.sql.shuffle.partitions=2", "--driver-java-options", "-XX:TieredStopAtLevel=1",
            str(REPO / "jobs" / "score.py"), "--model", "churn", "--input", str(setup["input"]),
            "--output", str(output), "--mode", mode, *(["--job-id", job_id] if job_id else []),
            "--keep-columns", "id", "--batch-rows", "500", "--registry", str(setup["registry"].root), *extra]


def _start(setup, output: Path, job_id: str | None, mode: str = "append", *extra: str) -> subprocess.Popen:
    return subprocess.Popen(_command(setup, output, job_id, mode, *extra), env=_env(), cwd=REPO,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(setup, output: Path, job_id: str | None, mode: str = "append", *extra: str, rc: int = 0) -> tuple[str, str]:
    proc = _start(setup, output, job_id, mode, *extra)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == rc, err[-3000:]
    return out, err


def _table(path: Path):
    return deltalake.DeltaTable(str(path))


def _check_readable(path: Path) -> pd.DataFrame:
    """Every referenced file exists and is complete; returns the table's rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = _table(path)
    for row in pa.table(table.get_add_actions(flatten=True)).to_pylist():
        assert pq.read_metadata(path / row["path"]).num_rows == row["num_records"]
    return table.to_pandas()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A registered GLM, one parquet input, and a Delta table made by one full job run."""
    import sparkscore as ss

    root = tmp_path_factory.mktemp("score_job")
    registry = ss.Registry(root / "registry")
    model = Model(LinearModel(np.array([0.8, -0.5]), [0.2], "logistic"), Signature.from_names(["age", "spend"]),
                  task="classification", classes=(0, 1))
    mv = registry.register("churn", model)
    rng = np.random.default_rng(0)
    data = pd.DataFrame({"id": np.arange(ROWS), "age": rng.normal(size=ROWS), "spend": rng.normal(size=ROWS)})
    data.to_parquet(root / "input.parquet")
    setup = {"registry": registry, "input": root / "input.parquet", "mv": mv, "data": data, "root": root}
    started = time.time()
    out, _ = _run(setup, root / "base", "base-job")
    setup["seconds"] = time.time() - started
    setup["stdout"] = out
    return setup


def _copy_base(setup, tmp_path) -> Path:
    target = tmp_path / "table"
    shutil.copytree(setup["root"] / "base", target)
    return target


def test_help_documents_every_option():
    out = subprocess.run([sys.executable, str(REPO / "jobs" / "score.py"), "--help"], env=_env(),
                         capture_output=True, text=True, check=True).stdout
    for option in ("--model", "--input", "--output", "--mode", "--job-id", "--keep-columns", "--batch-rows",
                   "--registry"):
        assert option in out


def test_job_scores_and_records_the_model_in_the_commit(setup):
    table = _table(setup["root"] / "base")
    rows = _check_readable(setup["root"] / "base").sort_values("id")
    assert list(rows.columns) == ["id", "prediction", "model", "model_version"]
    assert set(rows.model) == {"churn"} and set(rows.model_version) == {setup["mv"].version}
    model = setup["registry"].load("churn")
    np.testing.assert_allclose(rows.prediction, model.predict_proba(setup["data"])[:, 1], rtol=1e-12)
    info = table.history()[0]
    mv = setup["mv"]
    assert (info["sparkscore.job_id"], info["sparkscore.model"], info["sparkscore.version"],
            info["sparkscore.sha256"], info["sparkscore.rows"]) == ("base-job", "churn", mv.version, mv.sha256, ROWS)
    assert info["sparkscore.seconds"] > 0
    assert f"{ROWS} rows" in setup["stdout"] and "rows/s" in setup["stdout"] and "churn/1" in setup["stdout"]


def test_rerunning_a_committed_job_id_adds_nothing(setup, tmp_path):
    target = _copy_base(setup, tmp_path)
    out, _ = _run(setup, target, "base-job")
    assert "already committed" in out
    assert _table(target).version() == 0 and len(_check_readable(target)) == ROWS


def test_concurrent_appends_both_land_and_overwrite_replaces(setup, tmp_path):
    target = _copy_base(setup, tmp_path)
    jobs = [_start(setup, target, f"concurrent-{i}") for i in range(2)]
    for job in jobs:
        _, err = job.communicate(timeout=300)
        assert job.returncode == 0, err[-3000:]
    assert len(_check_readable(target)) == 3 * ROWS
    assert {h.get("sparkscore.job_id") for h in _table(target).history()} >= {"concurrent-0", "concurrent-1"}
    _run(setup, target, "replace", mode="overwrite")
    rows = _check_readable(target)
    assert len(rows) == ROWS and rows.id.is_unique


def test_kill_9_at_any_moment_leaves_the_table_at_its_previous_version(setup, tmp_path):
    target = _copy_base(setup, tmp_path)
    rng = random.Random(0)
    committed = False
    for attempt in range(KILL_ATTEMPTS):  # kill moments spread from JVM start-up to the commit
        before = _table(target).version()
        job = _start(setup, target, "killed-job")
        time.sleep(setup["seconds"] * (attempt + rng.random()) / KILL_ATTEMPTS)
        os.killpg(job.pid, signal.SIGKILL)
        job.communicate()
        after = _table(target).version()
        rows = _check_readable(target)
        if after == before:
            assert len(rows) == ROWS * (2 if committed else 1)
        else:  # the job finished its single commit before the kill
            assert (after, committed) == (before + 1, False)
            committed = True
            assert len(rows) == 2 * ROWS
    _run(setup, target, "killed-job")  # completes the job, or finds it committed: exactly once either way
    assert len(_check_readable(target)) == 2 * ROWS
    referenced = {p.split("/", 1)[0] for p in _table(target).get_add_actions(flatten=True).column("path").to_pylist()}
    assert {p.name for p in target.glob("sparkscore-staging-*")} <= referenced  # the killed runs' leftovers are gone
    assert not list(target.glob("_sparkscore-staging-*"))


def _error_line(out: str, err: str) -> str:
    """The job's one error line (spark-submit merges the driver's stderr into stdout; Spark logs follow it)."""
    (line,) = [line for line in (out + err).splitlines() if line.startswith("sparkscore: error: ")]
    return line


def _job_id(out: str, err: str) -> str:
    (line,) = [line for line in (out + err).splitlines() if "] job " in line and "derived" in line]
    return line.split("] job ")[1].split()[0]


def test_rerunning_without_job_id_adds_nothing_and_other_columns_fail_before_writing(setup, tmp_path):
    """Issue 12 items 1 and 3 through spark-submit: a derived job id, and the schema rule (strict, then merge)."""
    target = _copy_base(setup, tmp_path)
    job = _job_id(*_run(setup, target, None))
    assert job.startswith("auto-") and _table(target).version() == 1
    out, err = _run(setup, target, None)
    assert "already committed" in out and _job_id(out, err) == job and _table(target).version() == 1
    staged = set(target.glob("sparkscore-staging-*"))
    last = _error_line(*_run(setup, target, None, "append", "--keep-columns", "id,age", rc=2))
    assert "added age" in last and "--schema merge" in last
    assert _table(target).version() == 1 and set(target.glob("sparkscore-staging-*")) == staged
    _run(setup, target, None, "append", "--keep-columns", "id,age", "--schema", "merge")
    rows = _check_readable(target)
    assert _table(target).version() == 2 and len(rows) == 3 * ROWS and rows.age.notna().sum() == ROWS


def test_a_text_column_is_refused_like_sql_refuses_it(setup, tmp_path):
    text_input = tmp_path / "text.parquet"
    setup["data"].assign(age=setup["data"].age.astype(str)).to_parquet(text_input)
    last = _error_line(*_run({**setup, "input": text_input}, tmp_path / "out", None, rc=2))
    assert "churn/1" in last and "'age'" in last and "string" in last and "CAST(`age` AS DOUBLE)" in last
    assert not (tmp_path / "out").exists()


def test_an_existing_file_as_output_is_refused_like_score_refuses_it(setup, tmp_path):
    target = tmp_path / "out.parquet"
    target.write_text("keep me")
    last = _error_line(*_run(setup, target, None, rc=2))
    assert f"--output {target} is a file, not a Delta table directory" in last and target.read_text() == "keep me"
