"""``sparkscore score`` and ``sparkscore bench``: embedded Delta batch job, spark-submit hand-off, bench runner."""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import sparkscore as ss
from sparkscore import Model, cli
from sparkscore.cli import app
from sparkscore.ir import LinearModel, Signature
from tests.engines.test_batch import churn_model
from tests.test_cli import assert_one_line_error

deltalake = pytest.importorskip("deltalake")

REPO = Path(__file__).resolve().parents[1]
ROWS = 2000


@pytest.fixture
def setup(tmp_path):
    """A registry holding ``churn`` (logistic GLM on age, spend) and a parquet input of ROWS rows."""
    registry = ss.Registry(tmp_path / "registry")
    registry.register("churn", churn_model())
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id": np.arange(ROWS), "age": rng.normal(size=ROWS), "spend": rng.normal(size=ROWS)})
    frame.to_parquet(tmp_path / "input.parquet")
    return {"registry": registry, "input": tmp_path / "input.parquet", "output": tmp_path / "scores", "data": frame}


def score_args(setup, *extra: str) -> list[str]:
    return ["--registry", str(setup["registry"].root), "score", "--model", "churn",
            "--input", str(setup["input"]), "--output", str(setup["output"]), *extra]


def table_rows(path: Path) -> pd.DataFrame:
    """Rows of the Delta table after checking every referenced file is complete."""
    table = deltalake.DeltaTable(str(path))
    for row in pa.table(table.get_add_actions(flatten=True)).to_pylist():
        assert pq.read_metadata(path / row["path"]).num_rows == row["num_records"]
    return table.to_pandas()


# ---------------------------------------------------------------------- score --engine duckdb
def test_score_writes_delta_and_prints_one_summary_line(runner, setup):
    result = runner.invoke(app, score_args(setup, "--job-id", "day-1", "--keep-columns", "id", "--batch-rows", "500"))
    assert result.exit_code == 0, result.output
    summary = result.stdout.strip().splitlines()
    assert len(summary) == 1
    assert f"scored {ROWS:,} rows" in summary[0] and "rows/s" in summary[0] and "churn/1" in summary[0]
    rows = table_rows(setup["output"]).sort_values("id")
    assert list(rows.columns) == ["id", "prediction", "model", "model_version"]
    np.testing.assert_allclose(rows.prediction, setup["registry"].load("churn").predict_proba(setup["data"])[:, 1],
                               rtol=1e-12)
    info = deltalake.DeltaTable(str(setup["output"])).history()[0]
    assert (info["sparkscore.job_id"], info["sparkscore.rows"]) == ("day-1", ROWS)

    again = runner.invoke(app, score_args(setup, "--job-id", "day-1"))
    assert again.exit_code == 0 and "0 rows added" in again.stdout and "already committed" in again.stdout
    replaced = runner.invoke(app, score_args(setup, "--job-id", "day-2", "--mode", "overwrite", "--keep-columns", "id"))
    assert replaced.exit_code == 0 and "version 1" in replaced.stdout
    assert len(table_rows(setup["output"])) == ROWS


@pytest.mark.parametrize("extra, exit_code, fragment", [
    (["--mode", "upsert"], 2, "unknown mode 'upsert'"),
    (["--engine", "flink"], 2, "unknown engine 'flink'"),
    (["--batch-rows", "0"], 2, "--batch-rows"),
    (["--keep-columns", "id,zip"], 1, "'zip' is not an input column"),
    (["--model", "x'; DROP TABLE t; --"], 1, "invalid model ref"),
    (["--model", "nope"], 1, "'nope' is not in the registry"),
])
def test_score_errors_are_one_line(runner, setup, extra, exit_code, fragment):
    result = runner.invoke(app, score_args(setup, *extra))
    assert_one_line_error(result, exit_code, fragment)
    assert not setup["output"].exists()


# ---------------------------------------------------------------------- issue 12 item 9: one-line errors
@pytest.mark.parametrize("kind", ["file", "directory", "inside-a-file"])
def test_score_refuses_an_output_that_is_no_delta_table_and_writes_nothing_there(runner, setup, kind):
    output = setup["output"]
    if kind == "directory":
        output.mkdir()
        (output / "report.csv").write_text("keep me")
    else:
        output.write_text("keep me")
    target = output / "scores" if kind == "inside-a-file" else output
    result = runner.invoke(app, [*score_args(setup)[:-1], str(target)])
    assert_one_line_error(result, 1, f"--output {target}", "not a Delta table",
                          "is a file" if kind == "file" else "is inside" if kind != "directory" else "'report.csv'")
    if kind == "directory":
        assert [p.name for p in output.iterdir()] == ["report.csv"]
    else:
        assert output.read_text() == "keep me"


