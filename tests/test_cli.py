"""The ``sparkscore`` CLI through typer's CliRunner (plus one real subprocess smoke test)."""

from __future__ import annotations

import json
import re
import pickle
from importlib.util import find_spec
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sparkscore as ss
from sparkscore.cli import app
from sparkscore.errors import InvalidModelNameError
from tests.registry.models import tiny_model

needs_duckdb_engine = pytest.mark.skipif(find_spec("sparkscore.engines.duckdb") is None,
                                         reason="sparkscore.engines.duckdb (DuckDB engine) is not written yet")

X_TRAIN = np.random.default_rng(0).normal(size=(300, 3))
Y_TRAIN = (X_TRAIN[:, 0] + 0.5 * X_TRAIN[:, 1] > 0).astype(int)
X_CHECK = X_TRAIN[:20]


@pytest.fixture
def reg_path(tmp_path) -> Path:
    return tmp_path / "registry"


def invoke(runner, reg_path, *args):
    return runner.invoke(app, ["--registry", str(reg_path), *map(str, args)])


def assert_one_line_error(result, exit_code: int, *fragments: str):
    assert result.exit_code == exit_code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]


# ---------------------------------------------------------------------- model files
@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """(path, native predict_proba/predict of X_CHECK) per format."""
    folder = tmp_path_factory.mktemp("model-files")
    files = {}
    lightgbm = pytest.importorskip("lightgbm")
    booster = lightgbm.train({"objective": "binary", "num_leaves": 7, "verbose": -1, "deterministic": True},
                             lightgbm.Dataset(X_TRAIN, Y_TRAIN), num_boost_round=5)
    booster.save_model(folder / "lgbm.txt")
    (folder / "lgbm_dump.json").write_text(json.dumps(booster.dump_model()))
    files["lightgbm-text"] = (folder / "lgbm.txt", booster.predict(X_CHECK))
    files["lightgbm-json"] = (folder / "lgbm_dump.json", booster.predict(X_CHECK))
    xgboost = pytest.importorskip("xgboost")
    xgb = xgboost.train({"objective": "binary:logistic", "max_depth": 3}, xgboost.DMatrix(X_TRAIN, Y_TRAIN), 5)
    for suffix in ("json", "ubj"):
        xgb.save_model(folder / f"xgb.{suffix}")
        files[f"xgboost-{suffix}"] = (folder / f"xgb.{suffix}", xgb.predict(xgboost.DMatrix(X_CHECK)))
    model = tiny_model(names=("a", "b", "c"))
    model.save(folder / "ss_model")
    files["sparkscore"] = (folder / "ss_model", model.predict(X_CHECK))
    from sklearn.linear_model import LogisticRegression

    logit = LogisticRegression().fit(X_TRAIN, Y_TRAIN)
    (folder / "logit.pkl").write_bytes(pickle.dumps(logit))
    files["pickle"] = (folder / "logit.pkl", logit.predict_proba(X_CHECK)[:, 1])
    joblib = pytest.importorskip("joblib")
    joblib.dump(logit, folder / "logit.joblib")
    files["joblib"] = (folder / "logit.joblib", logit.predict_proba(X_CHECK)[:, 1])
    return files


def _registered_scores(reg_path, ref):
    model = ss.Registry(reg_path).load(ref)
    return model.predict_proba(X_CHECK)[:, 1] if model.is_classifier else model.predict(X_CHECK)


@pytest.mark.parametrize("kind", ["lightgbm-text", "lightgbm-json", "xgboost-json", "xgboost-ubj", "sparkscore"])
def test_register_native_files_with_auto_format(runner, reg_path, model_files, kind):
    pytest.importorskip(f"sparkscore.importers.{kind.split('-')[0]}" if kind != "sparkscore" else "sparkscore.ir")
    path, expected = model_files[kind]
    result = invoke(runner, reg_path, "register", "m", path, "--alias", "prod", "--lineage", "code_version=abc")
    assert result.exit_code == 0, result.output
    assert "registered m/1" in result.stdout and "m@prod" in result.stdout
    np.testing.assert_allclose(_registered_scores(reg_path, "m@prod"), expected, rtol=1e-6, atol=1e-6)
    lineage = ss.Registry(reg_path).describe("m/1")["lineage"]
    assert lineage["code_version"] == "abc" and lineage["source_file"] == str(path)


