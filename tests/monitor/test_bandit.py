"""Bandit selection from feedback (sparkscore/monitor/bandit.py): policy updates on hand-computed
examples, integer splits with the floor, the batch update from a prediction log + feedback table
(binary, multiclass, regression), replay from the stored record, the CLI, and the serve endpoint."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pyarrow as pa
import pytest

from sparkscore import Model
from sparkscore.ir import LinearModel, Signature
from sparkscore.monitor import bandit, predlog
from sparkscore.monitor.bandit import ArmStats, BanditError, PolicyParams
from tests.engines.test_batch import churn_model
from tests.monitor.test_predlog_read import T0, write_feedback

deltalake = pytest.importorskip("deltalake")


# ---------------------------------------------------------------------------- the math
def test_exp3_update_is_the_importance_weighted_exponential_step():
    p = PolicyParams("exp3", eta=0.1, floor=500)
    shares = {"a": 0.5, "b": 0.5}
    state = bandit.update_state(p, bandit.initial_state(p, shares), shares,
                                {"a": ArmStats(10, 2.0), "b": ArmStats(10, 6.0)})
    # log w = ln .5 - eta * S / p: a -= 0.4, b -= 1.2; share_a = 1 / (1 + e^-0.8)
    share_a = 1 / (1 + math.exp(-0.8))
    got = bandit.policy_shares(p, state, "x")
    assert got["a"] == pytest.approx(share_a, abs=1e-12)
    exact = 500 + 9000 * share_a  # 6709.7...: largest remainder rounds it up
    assert bandit.basis_points(got, 500) == {"a": math.ceil(exact), "b": 10000 - math.ceil(exact)}


def test_exp4_uses_each_arms_mean_loss_on_all_rows():
    p = PolicyParams("exp4", eta=0.01)
    shares = {"a": 0.9, "b": 0.1}
    state = bandit.update_state(p, bandit.initial_state(p, shares), shares,
                                {"a": ArmStats(90, 45.0), "b": ArmStats(10, 1.0)})
    # N = 100: a -= 0.01 * 100 * 0.5, b -= 0.01 * 100 * 0.1
    w = np.array([math.log(0.9) - 0.5, math.log(0.1) - 0.1])
    want = np.exp(w) / np.exp(w).sum()
    got = bandit.policy_shares(p, state, "x")
    assert [got["a"], got["b"]] == pytest.approx(want.tolist(), abs=1e-12)


def test_thompson_counts_and_seeded_shares():
    p = PolicyParams("thompson", draws=50_000)
    shares = {"a": 0.5, "b": 0.5}
    state = bandit.update_state(p, bandit.initial_state(p, shares), shares,
                                {"a": ArmStats(20, 2.5), "b": ArmStats(20, 15.0)})
    assert state["alpha"] == [1 + 17.5, 1 + 5.0] and state["beta"] == [1 + 2.5, 1 + 15.0]
    s1, s2 = bandit.policy_shares(p, state, "r:2"), bandit.policy_shares(p, state, "r:2")
    assert s1 == s2  # seeded: the same inputs give the same split
    rng = np.random.default_rng(0)  # P(theta_a > theta_b) by an independent estimate
    truth = np.mean(rng.beta(18.5, 3.5, 400_000) > rng.beta(6.0, 16.0, 400_000))
    assert s1["a"] == pytest.approx(truth, abs=0.01)
    decayed = bandit.update_state(PolicyParams("thompson", decay=0.5), state, shares, {})
    assert decayed["alpha"] == [1 + 8.75, 1 + 2.5]


@pytest.mark.parametrize("shares,floor", [({"a": 1.0, "b": 0.0, "c": 0.0}, 500), ({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}, 0),
                                          ({"a": 0.999, "b": 0.001}, 2500)])
def test_basis_points_are_integers_summing_to_10000_with_the_floor(shares, floor):
    bp = bandit.basis_points(shares, floor)
    assert sum(bp.values()) == 10000 and all(isinstance(v, int) and v >= floor for v in bp.values())
    assert bp == bandit.basis_points(shares, floor)
    if floor == 0:
        assert bp == {"a": 3334, "b": 3333, "c": 3333}  # ties go to the first arm


def test_bad_parameters_are_one_line_errors():
    for kwargs in ({"policy": "ucb"}, {"eta": 0}, {"floor": 10000}, {"decay": 1.5}, {"loss": "hinge"}):
        with pytest.raises(BanditError):
            PolicyParams(**kwargs)
    with pytest.raises(BanditError, match="lower the floor"):
        bandit.basis_points({str(i): 0.1 for i in range(3)}, 4000)


# ---------------------------------------------------------------------------- batch from the log
def regressor(shift: float) -> Model:
    return Model(LinearModel(np.array([1.0, 0.0]), [shift], "identity"), Signature.from_names(["age", "spend"]),
                 task="regression")


def multiclass(w: float) -> Model:
    coef = np.array([[w, 0.0], [0.0, w], [-w, -w]]).T  # (features, classes)
    return Model(LinearModel(coef, [0.0, 0.0, 0.0], "softmax"), Signature.from_names(["age", "spend"]),
                 task="classification", classes=("x", "y", "z"))


def write_routed(path, model, n, arm, version, seed, route="m@ab"):
    from deltalake import write_deltalake

    rng = np.random.default_rng(seed)
    inputs = pa.table({c.name: rng.normal(size=n) for c in model.signature.inputs})
    frame = inputs.to_pandas()
    if model.is_classifier:
        proba = model.predict_proba(frame)
        pred = pa.array(proba[:, 1]) if len(model.classes) == 2 else pa.array(
            [str(model.classes[i]) for i in proba.argmax(axis=1)])
        proba_a = pa.array(list(map(list, proba)), pa.list_(pa.float64()))
    else:
        pred, proba_a = pa.array(np.asarray(model.predict(frame), dtype=np.float64)), None
    ids = [f"{arm}-{seed}-{i}" for i in range(n)]
    table = predlog.log_table(model, ts=T0, source="test", request_ids=ids, name="m", version=version,
                              sha256="0" * 64, inputs=inputs, prediction=pred, proba=proba_a, route=route, arm=arm)
    write_deltalake(str(path), table, mode="append")
    return ids, frame, (proba if model.is_classifier else np.asarray(pred))


KINDS = {"binary": (churn_model(0.8), churn_model(-0.8)), "multiclass": (multiclass(1.0), multiclass(-1.0)),
         "regression": (regressor(0.0), regressor(3.0))}


def _truth(kind, good, frame, seed):
    """Labels the good arm gets mostly right (20% noise) and the other mostly wrong."""
    rng = np.random.default_rng(seed)
    if kind == "regression":
        return (frame["age"].to_numpy() + rng.normal(scale=0.5, size=len(frame))).tolist()
    best = good.predict_proba(frame).argmax(axis=1)
    flip = rng.random(len(frame)) < 0.2
    return [good.classes[(i + 1) % len(good.classes)] if f else good.classes[i] for i, f in zip(best, flip)]


def make_routed(kind, registry, tmp_path):
    """Route m@ab 50/50 over a good arm (1) and a bad one (2), 200 logged + labelled rows each."""
    good, bad = KINDS[kind]
    registry.register("m", good)
    registry.register("m", bad)
    registry.set_route("m", "ab", {1: 50, 2: 50}, key="id")
    log, fb = tmp_path / "log", tmp_path / "fb"
    for arm, version, seed in (("1", 1, 1), ("2", 2, 2)):
        ids, frame, out = write_routed(log, registry.load(f"m/{version}"), 200, arm, version, seed)
        labels = _truth(kind, good, frame, seed)
        write_feedback(fb, ids, labels)
    return kind, registry, str(log), str(fb)


@pytest.fixture
def routed(kind, registry, tmp_path):
    return make_routed(kind, registry, tmp_path)


def expected_stats(kind, registry, log, fb):
    """Per-arm (n, loss sum) computed in numpy from the same tables (the oracle for the SQL)."""
    from deltalake import DeltaTable

    lt = DeltaTable(log).to_pyarrow_table().to_pandas()
    ft = DeltaTable(fb).to_pyarrow_table().to_pandas()
    j = lt.merge(ft, on="request_id")
    out = {}
    scale = None
    if kind == "regression":
        y = j["label"].astype(float)
        scale = float(y.max() - y.min())
    for arm, g in j.groupby("arm"):
        if kind == "regression":
            loss = np.minimum(np.abs(g["prediction"].to_numpy() - g["label"].to_numpy().astype(float)) / scale, 1)
        else:
            classes = registry.load(f"m/{int(g['version'].iloc[0])}").classes
            pred = [classes[int(np.argmax(p))] for p in g["proba"]]
            loss = np.array([0.0 if str(a) == str(b) else 1.0 for a, b in zip(pred, g["label"])])
        out[arm] = (len(g), float(loss.sum()))
    return out, scale


@pytest.mark.parametrize("kind,policy", [("binary", "exp3"), ("binary", "exp4"), ("binary", "thompson"),
                                         ("multiclass", "exp4"), ("multiclass", "thompson"), ("regression", "exp3"),
                                         ("regression", "thompson")])
def test_batch_update_learns_writes_a_version_and_replays(routed, policy):
    kind, registry, log, fb = routed
    up = bandit.update_from_log(registry, "m@ab", log, fb, policy=policy, eta=0.02)
    want, scale = expected_stats(kind, registry, log, fb)
    got = {a: (s.n, s.loss_sum) for a, s in up.stats.items()}
    assert got.keys() == want.keys()
    for arm in want:
        assert got[arm][0] == want[arm][0] and got[arm][1] == pytest.approx(want[arm][1], abs=1e-9)
    assert want["1"][1] < want["2"][1]  # the fixture's premise: arm 1 is better
    r = up.route
    assert r.version == 2 and r.weights["1"] > 5000 > r.weights["2"] >= 500
    assert sum(r.weights.values()) == 10000
    stored = registry.route("m", "ab", 2)  # the version holds the state, the window and the stats
    assert stored.policy["params"]["policy"] == policy and stored.policy["base_version"] == 1
    assert stored.policy["window"]["log"] == log and stored.policy["stats"]["1"][0] == want["1"][0]
    if kind == "regression":
        assert stored.policy["params"]["scale"] == pytest.approx(scale)
    assert bandit.replay(registry, "m", "ab", 2) == stored.weights
    # a second run sees no newer labels: nothing is counted twice
    with pytest.raises(BanditError, match="newer than the last update"):
        bandit.update_from_log(registry, "m@ab", log, fb)
    again = bandit.update_from_log(registry, "m@ab", log, fb, full=True)  # same policy, state continues
    assert again.route.policy["base_version"] == 2 and again.route.policy["prior_state"] == stored.policy["state"]
    assert again.route.weights["1"] >= r.weights["1"]
    assert bandit.replay(registry, "m", "ab", 3) == again.route.weights


def test_same_inputs_give_the_same_weights(registry, tmp_path):
    """Determinism: two registries fed the same log + feedback write the same route versions."""
    results = []
    for i in range(2):
        import sparkscore as ss

        reg = ss.Registry(tmp_path / f"reg{i}")
        reg.register("m", churn_model(0.8))
        reg.register("m", churn_model(-0.8))
        reg.set_route("m", "ab", {1: 70, 2: 30}, key="id")
        log, fb = tmp_path / f"log{i}", tmp_path / f"fb{i}"
        for arm, version, seed in (("1", 1, 1), ("2", 2, 2)):
            ids, frame, out = write_routed(log, reg.load(f"m/{version}"), 100, arm, version, seed)
            write_feedback(fb, ids, (frame["age"] > 0).astype(int).tolist())
        results.append(bandit.update_from_log(reg, "m@ab", str(log), str(fb), policy="thompson").route)
    assert results[0].weights == results[1].weights
    assert results[0].policy["state"] == results[1].policy["state"]


def test_online_items_update_and_bad_items(registry):
    registry.register("m", regressor(0.0))
    registry.register("m", regressor(3.0))
    registry.set_route("m", "ab", {1: 50, 2: 50}, key="id")
    items = [{"request_id": f"q{i}", "arm": "1" if i % 2 else "2", "prediction": 1.0 if i % 2 else 4.0, "label": 1.5}
             for i in range(20)]
    up = bandit.update_from_items(registry, "m@ab", items, policy="exp3", scale=2.0, loss="squared")
    assert up.stats == {"1": ArmStats(10, 10 * 0.0625), "2": ArmStats(10, 10 * 1.0)}  # (0.5/2)^2; min((2.5/2)^2, 1)
    assert up.route.weights["1"] > up.route.weights["2"] and up.route.policy["window"]["requests"] == 20
    assert bandit.replay(registry, "m", "ab", 2) == up.route.weights
    for bad, match in (([{"request_id": "x", "arm": "9", "prediction": 1, "label": 1}], "no traffic"),
                       ([{"request_id": "x", "arm": "1", "label": 1}], "no 'prediction'"),
                       ([{"request_id": "x", "arm": "1", "prediction": "a", "label": 1}], "must be numbers"),
                       ([], "non-empty")):
        with pytest.raises(BanditError, match=match):
            bandit.update_from_items(registry, "m@ab", bad)


# ---------------------------------------------------------------------------- CLI and serve
def test_cli_route_update(registry, tmp_path):
    from typer.testing import CliRunner

    from sparkscore.cli import app

    kind, registry, log, fb = make_routed("binary", registry, tmp_path)
    res = CliRunner().invoke(app, ["--registry", str(registry.root), "route", "update", "m@ab", "--log", log,
                                   "--feedback", fb, "--policy", "exp4", "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.output)
    assert doc["version"] == 2 and doc["policy"] == "exp4" and sum(doc["weights"].values()) == 10000
    assert registry.route("m", "ab").policy["params"]["policy"] == "exp4"
    # an online version in between does not make the next batch update count the same labels again
    bandit.update_from_items(registry, "m@ab", [{"request_id": "q", "arm": "1", "prediction": 1, "label": 1}])
    with pytest.raises(BanditError, match="newer than the last update"):
        bandit.update_from_log(registry, "m@ab", log, fb)


def test_serve_feedback_endpoint(registry):
    from tests.serving.conftest import serving

    registry.register("m", churn_model(0.8))
    registry.register("m", churn_model(-0.8))
    registry.set_route("m", "ab", {1: 50, 2: 50}, key="id")

    async def go():
        async with serving(registry) as (server, client):
            items = [{"request_id": f"q{i}", "arm": str(1 + i % 2), "prediction": 1, "label": 1 if i % 2 == 0 else 0}
                     for i in range(40)]
            r = await client.post("/v2/routes/m@ab/feedback", json={"feedback": items, "policy": "exp3"})
            assert r.status_code == 200, r.text
            doc = r.json()
            assert doc["route_version"] == 2 and doc["weights"]["1"] > doc["weights"]["2"]
            bad = [await client.post("/v2/routes/m@ab/feedback", json=body) for body in
                   ({"feedback": [{"request_id": "x"}]}, {"feedback": "no"}, [1, 2],
                    {"feedback": [items[0]] * (bandit.MAX_ITEMS + 1)})]
            assert [b.status_code for b in bad] == [400, 400, 400, 400]
            missing = await client.post("/v2/routes/m@nope/feedback", json={"feedback": items})
            assert missing.status_code == 404
            return registry.route("m", "ab").version
    assert asyncio.run(go()) == 2