def test_score_accepts_an_empty_output_directory(runner, setup):
    setup["output"].mkdir()
    assert runner.invoke(app, score_args(setup)).exit_code == 0
    assert len(table_rows(setup["output"])) == ROWS


@pytest.mark.parametrize("pattern, fragment", [
    ("nothing/*.parquet", "no files match the pattern; check the path (quote the pattern"),
    ("input-*.parquet", "no files match the pattern"),
    ("missing.parquet", "does not exist"),
])
def test_score_refuses_an_input_that_matches_no_file_as_sql_does(runner, setup, pattern, fragment):
    location = str(setup["input"].parent / pattern)
    args = score_args(setup)
    args[args.index("--input") + 1] = location
    assert_one_line_error(runner.invoke(app, args), 1, f"--input {location}", fragment)
    queried = runner.invoke(app, ["sql", "SELECT * FROM t", "--table", f"t={location}"])
    assert_one_line_error(queried, 1, f"--table t={location}", fragment)
    assert not setup["output"].exists()


def test_score_keeps_duckdbs_own_progress_bar_off_stdout(runner, setup, monkeypatch, capfd):
    """As if Python were started interactively (DuckDB then enables its bar), the bar due at once.

    The bar is made due from the connection's second statement on, so the run's first statement
    (which should switch printing off) is not itself drawn.
    """
    import duckdb

    connect = duckdb.connect

    class Interactive:
        def __init__(self, con):
            self._con, self._calls = con, 0
            con.execute("SET enable_progress_bar = true")

        def execute(self, *args, **kwargs):
            result = self._con.execute(*args, **kwargs)
            self._calls += 1
            if self._calls == 1:
                self._con.execute("SET progress_bar_time = 0")
            return result

        def __getattr__(self, name):
            return getattr(self._con, name)

    monkeypatch.setattr(duckdb, "connect", lambda *args, **kwargs: Interactive(connect(*args, **kwargs)))
    result = runner.invoke(app, score_args(setup, "--batch-rows", "500"))
    assert result.exit_code == 0, result.output
    assert capfd.readouterr().out == ""  # DuckDB writes its bar to file descriptor 1, past CliRunner


def test_a_failed_commit_says_the_table_is_unchanged_once(runner, setup, monkeypatch):
    from deltalake.exceptions import DeltaError

    from sparkscore.engines.batch import score_files

    score_files("churn", str(setup["input"]), str(setup["output"]), registry=setup["registry"], job_id="base")

    def conflict(*args, **kwargs):
        raise DeltaError("commit conflict")

    monkeypatch.setattr(deltalake.DeltaTable, "create_write_transaction", conflict)
    line = assert_error_ends_the_output(runner.invoke(app, score_args(setup)), 1, "Delta commit", "commit conflict",
                                        f"the table {setup['output']} is unchanged at version 0")
    assert line.count("unchanged") == 1 and "re-run" in line
    assert _version(setup) == 0 and _unreferenced_staging(setup["output"]) == set()


def test_score_names_the_missing_model_column(runner, setup):
    setup["data"].drop(columns="spend").to_parquet(setup["input"])
    assert_one_line_error(runner.invoke(app, score_args(setup)), 1, "churn", "'spend'")


def test_score_requires_model_input_and_output(runner, setup):
    assert_one_line_error(runner.invoke(app, ["score", "--model", "churn"]), 2, "Missing option", "--help")


# ---------------------------------------------------------------------- issue 12: integrity
def assert_error_ends_the_output(result, exit_code: int, *fragments: str) -> str:
    """Progress lines (job id, steps) may come first on stderr; the error is the one last line."""
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: ") and sum(line.startswith("error") for line in lines) == 1, \
        result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[-1]
    return lines[-1]


def _version(setup) -> int:
    return deltalake.DeltaTable(str(setup["output"])).version()


