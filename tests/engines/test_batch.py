"""Embedded batch scoring (``sparkscore.engines.batch``): files -> one atomic, idempotent Delta commit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sparkscore import Model
from sparkscore.engines.batch import score_files
from sparkscore.errors import JobError, ModelNotFoundError, SignatureError
from sparkscore.ir import LinearModel, Signature

deltalake = pytest.importorskip("deltalake")

ROWS = 1000


def churn_model(weight: float = 0.8) -> Model:
    return Model(LinearModel(np.array([weight, -0.5]), [0.2], "logistic"), Signature.from_names(["age", "spend"]),
                 task="classification", classes=(0, 1))


@pytest.fixture
def data(tmp_path) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"id": np.arange(ROWS), "region": rng.choice(["EU", "US"], ROWS),
                          "age": rng.normal(size=ROWS), "spend": rng.normal(size=ROWS)})
    frame.loc[3, "age"] = np.nan  # NULL = missing value
    frame.to_parquet(tmp_path / "input.parquet")
    frame.to_csv(tmp_path / "input.csv", index=False)
    for i, start in enumerate(range(0, ROWS, 400)):
        frame.iloc[start:start + 400].to_parquet(tmp_path / f"part-{i}.parquet")
    return frame


@pytest.fixture
def churn(registry):
    registry.register("churn", churn_model())
    return registry


def table_rows(path: Path) -> pd.DataFrame:
    """The table's rows after checking every referenced file exists with the recorded row count."""
    table = deltalake.DeltaTable(str(path))
    for row in pa.table(table.get_add_actions(flatten=True)).to_pylist():
        assert pq.read_metadata(path / row["path"]).num_rows == row["num_records"]
    return table.to_pandas()


@pytest.mark.parametrize("input_name", ["input.parquet", "input.csv", "part-*.parquet"])
def test_scores_files_into_one_recorded_commit(churn, data, tmp_path, input_name):
    result = score_files("churn", str(tmp_path / input_name), str(tmp_path / "out"), registry=churn,
                         job_id="day-1", keep_columns=["id", "region"], batch_rows=128)
    rows = table_rows(tmp_path / "out").sort_values("id")
    assert list(rows.columns) == ["id", "region", "prediction", "model", "model_version"]
    np.testing.assert_allclose(rows.prediction, churn.load("churn").predict_proba(data)[:, 1], rtol=1e-12)
    assert list(rows.region) == list(data.region)
    mv = churn.get("churn")
    assert set(rows.model) == {"churn"} and set(rows.model_version) == {mv.version}
    history = deltalake.DeltaTable(str(tmp_path / "out")).history()
    assert len(history) == 1  # every batch file lands in the single commit
    info = history[0]
    assert (info["sparkscore.job_id"], info["sparkscore.model"], info["sparkscore.version"], info["sparkscore.sha256"],
            info["sparkscore.rows"]) == ("day-1", "churn", mv.version, mv.sha256, ROWS)
    assert info["sparkscore.seconds"] > 0
    assert (result.rows, result.table_version, result.already_committed) == (ROWS, 0, False)


def test_keeps_every_column_by_default(churn, data, tmp_path):
    score_files("churn", str(tmp_path / "input.parquet"), str(tmp_path / "out"), registry=churn)
    assert list(table_rows(tmp_path / "out").columns) == [*data.columns, "prediction", "model", "model_version"]


def test_same_job_id_and_model_version_adds_nothing_a_new_version_does(churn, data, tmp_path):
    args = ("churn", str(tmp_path / "input.parquet"), str(tmp_path / "out"))
    score_files(*args, registry=churn, job_id="day-1")
    again = score_files(*args, registry=churn, job_id="day-1")
    assert again.already_committed and again.rows == 0
    assert deltalake.DeltaTable(str(tmp_path / "out")).version() == 0
    churn.register("churn", churn_model(weight=0.1))
    retrained = score_files(*args, registry=churn, job_id="day-1")
    assert (retrained.table_version, len(table_rows(tmp_path / "out"))) == (1, 2 * ROWS)


