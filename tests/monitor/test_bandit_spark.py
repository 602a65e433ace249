"""The bandit's batch update on Spark (sparkscore/engines/feedback.py): the same prediction log + feedback
table give the same route version on DuckDB and on Spark (one Spark SQL query for the join and the
per-arm aggregate; the policy update is the monitor's)."""

from __future__ import annotations

import json
from datetime import datetime

import numpy as np
import pytest

import sparkscore as ss
from sparkscore.engines import feedback
from sparkscore.monitor import bandit
from sparkscore.monitor.bandit import BanditError
from tests.monitor.test_bandit import expected_stats, make_routed

pytestmark = pytest.mark.spark
pytest.importorskip("pyspark")
deltalake = pytest.importorskip("deltalake")


def _pair(kind, tmp_path):
    """Two registries with the same models, route, log and feedback (one for each engine)."""
    out = []
    for side in ("duckdb", "spark"):
        (tmp_path / side).mkdir()
        out.append(make_routed(kind, ss.Registry(tmp_path / side / "registry"), tmp_path / side))
    return out


def _same_state(a, b) -> None:
    assert a.weights == b.weights
    sa, sb = a.policy["state"], b.policy["state"]
    assert sa["arms"] == sb["arms"]
    for key in set(sa) - {"arms"}:
        np.testing.assert_allclose(sa[key], sb[key], rtol=1e-12, atol=1e-12)
    assert a.policy["params"] == b.policy["params"]
    for arm, (n, s) in a.policy["stats"].items():
        assert b.policy["stats"][arm][0] == n and b.policy["stats"][arm][1] == pytest.approx(s, rel=1e-12, abs=1e-12)
    wa, wb = a.policy["window"], b.policy["window"]
    assert wa["loss"] == wb["loss"]
    for key in ("first", "through"):  # the same instants (each engine writes its own offset)
        assert datetime.fromisoformat(wa[key]) == datetime.fromisoformat(wb[key])


@pytest.mark.parametrize("kind,policy", [("multiclass", "exp4"), ("regression", "exp3")])  # binary: test_routes_across_engines
def test_spark_and_duckdb_write_the_same_route_version(spark, tmp_path, kind, policy):
    (_, reg_d, log_d, fb_d), (_, reg_s, log_s, fb_s) = _pair(kind, tmp_path)
    on_duckdb = bandit.update_from_log(reg_d, "m@ab", log_d, fb_d, policy=policy, eta=0.02)
    on_spark = feedback.update_from_log(spark, reg_s, "m@ab", log_s, fb_s, policy=policy, eta=0.02)
    assert on_spark.route.version == on_duckdb.route.version == 2
    _same_state(on_duckdb.route, on_spark.route)
    want, _ = expected_stats(kind, reg_s, log_s, fb_s)  # and both equal the numpy oracle
    assert {a: s.n for a, s in on_spark.stats.items()} == {a: n for a, (n, _) in want.items()}
    for arm, (_, loss) in want.items():
        assert on_spark.stats[arm].loss_sum == pytest.approx(loss, abs=1e-9)
    assert bandit.replay(reg_s, "m", "ab", 2) == on_spark.route.weights
    # the next update counts only newer labels, on Spark too (the window's `through` is the same)
    with pytest.raises(BanditError, match="newer than the last update"):
        feedback.update_from_log(spark, reg_s, "m@ab", log_s, fb_s)


def test_cli_route_update_on_spark_with_a_fixed_scale(spark, tmp_path):
    from typer.testing import CliRunner

    from sparkscore.cli import app

    (_, reg_d, log_d, fb_d), (_, reg_s, log_s, fb_s) = _pair("regression", tmp_path)
    res = CliRunner().invoke(app, ["--registry", str(reg_s.root), "route", "update", "m@ab", "--log", log_s,
                                   "--feedback", fb_s, "--policy", "thompson", "--loss", "squared", "--scale", "2.5",
                                   "--engine", "spark", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    on_duckdb = bandit.update_from_log(reg_d, "m@ab", log_d, fb_d, policy="thompson", loss="squared", scale=2.5)
    assert doc["version"] == 2 and doc["weights"] == on_duckdb.weights
    _same_state(on_duckdb.route, reg_s.route("m", "ab"))
    assert spark.sparkContext._jsc is not None  # the session it found is still running
    bad = CliRunner().invoke(app, ["--registry", str(reg_s.root), "route", "update", "m@ab", "--log",
                                   str(tmp_path / "nope"), "--feedback", fb_s, "--engine", "spark"])
    assert bad.exit_code != 0 and "is not a Delta table" in bad.output