@pytest.mark.parametrize("keep, fragments", [
    ("id,age", ["added age", "--schema merge"]),
    ("age", ["added age", "missing id"]),
    ("id,age,spend", ["added age, spend"]),
])
def test_append_with_other_columns_fails_before_writing_anything(runner, setup, keep, fragments):
    assert runner.invoke(app, score_args(setup, "--keep-columns", "id")).exit_code == 0
    result = runner.invoke(app, score_args(setup, "--keep-columns", keep))
    assert_error_ends_the_output(result, 1, str(setup["output"]), *fragments)
    assert _version(setup) == 0 and _staged_dirs(setup["output"]) == _staged_dirs(setup["output"]) - \
        _unreferenced_staging(setup["output"])
    assert list(table_rows(setup["output"]).columns) == ["id", "prediction", "model", "model_version"]


def test_schema_merge_evolves_the_table_in_one_commit(runner, setup):
    assert runner.invoke(app, score_args(setup, "--keep-columns", "id")).exit_code == 0
    merged = runner.invoke(app, score_args(setup, "--keep-columns", "id,age", "--schema", "merge"))
    assert merged.exit_code == 0, merged.output
    table = deltalake.DeltaTable(str(setup["output"]))
    assert table.version() == 1 and "age" in [f.name for f in table.schema().fields]
    rows = table_rows(setup["output"])
    assert len(rows) == 2 * ROWS and rows.age.isna().sum() == ROWS  # the first commit's rows have no age
    np.testing.assert_array_equal(rows.dropna(subset=["age"]).sort_values("id").age, setup["data"].age)
    assert table.history()[0]["sparkscore.rows"] == ROWS
    assert _unreferenced_staging(setup["output"]) == set()


def test_a_type_change_is_refused_even_with_schema_merge(runner, setup):
    assert runner.invoke(app, score_args(setup, "--keep-columns", "id")).exit_code == 0
    setup["data"].assign(id=setup["data"].id.astype(float)).to_parquet(setup["input"])
    for extra in ((), ("--schema", "merge")):
        result = runner.invoke(app, score_args(setup, "--keep-columns", "id", *extra))
        assert_error_ends_the_output(result, 1, "type-changed id: long -> double")
    assert _version(setup) == 0


def test_rows_name_the_model_version_that_scored_them(runner, setup):
    assert runner.invoke(app, score_args(setup, "--keep-columns", "id")).exit_code == 0
    setup["registry"].register("churn", churn_model(weight=0.1))
    assert runner.invoke(app, score_args(setup, "--keep-columns", "id", "--model", "churn/2")).exit_code == 0
    rows = table_rows(setup["output"])
    assert rows.groupby(["model", "model_version"]).size().to_dict() == {("churn", 1): ROWS, ("churn", 2): ROWS}
    for version, part in rows.groupby("model_version"):
        expected = setup["registry"].load(f"churn/{version}").predict_proba(setup["data"])[:, 1]
        np.testing.assert_allclose(part.sort_values("id").prediction, expected, rtol=1e-12)


def test_appends_follow_a_table_without_model_columns(runner, setup):
    assert runner.invoke(app, score_args(setup, "--keep-columns", "id", "--no-model-columns")).exit_code == 0
    assert runner.invoke(app, score_args(setup, "--keep-columns", "id", "--job-id", "b")).exit_code == 0
    assert list(table_rows(setup["output"]).columns) == ["id", "prediction"]
    asked = runner.invoke(app, score_args(setup, "--keep-columns", "id", "--job-id", "c", "--model-columns"))
    assert_error_ends_the_output(asked, 1, "added model, model_version", "--schema merge")
    assert _version(setup) == 1


def test_a_kept_model_column_is_refused_while_rows_record_the_model(runner, setup):
    setup["data"].assign(model="sedan").to_parquet(setup["input"])
    assert_error_ends_the_output(runner.invoke(app, score_args(setup)), 1, "'model'", "--no-model-columns")
    assert not setup["output"].exists()
    assert runner.invoke(app, score_args(setup, "--no-model-columns")).exit_code == 0


def _job_id(result) -> str:
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("job ")]
    return line.split()[1]


def test_rerunning_the_same_command_adds_nothing_a_changed_input_does(runner, setup):
    first = runner.invoke(app, score_args(setup, "--keep-columns", "id"))
    assert first.exit_code == 0, first.output
    job = _job_id(first)
    assert job.startswith("auto-") and "derived from the input" in first.stderr and f"[job {job}, append]" in first.stdout
    again = runner.invoke(app, score_args(setup, "--keep-columns", "id"))
    assert again.exit_code == 0 and "0 rows added" in again.stdout and _job_id(again) == job
    assert len(table_rows(setup["output"])) == ROWS
    replaced = runner.invoke(app, score_args(setup, "--keep-columns", "id", "--mode", "overwrite"))
    assert _job_id(replaced) != job  # another option: another job
    os.utime(setup["input"], ns=(time.time_ns(), time.time_ns() + 10**9))  # the file was rewritten
    changed = runner.invoke(app, score_args(setup, "--keep-columns", "id"))
    assert changed.exit_code == 0 and _job_id(changed) not in (job, _job_id(replaced))
    assert len(table_rows(setup["output"])) == 2 * ROWS