def test_overwrite_replaces_the_rows_in_one_commit(churn, data, tmp_path):
    out = str(tmp_path / "out")
    for job in ("a", "b"):
        score_files("churn", str(tmp_path / "input.parquet"), out, registry=churn, job_id=job)
    replaced = score_files("churn", str(tmp_path / "part-0.parquet"), out, registry=churn, job_id="c", mode="overwrite")
    rows = table_rows(tmp_path / "out")
    assert replaced.table_version == 2 and len(rows) == len(pd.read_parquet(tmp_path / "part-0.parquet"))
    assert rows.id.is_unique


def test_batches_are_written_as_they_are_scored_and_committed_at_the_end(churn, data, tmp_path):
    out = tmp_path / "out"
    seen = []

    def progress(rows: int, total):
        staged = list(out.glob("sparkscore-staging-*/*.parquet"))
        seen.append((rows, total, len(staged)))
        assert not (out / "_delta_log").exists()  # nothing is visible before the single commit

    score_files("churn", str(tmp_path / "input.parquet"), str(out), registry=churn, batch_rows=100, progress=progress)
    assert seen == [(min(100 * (i + 1), ROWS), ROWS, i + 1) for i in range(10)]
    assert len(table_rows(out)) == ROWS


def test_a_run_that_finds_its_job_committed_at_commit_time_adds_nothing(churn, data, tmp_path):
    """Two runs of one job id racing: the one committing second finds the stamp and drops its files."""
    out = tmp_path / "out"
    args = ("churn", str(tmp_path / "input.parquet"), str(out))
    racing = []

    def run_the_same_job_meanwhile(rows: int, total):
        if not racing:
            racing.append(score_files(*args, registry=churn, job_id="race"))

    late = score_files(*args, registry=churn, job_id="race", batch_rows=500, progress=run_the_same_job_meanwhile)
    assert racing[0].table_version == 0 and late.already_committed
    assert len(table_rows(out)) == ROWS
    assert len(list(out.glob("sparkscore-staging-*/*.parquet"))) == len(deltalake.DeltaTable(str(out)).file_uris())


@pytest.mark.parametrize("kwargs, error, fragment", [
    ({"model_ref": "nope"}, ModelNotFoundError, "nope"),
    ({"input_path": "{tmp}/missing.parquet"}, JobError, "does not exist"),
    ({"keep_columns": ["id", "zip"]}, JobError, "'zip' is not an input column"),
    ({"keep_columns": ["id"], "output_col": "id"}, JobError, "'id', the score column"),
    ({"batch_rows": 0}, JobError, "positive row count"),
    ({"mode": "upsert"}, JobError, "unknown mode 'upsert'"),
    ({"output": "s3://bucket/scores"}, JobError, "spark engine"),
])
def test_bad_arguments_fail_before_anything_is_written(churn, data, tmp_path, kwargs, error, fragment):
    args = {"model_ref": "churn", "input_path": str(tmp_path / "input.parquet"), "output": str(tmp_path / "out"),
            **{k: v.format(tmp=tmp_path) if isinstance(v, str) else v for k, v in kwargs.items()}}
    with pytest.raises(error, match=fragment):
        score_files(**args, registry=churn)
    assert not (tmp_path / "out").exists()


def test_a_missing_model_input_names_the_column_and_the_model(registry, data, tmp_path):
    registry.register("wide", Model(LinearModel(np.ones(3), [0.0]), Signature.from_names(["age", "spend", "income"])))
    with pytest.raises(SignatureError, match="wide.*'income'"):
        score_files("wide", str(tmp_path / "input.parquet"), str(tmp_path / "out"), registry=registry)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- issue 12: shared integrity helpers
def test_the_derived_job_id_changes_with_each_thing_that_changes_rows(tmp_path):
    from sparkscore.engines.delta import derive_job_id, file_identity

    data = tmp_path / "a.parquet"
    data.write_bytes(b"x" * 10)
    base = dict(source={"files": file_identity([str(data)])}, stamp_model=("churn", 1, "ab" * 32),
                output=str(tmp_path / "out"), options={"mode": "append", "keep_columns": ["id"]})
    job = derive_job_id(**base)
    assert job == derive_job_id(**{**base, "output": str(tmp_path / "out")}) and job.startswith("auto-")
    others = [
        {"stamp_model": ("churn", 2, "ab" * 32)},
        {"stamp_model": ("churn", 1, "cd" * 32)},
        {"output": str(tmp_path / "other")},
        {"options": {"mode": "overwrite", "keep_columns": ["id"]}},
        {"options": {"mode": "append", "keep_columns": ["id", "age"]}},
        {"source": {"delta": str(tmp_path / "in"), "version": 3}},
    ]
    assert len({job, *(derive_job_id(**{**base, **change}) for change in others)}) == len(others) + 1
    data.write_bytes(b"y" * 11)  # rewritten input: another size and mtime
    assert derive_job_id(**{**base, "source": {"files": file_identity([str(data)])}}) != job


