"""Alias history: every move is logged (who, when, from, to, why) and time-pinned refs resolve through it."""

from __future__ import annotations

import getpass
import json
import socket
from datetime import datetime, timedelta

import numpy as np
import pytest

from sparkscore.errors import IntegrityError, InvalidModelNameError, ModelNotFoundError
from sparkscore.registry import AliasMove
from sparkscore.registry.store import ALIAS_HISTORY
from tests.registry.models import tiny_model


def _pin(ts: str, shift_us: int = 0) -> str:
    """A time-pin text ``shift_us`` microseconds after the log timestamp ``ts``."""
    return (datetime.fromisoformat(ts) + timedelta(microseconds=shift_us)).isoformat()


@pytest.fixture
def moved(registry):
    """churn/1..3 with prod: set 1, moved to 2 (with a reason), deleted; staging set to 3."""
    for i in range(3):
        registry.register("churn", tiny_model(float(i)))
    registry.set_alias("churn", "prod", 1)
    registry.set_alias("churn", "prod", 2, reason="TICKET-7 better AUC")
    registry.delete_alias("churn", "prod", reason="rollback")
    registry.set_alias("churn", "staging", 3)
    return registry


def test_every_move_is_logged_with_who_when_from_to_and_why(moved):
    history = moved.alias_history("churn")
    assert history.damaged == ()
    assert [(m.alias, m.from_version, m.to_version, m.reason) for m in history.moves] == [
        ("prod", None, 1, None), ("prod", 1, 2, "TICKET-7 better AUC"), ("prod", 2, None, "rollback"),
        ("staging", None, 3, None)]
    for move in history.moves:
        assert move.user == getpass.getuser() and move.host == socket.gethostname()
        assert move.time.utcoffset() == timedelta(0)
    assert [m.time for m in history.moves] == sorted(m.time for m in history.moves)
    assert [m.alias for m in moved.alias_history("churn", "staging").moves] == ["staging"]
    lines = (moved.root / "models" / "churn" / ALIAS_HISTORY).read_text().splitlines()
    assert [AliasMove(**json.loads(line)) for line in lines] == list(history.moves)


def test_forced_delete_logs_the_aliases_it_removes_and_the_log_outlives_the_name(moved):
    moved.set_alias("churn", "prod", 3)
    moved.delete("churn", 3, force=True)
    last_two = moved.alias_history("churn").moves[-2:]
    assert {(m.alias, m.from_version, m.to_version) for m in last_two} == {("prod", 3, None), ("staging", 3, None)}
    assert all(m.reason == "deleted with churn/3" for m in last_two)
    moved.delete("churn")
    assert len(moved.alias_history("churn").moves) == 7


def test_time_pinned_refs_resolve_to_the_version_the_alias_pointed_at_then(moved):
    set1, set2, removed, _ = (m.ts for m in moved.alias_history("churn").moves)
    assert moved.get(f"churn@prod#{set1}").version == 1
    assert moved.get(f"churn@prod#{_pin(set2, -1)}").version == 1
    assert moved.get(f"churn@prod#{set2}").version == 2
    assert moved.load(f"churn@prod#{_pin(removed, -1)}").sha256 == moved.get("churn/2").sha256
    zulu = datetime.fromisoformat(set2).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert moved.get(f"churn@prod#{zulu}").version == 2
    with pytest.raises(ModelNotFoundError, match="was not set at .*first recorded move is at"):
        moved.get(f"churn@prod#{_pin(set1, -1)}")
    with pytest.raises(ModelNotFoundError, match="was unset at"):
        moved.get(f"churn@prod#{removed}")
    with pytest.raises(ModelNotFoundError, match="no recorded moves"):
        moved.get("churn@canary#2026-11-01T00:00:00Z")
    with pytest.raises(ModelNotFoundError, match="not in the registry"):
        moved.get("spend@prod#2026-11-01T00:00:00Z")
    with pytest.raises(ModelNotFoundError, match="is in the future"):
        moved.get(f"churn@prod#{_pin(removed, 3_600_000_000)}")
    with pytest.raises(InvalidModelNameError, match="UTC offset"):
        moved.get("churn@prod#2026-11-01T00:00:00")