@pytest.fixture
def failing_scorer(monkeypatch):
    """Makes the third scored batch raise ``error[0]`` (an exception type)."""
    from sparkscore.engines.functions import ScoringFunction

    score, calls, error = ScoringFunction.score, [], [RuntimeError]

    def failing(self, batch):
        calls.append(1)
        if len(calls) == 3:
            raise error[0]("disk full")
        return score(self, batch)

    monkeypatch.setattr(ScoringFunction, "score", failing)
    return error


@pytest.mark.parametrize("existing", [True, False], ids=["append", "first-run"])
@pytest.mark.parametrize("interrupt", [False, True], ids=["exception", "ctrl-c"])
def test_a_failed_or_interrupted_run_removes_its_staging_files_and_says_so(runner, setup, failing_scorer,
                                                                           existing, interrupt):
    from sparkscore.engines.batch import score_files

    if existing:
        score_files("churn", str(setup["input"]), str(setup["output"]), registry=setup["registry"], job_id="base")
    failing_scorer[0] = KeyboardInterrupt if interrupt else RuntimeError
    result = runner.invoke(app, score_args(setup, "--batch-rows", "500"))
    state = f"the table {setup['output']} is unchanged at version 0" if existing else \
        f"no table was created at {setup['output']}"
    assert_error_ends_the_output(result, 130 if interrupt else 1, "staging files removed", state,
                          *([] if interrupt else ["RuntimeError: disk full"]))
    if existing:
        assert _version(setup) == 0 and len(table_rows(setup["output"])) == ROWS
        assert _unreferenced_staging(setup["output"]) == set()
        assert not list(setup["output"].glob("_sparkscore-staging-*"))
    else:
        assert not setup["output"].exists()  # no non-Delta directory left behind


def test_ctrl_c_of_a_real_run_removes_its_staging_files(setup):
    from sparkscore.engines.batch import score_files

    output = setup["output"]
    score_files("churn", str(setup["input"]), str(output), registry=setup["registry"], job_id="base")
    before = _staged_dirs(output)
    proc = _start_cli(setup, "interrupted")
    _wait_for_new_staged_files(output, before, 5, proc)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == f"error: interrupted: staging files removed, the table {output} is " \
        "unchanged at version 0"
    assert _staged_dirs(output) == before and _version(setup) == 0


def test_score_shows_what_it_does_with_rate_and_eta(runner, setup, monkeypatch):
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # render the live bar into the captured stream
    monkeypatch.setenv("TTY_INTERACTIVE", "1")
    result = runner.invoke(app, score_args(setup, "--batch-rows", "500"))
    assert result.exit_code == 0, result.output
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stderr)
    assert "compiling churn/1" in shown and "committing" in shown
    assert re.search(r"\d+/2000 rows [\d,]+ rows/s \S+ ETA \d:\d\d:\d\d", shown), shown


def test_score_logs_each_step_when_not_on_a_terminal(runner, setup):
    result = runner.invoke(app, score_args(setup))
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.stderr.splitlines()] == ["job", "compiling", "scoring...", "committing"]


def test_vacuum_lists_with_dry_run_and_refuses_a_path_that_is_no_delta_table(runner, setup, tmp_path):
    from sparkscore.engines.batch import score_files

    score_files("churn", str(setup["input"]), str(setup["output"]), registry=setup["registry"], job_id="base")
    leftover = setup["output"] / "sparkscore-staging-0123"  # a pre-lock version's leftover: no owner lock
    leftover.mkdir()
    dry = runner.invoke(app, ["vacuum", str(setup["output"]), "--dry-run"])
    assert dry.exit_code == 0 and "would remove 1" in dry.stdout and leftover.is_dir()
    assert runner.invoke(app, ["vacuum", str(setup["output"])]).exit_code == 0 and not leftover.exists()
    assert len(table_rows(setup["output"])) == ROWS
    assert_one_line_error(runner.invoke(app, ["vacuum", str(tmp_path)]), 1, "not a local Delta table")