def test_a_live_run_s_staging_folder_is_never_taken_for_a_leftover(tmp_path):
    from sparkscore.engines import delta

    out = str(tmp_path / "out")
    with delta.staging(out) as live:
        (Path(live) / "part-00000.parquet").write_bytes(b"partial")
        assert delta.remove_leftovers(out, include_unlocked=True) == []
        assert Path(live).is_dir()
    assert Path(live).is_dir()  # a finished run keeps its folder: commit_staged committed (or dropped) its files


def test_a_folder_some_commit_references_is_kept_even_with_a_dead_owner_lock(churn, data, tmp_path):
    """kill -9 between the commit and the lock's removal: the folder holds table data and stays."""
    from sparkscore.engines import delta

    out = tmp_path / "out"
    score_files("churn", str(tmp_path / "input.parquet"), str(out), registry=churn, job_id="a", batch_rows=400)
    (folder,) = out.glob("sparkscore-staging-*")
    (out / f"_{folder.name}.lock").write_text("")  # a lock file no process holds
    dead = out / "sparkscore-staging-dead"
    dead.mkdir()
    (dead / "part-00000.parquet").write_bytes(b"partial")
    (out / "_sparkscore-staging-dead.lock").write_text("")
    assert delta.remove_leftovers(str(out)) == [str(dead)]
    assert folder.is_dir() and not list(out.glob("_sparkscore-staging-*.lock"))
    assert len(table_rows(out)) == ROWS


def test_schema_merge_also_applies_to_overwrite(churn, data, tmp_path):
    out = str(tmp_path / "out")
    score_files("churn", str(tmp_path / "input.parquet"), out, registry=churn, keep_columns=["id"])
    with pytest.raises(JobError, match="added region"):
        score_files("churn", str(tmp_path / "input.parquet"), out, registry=churn, keep_columns=["id", "region"],
                    mode="overwrite")
    replaced = score_files("churn", str(tmp_path / "input.parquet"), out, registry=churn,
                           keep_columns=["id", "region"], mode="overwrite", schema_mode="merge")
    rows = table_rows(tmp_path / "out")
    assert replaced.table_version == 1 and len(rows) == ROWS and list(rows.sort_values("id").region) == list(data.region)


def test_a_csv_column_of_numbers_scores_a_text_one_is_refused(churn, data, tmp_path):
    """DuckDB types csv columns itself; only a column that really is text is refused (no silent parse)."""
    score_files("churn", str(tmp_path / "input.csv"), str(tmp_path / "ok"), registry=churn)
    data.assign(spend=data.spend.astype(str)).to_parquet(tmp_path / "text.parquet")
    with pytest.raises(SignatureError, match=r'churn/1.*\'spend\'.*VARCHAR.*CAST\("spend" AS DOUBLE\)'):
        score_files("churn", str(tmp_path / "text.parquet"), str(tmp_path / "out"), registry=churn)
    assert not (tmp_path / "out").exists()


def test_the_next_run_removes_a_dead_run_s_leftover_even_when_it_has_nothing_to_do(churn, data, tmp_path):
    out = tmp_path / "out"
    args = ("churn", str(tmp_path / "input.parquet"), str(out))
    score_files(*args, registry=churn, job_id="a")
    dead = out / "sparkscore-staging-dead"
    dead.mkdir()
    (dead / "part-00000.parquet").write_bytes(b"partial")
    (out / "_sparkscore-staging-dead.lock").write_text("")  # its owner was killed: nobody holds the lock
    steps = []
    assert score_files(*args, registry=churn, job_id="a", status=steps.append).already_committed
    assert not dead.exists() and not (out / "_sparkscore-staging-dead.lock").exists()
    assert f"removed {dead}, left by a killed run" in steps
