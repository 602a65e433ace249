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


def test_explain_flag_prints_the_explain_text(shell, capsys):
    result = shell.run_cell("%%sparkscore con --registry reg --explain\n" + QUERY)
    printed = capsys.readouterr().out
    assert result.success and result.result is None
    assert "trees_v1" in printed and "bind_models" in printed
    assert "Plan(" not in printed


def _one_line_usage_error(result, printed: str, *fragments: str) -> None:
    assert not result.success and type(result.error_in_exec).__name__ == "UsageError"
    lines = [line for line in printed.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("UsageError: "), printed
    assert "Traceback" not in printed
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize("line, cell, fragments", [
    ("nope --registry reg", QUERY, ["'nope' is not a DuckDB connection"]),
    ("con --registry reg", "SELECT PREDICT('missing_model', *) FROM t", ["'missing_model' is not in the registry"]),
    ("con --registry reg", "SELECT * FROM t WHERE", ["cannot parse the query"]),
    ("con --registry reg", "SELECT PREDICTT('trees', *) FROM t", ["did you mean PREDICT"]),
    ("con --registry reg", "SELECT no_such_column FROM t", ["no_such_column"]),
    ("con --bogus", QUERY, ["unrecognized arguments: --bogus"]),
    ("con --registry reg", "   ", ["query in the cell body"]),
])
def test_user_errors_are_one_line_not_a_traceback(shell, capsys, line, cell, fragments):
    result = shell.run_cell(f"%%sparkscore {line}\n{cell}")
    captured = capsys.readouterr()
    _one_line_usage_error(result, captured.out + captured.err, *fragments)


@pytest.mark.parametrize("cell", ["%%sparkscore -h\nSELECT 1", "%%sparkscore con --help\nSELECT 1", "%sparkscore -h"])
def test_help_prints_the_options(shell, capsys, cell):
    result = shell.run_cell(cell)
    printed = capsys.readouterr().out
    assert result.success
    assert "--registry" in printed and "--explain" in printed and "connection" in printed


@pytest.mark.parametrize("kind", ["pandas", "arrow"])
def test_notebook_variables_are_visible_by_name_to_the_magic_and_to_ss_duckdb_sql(shell, registry, kind):
    import pyarrow as pa

    data = frame()
    shell.user_ns["nb_frame"] = data if kind == "pandas" else pa.Table.from_pandas(data)
    expected = registry.load("trees").predict(data[["a", "b"]]).tolist()
    query = "SELECT row_id, PREDICT('trees', *) AS label FROM nb_frame ORDER BY row_id"
    magic = shell.run_cell(f"%%sparkscore con --registry reg --out nb_scores\n{query}")
    assert magic.success, magic.error_in_exec
    assert shell.user_ns["nb_scores"]["label"].tolist() == expected
    # the same name from a plain cell that calls ss.duckdb.sql (DuckDB looks in the caller's frame)
    cell = shell.run_cell(f"import sparkscore as ss\nnb_direct = ss.duckdb.sql(con, {query!r}, registry=reg).df()")
    assert cell.success, cell.error_in_exec
    assert shell.user_ns["nb_direct"]["label"].tolist() == expected
    for name in ("nb_frame", "nb_scores", "nb_direct"):
        shell.user_ns.pop(name, None)