# ---------------------------------------------------------------------- issue 12 item 8: text is not a number
def test_score_and_sql_refuse_a_text_column_with_a_valid_cast_fix(runner, setup, tmp_path):
    registry = setup["registry"]
    registry.register("radius", Model(LinearModel(np.array([0.5, 1.0]), [0.0]),
                                      Signature.from_names(["mean radius", "spend"])))
    frame = pd.DataFrame({"mean radius": ["1.5", "2.25"], "spend": [1.0, 2.0]})
    frame.to_parquet(setup["input"])
    scored = runner.invoke(app, score_args(setup, "--model", "radius"))
    assert_one_line_error(scored, 1, "radius/1", "'mean radius'", "VARCHAR", 'CAST("mean radius" AS DOUBLE)')
    assert not setup["output"].exists()
    queried = runner.invoke(app, ["--registry", str(registry.root), "sql", "SELECT PREDICT('radius', *) AS p FROM t",
                                  "--table", f"t={setup['input']}"])
    assert_one_line_error(queried, 1, "radius/1", "'mean radius'", "VARCHAR", '"mean radius" AS DOUBLE)')
    for i, result in enumerate((scored, queried)):  # each suggested fix is valid SQL that scores the column
        fix = re.search(r"e\.g\. (CAST\(.*\))$", result.stderr.strip()).group(1)
        fixed = f"SELECT PREDICT('radius', {fix}, spend) AS p FROM t"
        out = tmp_path / f"p{i}.parquet"
        ok = runner.invoke(app, ["--registry", str(registry.root), "sql", fixed, "--table", f"t={setup['input']}",
                                 "--output", str(out)])
        assert ok.exit_code == 0, ok.output
        np.testing.assert_allclose(pd.read_parquet(out).p, [0.5 * 1.5 + 1.0, 0.5 * 2.25 + 2.0])


