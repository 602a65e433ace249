"""Downstream lineage (``sparkscore.engines.outputs``): the Delta commits batch jobs made with a version.

delta-rs commits are made for real by the embedded batch engine; delta-spark's commit format comes
from a committed log fixture (tests/fixtures/delta_spark_outputs: no delta-spark JARs here).
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import sparkscore as ss
from sparkscore.cli import app
from sparkscore.engines.outputs import OUTPUTS_CONF, model_outputs
from sparkscore.errors import SparkscoreError
from tests.engines.test_batch import churn_model

deltalake = pytest.importorskip("deltalake")
from sparkscore.engines.batch import score_files  # noqa: E402

FIXTURE = Path(__file__).parents[1] / "fixtures" / "delta_spark_outputs"


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """churn/1 scored twice into ``a`` and once into ``nested/c``; churn/2 once into ``b``."""
    root = tmp_path_factory.mktemp("outputs")
    reg = ss.Registry(root / "reg")
    v1 = reg.register("churn", churn_model(0.8))
    v2 = reg.register("churn", churn_model(0.3))
    frame = pd.DataFrame({"id": np.arange(50), "age": np.linspace(-1, 1, 50), "spend": np.linspace(1, -1, 50)})
    frame.to_parquet(root / "in.parquet")
    frame.iloc[:20].to_parquet(root / "small.parquet")
    tables = root / "warehouse"
    runs = [("churn/1", "in.parquet", "a", "day-1"), ("churn/1", "small.parquet", "a", "day-2"),
            ("churn/2", "in.parquet", "b", "day-1"), ("churn/1", "small.parquet", "nested/c", "day-3")]
    for ref, source, table, job in runs:
        score_files(ref, str(root / source), str(tables / table), registry=reg, job_id=job)
    return reg, tables, v1, v2


def test_lists_the_delta_rs_commits_of_one_version(written):
    reg, tables, v1, _ = written
    found = model_outputs("churn/1", [str(tables / "a"), str(tables / "b")], registry=reg)
    assert found.ref == "churn/1" and found.sha256 == v1.sha256 and found.unreadable == ()
    assert [(Path(c.table).name, c.table_version, c.job_id, c.rows, c.writer) for c in found.commits] == [
        ("a", 0, "day-1", 50, "delta-rs"), ("a", 1, "day-2", 20, "delta-rs")]
    history = {h["version"]: h for h in deltalake.DeltaTable(str(tables / "a")).history()}
    for commit in found.commits:
        assert datetime.fromisoformat(commit.time).timestamp() * 1000 == pytest.approx(
            history[commit.table_version]["timestamp"], abs=1)


def test_a_folder_or_the_conf_list_stands_for_every_table_under_it(written, tmp_path):
    reg, tables, _, _ = written
    by_folder = model_outputs("churn/1", [str(tables)], registry=reg)
    assert sorted(Path(t).name for t in by_folder.searched) == ["a", "b", "c"]
    assert [(Path(c.table).name, c.job_id) for c in by_folder.commits] == [("a", "day-1"), ("a", "day-2"), ("c", "day-3")]
    conf_file = tmp_path / "sparkscore.conf"
    conf_file.write_text(f"# outputs of the nightly jobs\n{OUTPUTS_CONF}   {tables / 'b'}, {tables / 'nested'}\n")
    listed = f"{tables / 'b'},{tables / 'nested'}"
    spark_like = SimpleNamespace(conf={OUTPUTS_CONF: listed})  # SparkSession.conf.get(key, default)
    for conf in (conf_file, {OUTPUTS_CONF: listed}, spark_like):
        found = model_outputs("churn/2", registry=reg, conf=conf)
        assert [(Path(c.table).name, c.table_version, c.job_id, c.rows) for c in found.commits] == [("b", 0, "day-1", 50)]
        assert sorted(Path(t).name for t in found.searched) == ["b", "c"]


def test_delta_spark_commits_are_read_from_user_metadata(written, tmp_path):
    reg, _, v1, _ = written
    table = tmp_path / "spark_table"
    shutil.copytree(FIXTURE / "_delta_log", table / "_delta_log")
    for log in (table / "_delta_log").glob("*.json"):
        log.write_text(log.read_text().replace("@SHA256@", v1.sha256))
    found = model_outputs("churn/1", [str(table)], registry=reg)
    # commit 1 is a churn/1 of another registry (other sha256), commit 2 carries no stamp
    assert [(c.table_version, c.job_id, c.rows, c.writer, c.time[:10]) for c in found.commits] == [
        (0, "nightly-2025-11-30", 1200, "delta-spark", "2025-11-30"),
        (3, "backfill-2025-12", 1500, "delta-spark", "2025-12-02")]


def test_unreadable_locations_are_reported_not_skipped(written, tmp_path):
    reg, tables, _, _ = written
    (tmp_path / "empty").mkdir()
    found = model_outputs("churn/1", [str(tables / "a"), str(tmp_path / "missing"), str(tmp_path / "empty")],
                          registry=reg)
    assert len(found.commits) == 2
    assert dict(found.unreadable) == {str(tmp_path / "missing"): "no such path",
                                      str(tmp_path / "empty"): "no Delta table there"}
    with pytest.raises(SparkscoreError, match=f"no tables to search for the outputs of churn/1: .*{OUTPUTS_CONF}"):
        model_outputs("churn/1", registry=reg)


def test_cli_lineage_outputs(written, tmp_path):
    reg, tables, _, _ = written
    runner = CliRunner()
    base = ["--registry", str(reg.root), "lineage", "churn/1", "--outputs"]
    shown = runner.invoke(app, [*base, "--table", str(tables / "a"), "-t", str(tables / "b")])
    assert shown.exit_code == 0, shown.output
    assert "2 commit(s) in 1 of 2 table(s) searched" in shown.stdout
    assert "day-1" in shown.stdout and "day-2" in shown.stdout and "delta-rs" in shown.stdout
    conf_file = tmp_path / "sparkscore.conf"
    conf_file.write_text(f"{OUTPUTS_CONF} {tables}\n")
    as_json = runner.invoke(app, [*base, "--json"], env={"SPARKSCORE_CONF": str(conf_file)})
    assert as_json.exit_code == 0, as_json.output
    doc = json.loads(as_json.stdout)
    assert [(Path(c["table"]).name, c["table_version"], c["rows"]) for c in doc["commits"]] == [
        ("a", 0, 50), ("a", 1, 20), ("c", 0, 20)]
    nothing = runner.invoke(app, base, env={"SPARKSCORE_CONF": None})
    assert nothing.exit_code == 1 and "--table PATH" in nothing.stderr


def test_a_version_that_answered_through_a_route_lists_the_routed_commits(tmp_path):
    """A route's job stamps the route and its answering arms: lineage of an arm's version finds the table
    (marked with the route), a version the route does not use finds nothing."""
    reg = ss.Registry(tmp_path / "reg")
    v1 = reg.register("churn", churn_model(0.8))
    v2 = reg.register("churn", churn_model(0.3))
    reg.register("churn", churn_model(0.5))
    reg.set_route("churn", "ab", {1: 50, 2: 50}, key="id")
    frame = pd.DataFrame({"id": np.arange(200), "age": np.linspace(-1, 1, 200), "spend": np.linspace(1, -1, 200)})
    frame.to_parquet(tmp_path / "in.parquet")
    table = str(tmp_path / "routed")
    score_files("churn@ab", str(tmp_path / "in.parquet"), table, registry=reg, job_id="day-9")
    for ref, mv in (("churn/1", v1), ("churn/2", v2)):
        found = model_outputs(ref, [table], registry=reg)
        assert [(c.table_version, c.job_id, c.rows, c.route) for c in found.commits] == [(0, "day-9", 200, "churn@ab v1")]
        assert found.sha256 == mv.sha256
    assert model_outputs("churn/3", [table], registry=reg).commits == ()
    # the re-run is a no-op: stamps are compared on job id and pins, with or without the arm list
    assert score_files("churn@ab", str(tmp_path / "in.parquet"), table, registry=reg, job_id="day-9").rows == 0
    assert len(deltalake.DeltaTable(table).history()) == 1


def test_arm_pins_do_not_change_which_commits_a_stamp_matches():
    from sparkscore.engines.delta import JobStamp, stamp_of

    plain = JobStamp("j", "churn@ab", 3, "d" * 64)
    pinned = JobStamp("j", "churn@ab", 3, "d" * 64, (("churn", 1, "a" * 64), ("churn", 2, "b" * 64)))
    assert pinned.matches(plain.metadata()) and plain.matches(pinned.metadata())  # commits of older writers too
    assert stamp_of(pinned.metadata())["arms"] == pinned.arms and stamp_of(plain.metadata())["arms"] == ()
    assert stamp_of({**pinned.metadata(), "sparkscore.arms": "not json"})["arms"] == ()
