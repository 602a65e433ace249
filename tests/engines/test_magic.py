"""The ``%%sparkscore`` IPython cell magic, driven through IPython's own API."""

from __future__ import annotations

import duckdb
import pandas as pd
import pytest

from sparkscore.errors import QueryError
from tests.engines.duckdb_models import MODELS, frame

QUERY = "SELECT row_id, PREDICT('trees', *) AS label FROM t ORDER BY row_id"


@pytest.fixture
def shell(registry):
    from IPython.core.interactiveshell import InteractiveShell

    registry.register("trees", MODELS["trees"]())
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "sparkscore.engines.magic")
    con = duckdb.connect()
    con.register("frame_view", frame())
    con.sql("CREATE TABLE t AS SELECT * FROM frame_view")
    ip.user_ns.update(con=con, reg=registry)
    yield ip
    for name in ("con", "reg", "scores"):
        ip.user_ns.pop(name, None)
    con.close()


def test_cell_magic_returns_the_result_frame(shell, registry):
    result = shell.run_cell_magic("sparkscore", "con --registry reg --out scores", QUERY)
    assert isinstance(result, pd.DataFrame)
    assert list(result.columns) == ["row_id", "label"]
    assert result["label"].tolist() == registry.load("trees").predict(frame()[["a", "b"]]).tolist()
    assert shell.user_ns["scores"] is result


def test_registry_given_as_a_path_and_rules_disabled(shell, registry):
    result = shell.run_cell_magic("sparkscore", f"con --registry {registry.root} --disable-rules inline_models", QUERY)
    assert len(result) == len(frame())


def test_explain_flag_shows_the_plan(shell):
    plan = shell.run_cell_magic("sparkscore", "con --registry reg --explain", QUERY)
    assert "trees_v1" in plan.sql
    assert "bind_models" in str(plan)


def test_unknown_connection_is_a_clean_error(shell):
    with pytest.raises(QueryError, match="'nope' is not a DuckDB connection"):
        shell.run_cell_magic("sparkscore", "nope --registry reg", QUERY)