def _start_cli(setup, job_id: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    command = [sys.executable, "-m", "sparkscore.cli", *score_args(setup, "--job-id", job_id, "--batch-rows", "40")]
    return subprocess.Popen(command, env=env, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _staged_dirs(output: Path) -> set[str]:
    return {p.name for p in output.glob("sparkscore-staging-*")}


def _unreferenced_staging(output: Path) -> set[str]:
    """Staging folders that no file of the table lives in: leftovers."""
    paths = pa.table(deltalake.DeltaTable(str(output)).get_add_actions(flatten=True)).column("path").to_pylist()
    return _staged_dirs(output) - {p.split("/", 1)[0] for p in paths}


def _wait_for_new_staged_files(output: Path, before: set[str], count: int, proc: subprocess.Popen) -> None:
    def staged() -> int:
        return sum(len(list((output / d).glob("*.parquet"))) for d in _staged_dirs(output) - before)

    while staged() < count and proc.poll() is None:
        time.sleep(0.002)


def test_kill_9_mid_run_leaves_the_table_unchanged_and_its_leftovers_are_removed(runner, setup):
    """The CLI in a subprocess, killed with SIGKILL after a random number of staged batch files (50 in all).

    Each kill leaves a staging folder no commit references (the table stays at version 0); the next
    run on the table removes it, and so does ``sparkscore vacuum``.  Start-up (imports) dominates a
    run, so the table is made and the job finished in-process.
    """
    from sparkscore.engines.batch import score_files

    output = setup["output"]
    job = ("churn", str(setup["input"]), str(output))
    score_files(*job, registry=setup["registry"], job_id="base")
    rng = random.Random(0)
    for _ in range(3):
        before = _staged_dirs(output)
        proc = _start_cli(setup, "killed")
        _wait_for_new_staged_files(output, before, rng.randint(1, 45), proc)
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill: {err[-2000:]}"
        assert len(_unreferenced_staging(output)) == 1  # this kill's folder; the previous one's was removed
        assert deltalake.DeltaTable(str(output)).version() == 0
        assert len(table_rows(output)) == ROWS
    vacuumed = runner.invoke(app, ["vacuum", str(output)])
    assert vacuumed.exit_code == 0, vacuumed.output
    assert "removed 1 leftover staging folder" in vacuumed.stdout
    assert _unreferenced_staging(output) == set() and not list(output.glob("_sparkscore-staging-*"))
    assert len(table_rows(output)) == ROWS
    finished = score_files(*job, registry=setup["registry"], job_id="killed")
    assert finished.table_version == 1 and len(table_rows(output)) == 2 * ROWS
    assert _unreferenced_staging(output) == set()


# ---------------------------------------------------------------------- score --engine spark
@pytest.fixture
def fake_run(monkeypatch):
    """Replaces subprocess.run in the CLI: records each command and its environment, returns ``rc``."""
    calls = []

    def run(command, env=None, cwd=None, check=False):
        calls.append({"command": command, "env": env, "cwd": cwd})
        return subprocess.CompletedProcess(command, fake_run_rc[0])

    fake_run_rc = [0]
    monkeypatch.setattr(cli.subprocess, "run", run)
    return calls, fake_run_rc


def test_spark_engine_hands_the_same_arguments_to_spark_submit(runner, setup, fake_run):
    pyspark = pytest.importorskip("pyspark")
    calls, _ = fake_run
    result = runner.invoke(app, score_args(setup, "--engine", "spark", "--mode", "overwrite", "--job-id", "j7",
                                           "--keep-columns", "id", "--batch-rows", "5000"))
    assert result.exit_code == 0, result.output
    (call,) = calls
    command = call["command"]
    assert command[0] == str(Path(pyspark.__file__).parent / "bin" / "spark-submit")
    assert command[1:3] == ["--properties-file", str(REPO / "conf" / "spark-defaults.conf")]
    assert command[3] == str(REPO / "jobs" / "score.py")
    assert command[4:] == ["--model", "churn", "--input", str(setup["input"]), "--output", str(setup["output"]),
                           "--mode", "overwrite", "--job-id", "j7", "--keep-columns", "id", "--batch-rows", "5000",
                           "--registry", str(setup["registry"].root)]
    assert call["env"]["PYSPARK_PYTHON"] == sys.executable
    assert str(REPO) in call["env"]["PYTHONPATH"].split(os.pathsep)
    from jobs.score import parse_args  # the job accepts exactly what the CLI passes

    parsed = parse_args(command[4:])
    assert (parsed.mode, parsed.job_id, parsed.keep_columns, parsed.batch_rows) == ("overwrite", "j7", "id", 5000)
    for extra, expected in ((["--schema", "merge", "--no-model-columns"], ("merge", False)),
                            (["--model-columns"], ("strict", True)), ([], ("strict", None))):
        calls.clear()
        assert runner.invoke(app, score_args(setup, "--engine", "spark", *extra)).exit_code == 0
        parsed = parse_args(calls[0]["command"][4:])
        assert (parsed.schema, parsed.model_columns, parsed.job_id) == (*expected, None)  # the job derives the id


def test_spark_engine_failure_ends_with_one_error_line(runner, setup, fake_run):
    """spark-submit's own output comes first on stderr; the CLI adds one error line, no traceback."""
    pytest.importorskip("pyspark")
    _, rc = fake_run
    rc[0] = 2
    result = runner.invoke(app, score_args(setup, "--engine", "spark"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.splitlines()[-1] == "error: spark-submit exited with status 2; its output above says why"


# ---------------------------------------------------------------------- bench
def test_bench_dry_run_prints_the_commands_without_running_them(runner, fake_run):
    calls, _ = fake_run
    result = runner.invoke(app, ["bench", "--suite", "optimizer", "--quick", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"{sys.executable} {REPO / 'bench' / 'bench_optimizer.py'} --quick"]
    everything = runner.invoke(app, ["bench", "--dry-run"])
    scripts = [line.split()[1] for line in everything.stdout.splitlines()]
    assert scripts == [str(REPO / "bench" / spec.script) for spec in cli.BENCH_SUITES.values()]
    assert all(Path(script).is_file() for script in scripts)
    assert calls == []


def test_bench_runs_each_script_and_says_where_results_went(runner, fake_run):
    calls, rc = fake_run
    result = runner.invoke(app, ["bench", "--suite", "kernels", "--quick"])
    assert result.exit_code == 0, result.output
    assert [c["command"][1:] for c in calls] == [[str(REPO / "bench" / "bench_kernels.py"), "--quick"]]
    assert calls[0]["cwd"] == REPO and "bench/results/kernels_quick" in result.stdout
    rc[0] = 3
    failed = runner.invoke(app, ["bench", "--suite", "spark"])
    assert failed.exit_code == 1 and "Traceback" not in failed.output
    assert failed.stderr.splitlines()[-1].startswith("error: bench suite spark (bench_spark.py) exited with status 3")
    assert_one_line_error(runner.invoke(app, ["bench", "--suite", "gpu"]), 2, "unknown suite 'gpu'")