def test_register_with_explicit_format_and_feature_names(runner, reg_path, model_files):
    pytest.importorskip("sparkscore.importers.lightgbm")
    path, _ = model_files["lightgbm-text"]
    result = invoke(runner, reg_path, "register", "m", path, "--format", "lightgbm", "--feature-names", "x, y ,z")
    assert result.exit_code == 0, result.output
    assert ss.Registry(reg_path).load("m").signature.names == ("x", "y", "z")


@pytest.mark.parametrize("kind", ["pickle", "joblib"])
def test_pickle_needs_explicit_opt_in(runner, reg_path, model_files, kind):
    path, expected = model_files[kind]
    refused = invoke(runner, reg_path, "register", "m", path)
    assert_one_line_error(refused, 1, "--allow-pickle", "arbitrary code")
    assert ss.Registry(reg_path).models() == []
    pytest.importorskip("sparkscore.importers.sklearn")
    allowed = invoke(runner, reg_path, "register", "m", path, "--allow-pickle")
    assert allowed.exit_code == 0, allowed.output
    assert allowed.stderr.startswith("warning: ") and "trust" in allowed.stderr
    np.testing.assert_allclose(_registered_scores(reg_path, "m"), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.spark
@pytest.mark.skipif(find_spec("sparkscore.importers.pyspark_ml") is None,
                    reason="the pyspark.ml importer is not written yet")
def test_register_a_saved_pyspark_model_directory(runner, reg_path, spark, tmp_path):
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.linalg import Vectors

    frame = spark.createDataFrame([(Vectors.dense(row), float(y)) for row, y in zip(X_TRAIN[:60], Y_TRAIN[:60])],
                                  ["features", "label"])
    fitted = LogisticRegression(maxIter=5).fit(frame)
    fitted.write().overwrite().save(str(tmp_path / "spark_lr"))
    result = invoke(runner, reg_path, "register", "lr", tmp_path / "spark_lr")
    assert result.exit_code == 0, result.output
    expected = 1.0 / (1.0 + np.exp(-(X_CHECK @ fitted.coefficients.toArray() + fitted.intercept)))
    np.testing.assert_allclose(_registered_scores(reg_path, "lr"), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("args, exit_code, fragments", [
    (["register", "../evil", "{sparkscore}"], 1, ["invalid model name '../evil'"]),
    (["register", "m", "{sparkscore}", "--alias", "x'; DROP TABLE t; --"], 1, ["invalid alias"]),
    (["register", "m", "{missing}"], 1, ["no such file"]),
    (["register", "m", "{junk}"], 1, ["cannot tell the model format", "--format"]),
    (["register", "m", "{junk}", "--format", "tflite"], 2, ["unknown format 'tflite'"]),
    (["register", "m", "{sparkscore}", "--lineage", "novalue"], 2, ["KEY=VALUE"]),
    (["register", "m"], 2, ["Missing argument", "--help"]),
    (["frobnicate"], 2, ["No such command"]),
    (["describe", "nope"], 1, ["'nope' is not in the registry"]),
    (["describe", "x'; DROP TABLE t; --"], 1, ["invalid model ref"]),
    (["alias", "m", "prod"], 2, ["VERSION"]),
    (["alias", "m", "prod", "1", "--delete"], 2, ["--delete takes no VERSION"]),
    (["alias", "m", "prod", "abc"], 2, ["VERSION"]),
])
def test_errors_are_one_line_with_the_right_exit_code(runner, reg_path, model_files, tmp_path, args,
                                                      exit_code, fragments):
    (tmp_path / "junk.bin").write_bytes(b"\x00\x01not a model")
    paths = {"sparkscore": model_files["sparkscore"][0], "missing": tmp_path / "missing.txt",
             "junk": tmp_path / "junk.bin"}
    result = invoke(runner, reg_path, *[a.format(**paths) for a in args])
    assert_one_line_error(result, exit_code, *fragments)
    written = reg_path / "models"
    assert not written.exists() or not any(written.rglob("model.json"))


def test_debug_lets_the_exception_through(runner, reg_path):
    result = runner.invoke(app, ["--registry", str(reg_path), "--debug", "describe", "../x"])
    assert isinstance(result.exception, InvalidModelNameError)
    assert not result.stderr.startswith("error: ")


def test_models_alias_and_describe(runner, reg_path):
    empty = invoke(runner, reg_path, "models")
    assert empty.exit_code == 0 and "no models" in empty.stdout
    registry = ss.Registry(reg_path)
    for i in range(3):
        registry.register("churn", tiny_model(float(i)), lineage={"data_fingerprint": f"d{i}"})
    registry.register("spend", tiny_model())
    moved = invoke(runner, reg_path, "alias", "churn", "prod", "2")
    assert moved.exit_code == 0 and "churn@prod -> churn/2" in moved.stdout
    assert registry.get("churn@prod").version == 2
    listing = invoke(runner, reg_path, "models")
    assert listing.exit_code == 0
    churn_row = next(line for line in listing.stdout.splitlines() if "churn" in line)
    assert "prod -> 2" in churn_row and " 3 " in churn_row
    assert any("spend" in line for line in listing.stdout.splitlines())
    described = invoke(runner, reg_path, "describe", "churn@prod")
    info = json.loads(described.stdout)
    assert (info["version"], info["aliases"], info["lineage"]) == (2, ["prod"], {"data_fingerprint": "d1"})
    assert info["sha256"] == registry.get("churn/2").sha256
    missing = invoke(runner, reg_path, "alias", "churn", "prod", "9")
    assert_one_line_error(missing, 1, "no version 9")
    deleted = invoke(runner, reg_path, "alias", "churn", "prod", "--delete")
    assert deleted.exit_code == 0 and registry.aliases("churn") == {}
    assert_one_line_error(invoke(runner, reg_path, "alias", "churn", "prod", "--delete"), 1, "no alias 'prod'")


def test_sparkscore_home_selects_the_registry_and_registry_overrides_it(runner, reg_path, tmp_path, model_files):
    path, _ = model_files["sparkscore"]
    assert runner.invoke(app, ["register", "from_env", str(path)]).exit_code == 0
    assert ss.Registry(tmp_path / "home-registry").models() == ["from_env"]
    assert runner.invoke(app, ["--registry", f"file://{reg_path}", "register", "from_flag", str(path)]).exit_code == 0
    assert ss.Registry(reg_path).models() == ["from_flag"]
    assert ss.Registry(tmp_path / "home-registry").models() == ["from_env"]


# ---------------------------------------------------------------------- sql / explain
@pytest.fixture
def people(tmp_path, reg_path):
    """A parquet and a csv file of inputs, and a registered linear model over (age, income)."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.csv
    import pyarrow.parquet

    table = pa.table({"id": [1, 2, 3], "age": [30.0, 40.0, None], "income": [1.0, 2.0, 3.0]})
    pyarrow.parquet.write_table(table, tmp_path / "people.parquet")
    pyarrow.csv.write_csv(table, tmp_path / "people.csv")
    ss.Registry(reg_path).register("score", tiny_model(0.5))
    return tmp_path


@needs_duckdb_engine
@pytest.mark.parametrize("file_name", ["people.parquet", "people.csv"])
def test_sql_runs_predict_over_files(runner, reg_path, people, file_name):
    query = "SELECT id, PREDICT('score', *) AS s FROM people ORDER BY id"
    result = invoke(runner, reg_path, "sql", query, "--table", f"people={people / file_name}")
    assert result.exit_code == 0, result.output
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in result.stdout.splitlines() if line.startswith("│")]
    assert cells[:2] == [["1", "32.5"], ["2", "44.5"]]
    assert cells[2][0] == "3" and cells[2][1] in ("NULL", "nan")  # NULL input = missing value


@needs_duckdb_engine
def test_sql_writes_output_files(runner, reg_path, people):
    import duckdb

    out = people / "scored.parquet"
    query = "SELECT id, PREDICT('score', age, income) AS s FROM people WHERE age IS NOT NULL ORDER BY id"
    result = invoke(runner, reg_path, "sql", query, "-t", f"people={people / 'people.parquet'}", "--output", out)
    assert result.exit_code == 0, result.output
    assert duckdb.sql(f"SELECT s FROM '{out}' ORDER BY id").fetchall() == [(32.5,), (44.5,)]


@needs_duckdb_engine
@pytest.mark.parametrize("args, exit_code, fragment", [
    (["sql", "SELECT PREDICT('x''; DROP TABLE people; --', *) FROM people"], 1, "invalid model ref"),
    (["sql", "SELECT PREDICT('nope', *) FROM people"], 1, "'nope' is not in the registry"),
    (["sql", "SELECT PREDICT('score', id) FROM people"], 1, "score"),
    (["sql", "SELECT * FROM people", "--table", "bad name=x.parquet"], 2, "plain SQL identifier"),
    (["sql", "SELECT * FROM people", "--table", "people"], 2, "KEY=VALUE"),
    (["sql", "SELECT * FROM people", "--table", "people={people}/missing.parquet"], 1, "does not exist"),
    (["sql", "SELECT * FROM people", "-t", "people={people}/people.parquet", "-o", "{people}/x.txt"], 2, ".parquet"),
    (["sql", "SELEC nonsense"], 1, "error"),
    (["explain", "SELECT PREDICT('score/7', *) FROM people"], 1, "no version 7"),
])
def test_sql_errors_are_one_line(runner, reg_path, people, args, exit_code, fragment):
    args = [a.format(people=people) for a in args]
    if "--table" not in args and "-t" not in args:
        args += ["--table", f"people={people / 'people.parquet'}"]
    result = invoke(runner, reg_path, *args)
    assert_one_line_error(result, exit_code, fragment)
    assert (people / "people.parquet").exists()


@needs_duckdb_engine
def test_explain_prints_the_plan(runner, reg_path, people):
    query = "SELECT id, PREDICT('score', *) AS s FROM people"
    result = invoke(runner, reg_path, "explain", query, "--table", f"people={people / 'people.parquet'}")
    assert result.exit_code == 0, result.output
    assert "bind_models" in result.stdout and "score/1" in result.stdout


@needs_duckdb_engine
def test_quickstart_command_runs_every_example(runner, reg_path):
    pytest.importorskip("sparkscore.importers.lightgbm")
    from sparkscore.quickstart import EXPLAINED_QUERY, example_queries

    result = invoke(runner, reg_path, "quickstart", "--customers", "500")
    assert result.exit_code == 0, result.output
    for file_name, _ in example_queries():
        assert file_name in result.stdout
    assert f"EXPLAIN {EXPLAINED_QUERY}" in result.stdout and "bind_models" in result.stdout
    assert ss.Registry(reg_path).models() == ["churn", "churn_logit", "spend"]


def test_console_script_smoke(tmp_path):
    """The real entry point in a subprocess: output, exit codes and the one-line error."""
    env = {"SPARKSCORE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-c", "from sparkscore.cli import main; main()"]
    cwd = Path(__file__).resolve().parents[1]
    ok = subprocess.run([*cmd, "models"], capture_output=True, text=True, env=env, cwd=cwd, timeout=60)
    assert ok.returncode == 0 and "no models" in ok.stdout
    bad = subprocess.run([*cmd, "describe", "../../etc/passwd"], capture_output=True, text=True, env=env, cwd=cwd,
                         timeout=60)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: invalid model ref")


# ---------------------------------------------------------------------- issue 12: registry verbs, damage, errors
LIBRARY_EXCEPTION_NAME = re.compile(r"\b[A-Z]\w*(Error|Exception)\b")


def test_version_flag(runner):
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"sparkscore {ss.__version__}"


@pytest.mark.parametrize("args", [["describe", "../x", "--debug"], ["describe", "--debug", "../x"],
                                  ["--debug", "describe", "../x"]])
def test_debug_is_accepted_anywhere_on_the_line(runner, reg_path, args):
    result = runner.invoke(app, ["--registry", str(reg_path), *args])
    assert isinstance(result.exception, InvalidModelNameError)
    assert not result.stderr.startswith("error: ")


def test_versions_lists_every_version_with_aliases(runner, reg_path):
    registry = ss.Registry(reg_path)
    for i in range(3):
        registry.register("churn", tiny_model(float(i)))
    registry.set_alias("churn", "prod", 2)
    result = invoke(runner, reg_path, "versions", "churn")
    assert result.exit_code == 0, result.output
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.startswith("│")}
    assert sorted(rows) == ["1", "2", "3"]
    assert "prod" in rows["2"] and registry.get("churn/2").sha256[:12] in rows["2"]
    assert_one_line_error(invoke(runner, reg_path, "versions", "nope"), 1, "'nope' is not in the registry")


def test_delete_refuses_aliased_versions_unless_forced_and_never_reuses_numbers(runner, reg_path):
    registry = ss.Registry(reg_path)
    for i in range(3):
        registry.register("churn", tiny_model(float(i)))
    registry.set_alias("churn", "prod", 3)
    assert_one_line_error(invoke(runner, reg_path, "delete", "churn/3"), 1, "alias prod", "--force")
    assert_one_line_error(invoke(runner, reg_path, "delete", "churn@prod"), 2, "is an alias")
    assert_one_line_error(invoke(runner, reg_path, "delete", "churn/9"), 1, "no version 9")
    forced = invoke(runner, reg_path, "delete", "churn/3", "--force")
    assert forced.exit_code == 0 and "deleted churn/3 and alias prod" in forced.stdout
    assert [mv.version for mv in registry.versions("churn")] == [1, 2] and registry.aliases("churn") == {}
    assert registry.register("churn", tiny_model(9.0)).version == 4
    whole = invoke(runner, reg_path, "delete", "churn")
    assert whole.exit_code == 0 and "model churn (versions 1, 2, 4)" in whole.stdout
    assert registry.models() == [] and registry.register("churn", tiny_model(0.0)).version == 5


def test_registering_the_same_file_twice_says_it_is_already_registered(runner, reg_path, model_files):
    path, _ = model_files["sparkscore"]
    first = invoke(runner, reg_path, "register", "m", path)
    again = invoke(runner, reg_path, "register", "m", path, "--alias", "prod")
    assert first.exit_code == 0 and "registered m/1" in first.stdout
    assert again.exit_code == 0 and "already registered as m/1" in again.stdout and "no new version" in again.stdout
    registry = ss.Registry(reg_path)
    assert [mv.version for mv in registry.versions("m")] == [1] and registry.aliases("m") == {"prod": 1}


@pytest.mark.parametrize("damage", ["version_json", "alias"])
def test_models_and_versions_list_what_is_healthy_and_mark_the_damage(runner, reg_path, damage):
    registry = ss.Registry(reg_path)
    registry.register("churn", tiny_model(1.0))
    registry.register("churn", tiny_model(2.0))
    registry.register("spend", tiny_model(3.0))
    registry.set_alias("churn", "prod", 1)
    if damage == "version_json":
        broken, ref = registry.model_path("churn", 2) / "version.json", "churn/2"
        broken.write_bytes(broken.read_bytes()[:25])
        fix = "sparkscore delete churn/2 --force"
    else:
        broken, ref = reg_path / "models" / "churn" / "aliases" / "prod.json", "churn@prod"
        broken.write_text('{"version": ')
        fix = "sparkscore alias churn prod VERSION"
    for command in (["models"], ["versions", "churn"]):
        result = invoke(runner, reg_path, *command)
        assert result.exit_code == 0, result.output
        warnings = result.stderr.strip().splitlines()
        assert len(warnings) == 1 and warnings[0].startswith(f"warning: damaged {ref}")
        assert str(broken) in warnings[0] and fix in warnings[0]
        assert "Traceback" not in result.output
    listing = invoke(runner, reg_path, "models").stdout
    assert any("spend" in line for line in listing.splitlines())
    assert any(line.startswith("│ churn") and ref in line for line in listing.splitlines())
    # a query naming the damaged entry fails with the same path and fix; the healthy ones still plan
    broken_ref = "churn/2" if damage == "version_json" else "churn@prod"
    failed = invoke(runner, reg_path, "explain", f"SELECT PREDICT('{broken_ref}', age, income) FROM (SELECT 1.0 AS age, 2.0 AS income)")
    assert_one_line_error(failed, 1, str(broken), fix)
    healthy = invoke(runner, reg_path, "explain", "SELECT PREDICT('spend', age, income) FROM (SELECT 1.0 AS age, 2.0 AS income)")
    assert healthy.exit_code == 0 and "spend/1" in healthy.stdout


def test_quickstart_twice_does_not_pile_up_versions(runner, reg_path):
    pytest.importorskip("sparkscore.importers.lightgbm")
    first = invoke(runner, reg_path, "quickstart", "--customers", "300")
    second = invoke(runner, reg_path, "quickstart", "--customers", "300")
    assert first.exit_code == 0 and second.exit_code == 0, second.output
    registry = ss.Registry(reg_path)
    assert {name: [mv.version for mv in registry.versions(name)] for name in registry.models()} == \
        {"churn": [1], "churn_logit": [1], "spend": [1]}
    assert "already registered (same bytes, no new version) churn/1" in second.stdout
    for result in (first, second):
        assert "next steps:" in result.stdout and "quickstart finished in" in result.stdout
        assert "planned and ran in" in result.stdout


@needs_duckdb_engine
@pytest.mark.parametrize("args, exit_code, fragments", [
    (["sql", "SELECT * FROM people WHERE"], 1, ["cannot parse the query", "WHERE is incomplete", "line 1"]),
    (["sql", "SELECT id, PREDICTT('score', *) FROM people"], 1, ["PREDICTT", "did you mean PREDICT"]),
    (["sql", "SELECT * FROM people", "-t", "people={people}/nothing-*.parquet"], 1, ["no files match"]),
    (["sql", "SELECT * FROM people", "-t", "people={people}/people.parquet", "-o", "{people}/people.csv"], 1,
     ["already exists", "--overwrite"]),
    (["register", "x", "{people}/people.parquet", "--format", "lightgbm"], 1,
     ["could not be read as a lightgbm model", "--format"]),
])
def test_user_errors_name_the_problem_without_library_internals(runner, reg_path, people, args, exit_code, fragments):
    args = [a.format(people=people) for a in args]
    if args[0] == "sql" and "-t" not in args:
        args += ["--table", f"people={people / 'people.parquet'}"]
    before = (people / "people.csv").read_bytes()
    result = invoke(runner, reg_path, *args)
    assert_one_line_error(result, exit_code, *fragments)
    line = result.stderr.strip()
    assert not LIBRARY_EXCEPTION_NAME.search(line) and "sqlglot" not in line and "<class" not in line, line
    assert (people / "people.csv").read_bytes() == before  # an existing --output is never overwritten


@needs_duckdb_engine
def test_sql_overwrite_replaces_an_existing_output(runner, reg_path, people):
    out = people / "scored.csv"
    out.write_text("old\n")
    query = "SELECT id FROM people ORDER BY id"
    result = invoke(runner, reg_path, "sql", query, "-t", f"people={people / 'people.parquet'}", "-o", out, "--overwrite")
    assert result.exit_code == 0, result.output
    assert out.read_text().split() == ["id", "1", "2", "3"]


@pytest.mark.parametrize("exc, expected", [
    (FileExistsError(17, "File exists", "/data/out.parquet"), "/data/out.parquet: File exists"),
    (type("KernelPanicError", (Exception,), {"__module__": "somelib.core"})("Invalid table location: x"),
     "Invalid table location: x (unexpected error from somelib; rerun with --debug for the traceback)"),
    (InvalidModelNameError("invalid model name 'x'"), "invalid model name 'x'"),
])
def test_unexpected_errors_keep_their_message_but_not_their_class_name(exc, expected):
    from sparkscore.cli import _one_line

    assert _one_line(exc) == expected


def test_quickstart_without_the_models_extra_says_what_to_install(tmp_path):
    """sklearn made unimportable in a fresh interpreter, as on a core-only install."""
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "from sparkscore.cli import main; sys.argv = ['sparkscore', 'quickstart']; main()")
    env = {"SPARKSCORE_HOME": str(tmp_path), "PATH": "/usr/bin:/bin",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert "scikit-learn is not installed" in done.stderr and "pip install 'sparkscore[models]'" in done.stderr
    assert not (tmp_path / "models").exists()


@needs_duckdb_engine
def test_long_sql_runs_report_duckdb_progress_on_stderr_not_stdout():
    import duckdb

    from sparkscore.cli import _connection, run_with_progress

    con = _connection([])
    assert con.sql("SELECT current_setting('enable_progress_bar_print')").fetchall() == [(False,)]
    seen = []
    query = "SELECT count(*) FROM range(100000000) t(x) WHERE x % 7 = 3"
    rows = run_with_progress(con, lambda: con.sql(query).fetchall(), seen.append, interval_s=0.01)
    assert rows == [(14285714,)]
    assert seen[-1] is None and any(0 < p < 100 for p in seen[:-1]), seen
    assert seen[:-1] == sorted(seen[:-1])
    assert duckdb.__version__


def test_alias_history_lists_every_move_with_its_reason_as_a_table_and_as_json(runner, reg_path):
    registry = ss.Registry(reg_path)
    for i in range(2):
        registry.register("churn", tiny_model(float(i)))
    assert invoke(runner, reg_path, "alias", "churn", "prod", "1").exit_code == 0
    assert invoke(runner, reg_path, "alias", "churn", "prod", "2", "--reason", "TICKET-7").exit_code == 0
    assert invoke(runner, reg_path, "alias", "churn", "prod", "--delete", "--reason", "rollback").exit_code == 0
    table = invoke(runner, reg_path, "alias", "churn", "--history")
    assert table.exit_code == 0, table.output
    assert "TICKET-7" in table.stdout and "rollback" in table.stdout and "(removed)" in table.stdout
    doc = json.loads(invoke(runner, reg_path, "alias", "churn", "prod", "--history", "--json").stdout)
    assert [(m["from_version"], m["to_version"], m["reason"]) for m in doc["moves"]] == [
        (None, 1, None), (1, 2, "TICKET-7"), (2, None, "rollback")]
    pinned = invoke(runner, reg_path, "describe", f"churn@prod#{doc['moves'][1]['ts']}")
    assert json.loads(pinned.stdout)["version"] == 2
    log = reg_path / "models" / "churn" / "alias_history.jsonl"
    log.write_bytes(log.read_bytes() + b"junk\n")
    damaged = invoke(runner, reg_path, "alias", "churn", "--history", "--json")
    assert damaged.exit_code == 0 and len(json.loads(damaged.stdout)["moves"]) == 3
    assert "warning: damaged churn alias history line 4" in damaged.stderr
    assert_one_line_error(invoke(runner, reg_path, "alias", "churn", "--history", "prod", "1"), 2, "--history")
    assert_one_line_error(invoke(runner, reg_path, "alias", "churn"), 2, "ALIAS")


def test_lineage_and_diff_commands_print_text_and_json(runner, reg_path, tmp_path):
    import pandas as pd

    registry = ss.Registry(reg_path)
    registry.register("churn", tiny_model(0.0), metrics={"auc": 0.7}, code="v1")
    registry.register("churn", tiny_model(0.5), metrics={"auc": 0.8}, code="v2")
    registry.set_alias("churn", "prod", 2)
    text = invoke(runner, reg_path, "lineage", "churn@prod")
    assert text.exit_code == 0, text.output
    assert "churn/2" in text.stdout and "metrics:" in text.stdout and "auc: 0.8" in text.stdout
    assert "distributions_sha256" in text.stdout
    doc = json.loads(invoke(runner, reg_path, "lineage", "churn/1", "--json").stdout)
    assert doc["code"] == {"source": "argument", "value": "v1"} and doc["ref"] == "churn/1"
    data = tmp_path / "people.csv"
    pd.DataFrame({"age": [1.0, 2.0, 3.0], "income": [0.0, 1.0, 2.0]}).to_csv(data, index=False)
    shown = invoke(runner, reg_path, "diff", "churn/1", "churn@prod", "--data", data)
    assert shown.exit_code == 0, shown.output
    assert "code: 1 changed\n  value: v1 -> v2" in shown.stdout and "parameters: same" in shown.stdout
    assert "predictions on 3 rows" in shown.stdout and "max abs diff 0.5" in shown.stdout
    as_json = json.loads(invoke(runner, reg_path, "diff", "churn/1", "churn/2", "--json").stdout)
    assert as_json["other"]["metrics.auc"] == [0.7, 0.8] and "predictions" not in as_json
    assert_one_line_error(invoke(runner, reg_path, "diff", "churn/1", "churn/9"), 1, "no version 9")
    assert_one_line_error(invoke(runner, reg_path, "diff", "churn/1", "churn/2", "--data", tmp_path / "x.txt"), 2,
                          "--data")