def test_a_damaged_log_line_is_reported_never_fatal_and_blocks_only_lookups_it_could_change(moved):
    log = moved.root / "models" / "churn" / ALIAS_HISTORY
    good = log.read_bytes()
    set1, set2, *_ = (m.ts for m in moved.alias_history("churn").moves)
    lines = good.splitlines(keepends=True)
    log.write_bytes(lines[0] + b'{"alias": "prod", "ts": \n' + b"".join(lines[1:]) + b'{"alias": "pr')
    history = moved.alias_history("churn")
    assert len(history.moves) == 4
    assert [d.ref for d in history.damaged] == ["churn alias history line 2", "churn alias history line 6"]
    assert "incomplete" in history.damaged[1].problem and "not a valid" in history.damaged[0].problem
    with pytest.raises(IntegrityError, match="cannot tell where alias 'prod' pointed"):
        moved.get(f"churn@prod#{set1}")  # line 2 may be a move between set1 and set2
    assert moved.get(f"churn@prod#{set2}").version == 2  # the damage lies before the answer
    assert moved.get("churn@staging").version == 3  # plain aliases do not read the log
    moved.set_alias("churn", "prod", 1)  # appending after a torn line still works
    assert moved.alias_history("churn", "prod").moves[-1].to_version == 1


def test_predict_in_duckdb_sql_honours_the_time_pin(moved):
    import duckdb
    import pandas as pd

    import sparkscore as ss

    set1, set2, *_ = (m.ts for m in moved.alias_history("churn").moves)
    frame = pd.DataFrame({"age": [1.0, 2.0], "income": [3.0, -1.0]})
    con = duckdb.connect()
    try:
        con.register("people", frame)
        query = "SELECT PREDICT('churn@prod#{}', age, income) AS p FROM people ORDER BY age"
        then = [r[0] for r in ss.duckdb.sql(con, query.format(set1), moved).fetchall()]
        later = [r[0] for r in ss.duckdb.sql(con, query.format(set2), moved).fetchall()]
    finally:
        con.close()
    X = frame.to_numpy()
    np.testing.assert_allclose(then, moved.load("churn/1").predict(X), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(later, moved.load("churn/2").predict(X), rtol=1e-6, atol=1e-6)
    assert then != later


def test_serving_answers_a_time_pinned_ref_without_touching_the_live_alias_route(moved):
    import asyncio
    from urllib.parse import quote

    from tests.serving.conftest import post, serving

    set1, set2, *_ = (m.ts for m in moved.alias_history("churn").moves)
    moved.set_alias("churn", "prod", 3)
    body = {"dataframe_split": {"columns": ["age", "income"], "data": [[1.0, 2.0]]}}

    async def go():
        async with serving(moved) as (_, client):
            refs = [f"churn@prod#{set1}", f"churn@prod#{set2}", "churn@prod", f"churn@prod#{set1}"]
            return [(await post(client, f"/invocations?model={quote(ref, safe='')}", body)) for ref in refs]

    versions = [r.headers["x-sparkscore-model-version"] for r in asyncio.run(go())]
    assert versions == ["1", "2", "3", "1"]


def test_concurrent_moves_log_one_line_each_in_move_order(registry):
    from concurrent.futures import ThreadPoolExecutor

    for i in range(4):
        registry.register("churn", tiny_model(float(i)))
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda v: [registry.set_alias("churn", "prod", v, reason=f"t{v}") for _ in range(10)],
                      range(1, 5)))
    moves = registry.alias_history("churn").moves
    assert len(moves) == 40 and registry.alias_history("churn").damaged == ()
    assert moves[0].from_version is None
    assert all(later.from_version == earlier.to_version for earlier, later in zip(moves, moves[1:]))
    assert moves[-1].to_version == registry.get("churn@prod").version
    assert [m.time for m in moves] == sorted(m.time for m in moves)


def test_a_move_that_died_between_its_log_line_and_the_alias_file_never_happened(moved, monkeypatch):
    """The log is written first: a writer killed before the alias file is replaced leaves a logged move
    the alias never made.  History and time pins skip it (the next move starts from the old target)."""
    from sparkscore.registry import store

    real = store._write_json_atomic

    def killed(path, doc):
        if path.parent.name == "aliases" or "version" in doc and "updated_at" in doc:
            raise KeyboardInterrupt  # the process dies here
        real(path, doc)
    monkeypatch.setattr(store, "_write_json_atomic", killed)
    with pytest.raises(KeyboardInterrupt):
        moved.set_alias("churn", "staging", 1, reason="never applied")
    monkeypatch.setattr(store, "_write_json_atomic", real)
    assert moved.get("churn@staging").version == 3
    assert [(m.from_version, m.to_version) for m in moved.alias_history("churn", "staging").moves] == [(None, 3)]
    later = moved.alias_history("churn", "staging").moves[-1].ts
    assert moved.get(f"churn@staging#{_pin(later, 1)}").version == 3
    moved.set_alias("churn", "staging", 2)  # from 3: the dead move stays out of the chain
    assert [(m.from_version, m.to_version) for m in moved.alias_history("churn", "staging").moves] == [
        (None, 3), (3, 2)]
    raw = (moved.root / "models" / "churn" / ALIAS_HISTORY).read_text()
    assert "never applied" in raw  # append-only: the line stays, it is only not a move
