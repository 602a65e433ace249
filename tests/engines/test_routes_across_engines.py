"""Routes, ensembles and feedback behave identically on DuckDB, Spark and serving (issue #16, "Done when").

One route over a plain GLM arm and an *ensemble* arm (a registered weighted ensemble of two versions),
with a shadow arm, scored on ~1k keys by each engine's own path (the DuckDB batch job, the Spark
batch job, ``sparkscore serve``), then updated from the same labels by that engine's feedback path
(``route update`` on the prediction log on DuckDB and on Spark, ``POST /v2/routes/{ref}/feedback`` in
serve).  Every engine is checked against ONE oracle (numpy: the route's own arm function, each
arm's ``Model.predict_proba``, the bandit's pure update), so arms, values and the feedback-updated
weights are the same on all three.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import sparkscore as ss
from sparkscore.monitor import bandit, predlog
from tests.engines.test_batch import churn_model

deltalake = pytest.importorskip("deltalake")

ENGINES = ["duckdb", pytest.param("spark", marks=pytest.mark.spark), "serving"]
ROUTE = "churn@ab"
KEYS = 1000
POLICY = bandit.PolicyParams("exp3", eta=0.05)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The registry (route churn@ab: prod = v1 60%, ens = v3 40% (weighted ensemble of v1, v2); shadow v2),
    the input file, and the truth labels."""
    root = tmp_path_factory.mktemp("routes_across")
    reg = ss.Registry(root / "registry")
    reg.register("churn", churn_model(0.8))
    reg.register("churn", churn_model(-0.5))
    reg.register_ensemble("churn", ["churn/1", "churn/2"], "weighted", weights=[0.25, 0.75])
    reg.set_alias("churn", "prod", 1)
    reg.set_alias("churn", "ens", 3)
    reg.set_alias("churn", "shadow", 2)
    reg.set_route("churn", "ab", {"prod": 60, "ens": 40}, key="customer_id", shadow=["shadow"])
    rng = np.random.default_rng(11)
    keys = pd.array(np.arange(KEYS) * 31 - 4000, dtype="Int64")
    keys[::97] = pd.NA
    frame = pd.DataFrame({"rid": np.arange(KEYS), "customer_id": keys, "age": rng.normal(size=KEYS),
                          "spend": rng.normal(size=KEYS)})
    frame.to_parquet(root / "input.parquet")
    labels = (frame.age + 0.3 * rng.normal(size=KEYS) > 0).astype(int).tolist()
    return {"root": root, "registry": reg, "input": str(root / "input.parquet"), "frame": frame, "labels": labels}


def _oracle(template):
    """(arm, version, P(positive)) per row and the route version 2 the labels must produce."""
    reg, frame = template["registry"], template["frame"]
    route = reg.route("churn", "ab")
    arms = [route.arm_of_key(None if pd.isna(k) else int(k)) for k in frame.customer_id]
    version_of = {"prod": 1, "ens": 3}
    versions = [version_of[a] for a in arms]
    inputs = frame[["age", "spend"]]
    proba = {v: reg.load(f"churn/{v}").predict_proba(inputs, backend="numpy") for v in (1, 3)}
    p = np.array([proba[v][i, 1] for i, v in enumerate(versions)])
    stats: dict[str, list] = {}
    for i, (arm, v) in enumerate(zip(arms, versions)):
        predicted = reg.load(f"churn/{v}").classes[int(np.argmax(proba[v][i]))]
        n_s = stats.setdefault(arm, [0, 0.0])
        n_s[0] += 1
        n_s[1] += float(predicted != template["labels"][i])
    shares = {a.label: a.buckets / 10_000 for a in route.arms if a.buckets}
    state = bandit.update_state(POLICY, bandit.initial_state(POLICY, shares), shares,
                                {a: bandit.ArmStats(n, s) for a, (n, s) in stats.items()})
    weights = bandit.basis_points(bandit.policy_shares(POLICY, state, f"{ROUTE}:2"), POLICY.floor)
    return arms, versions, p, state, weights


def _feedback(path, template) -> str:
    from deltalake import write_deltalake

    ids = [str(i) for i in template["frame"].rid]
    write_deltalake(str(path), pa.table({"request_id": pa.array(ids), "ts": pa.array(
        [predlog.now()] * len(ids), predlog.TS_TYPE), "label": pa.array(template["labels"])}))
    return str(path)


def _batch_job(engine: str, reg, template, tmp_path, request):
    out, log = tmp_path / "out", tmp_path / "log"
    if engine == "duckdb":
        from sparkscore.engines.batch import score_files

        score_files(ROUTE, template["input"], str(out), registry=reg, job_id="x", with_arm=True,
                    log=predlog.LogSpec(str(log), 1.0, 10 * KEYS, "rid"))
        update = bandit.update_from_log(reg, ROUTE, str(log), _feedback(tmp_path / "fb", template),
                                        policy="exp3", eta=POLICY.eta)
    else:
        from sparkscore.engines import feedback

        spark = request.getfixturevalue("spark")
        spec = importlib.util.spec_from_file_location("score_job", REPO / "jobs" / "score.py")
        job = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(job)
        args = job.parse_args(["--model", ROUTE, "--input", template["input"], "--output", str(out), "--job-id", "x",
                               "--registry", str(reg.root), "--with-arm", "--log", str(log), "--log-fraction", "1",
                               "--log-max-rows", str(10 * KEYS), "--log-id", "rid"])
        assert job.run(spark, args, time.time()) == 0
        update = feedback.update_from_log(spark, reg, ROUTE, str(log), _feedback(tmp_path / "fb", template),
                                          policy="exp3", eta=POLICY.eta)
    rows = deltalake.DeltaTable(str(out)).to_pandas().sort_values("rid", ignore_index=True)
    logged = deltalake.DeltaTable(str(log)).to_pandas()
    assert logged.shadow.sum() == KEYS and set(logged[logged.shadow].version) == {2}  # shadow: logged, not output
    return rows.arm.tolist(), rows.arm_version.tolist(), rows.prediction.to_numpy(), update


def _serving(reg, template):
    from tests.serving.conftest import serving

    frame = template["frame"]
    cols = ["rid", "customer_id", "age", "spend"]
    data = [[int(r), None if pd.isna(k) else int(k), float(a), float(s)] for r, k, a, s in frame[cols].itertuples(index=False)]
    body = json.dumps({"dataframe_split": {"columns": cols, "data": data}})

    async def run():
        async with serving(reg) as (_, client):
            answers = {}
            for kind in ("predict", "proba"):
                r = await client.post(f"/invocations?model={ROUTE}&kind={kind}", content=body,
                                      headers={"content-type": "application/json"})
                assert r.status_code == 200, r.text
                answers[kind] = r.json()
            doc, proba = answers["predict"], answers["proba"]
            assert proba["arms"] == doc["arms"]
            classes = {v: reg.load(f"churn/{v}").classes for v in set(doc["versions"])}
            items = [{"request_id": str(rid), "arm": arm, "prediction": classes[v][int(np.argmax(pr))], "label": y}
                     for rid, arm, v, pr, y in zip(frame.rid, doc["arms"], doc["versions"], proba["predictions"],
                                                   template["labels"])]
            r = await client.post(f"/v2/routes/{ROUTE}/feedback",
                                  json={"feedback": items, "policy": "exp3", "params": {"eta": POLICY.eta}})
            assert r.status_code == 200, r.text
            return doc["arms"], doc["versions"], np.asarray(doc["predictions"], dtype=float)

    arms, versions, p = asyncio.run(run())
    route = reg.route("churn", "ab")
    return arms, versions, p, bandit.Update(route, {}, dict(route.weights), {})


@pytest.mark.parametrize("engine", ENGINES)
def test_arms_values_and_feedback_weights_are_the_same_on_every_engine(engine, template, tmp_path, request):
    if engine == "spark":
        pytest.importorskip("pyspark")
    shutil.copytree(template["root"] / "registry", tmp_path / "registry")  # updates write route versions
    reg = ss.Registry(tmp_path / "registry")
    if engine == "serving":
        arms, versions, p, update = _serving(reg, template)
    else:
        arms, versions, p, update = _batch_job(engine, reg, template, tmp_path, request)
    want_arms, want_versions, want_p, state, weights = _oracle(template)
    assert arms == want_arms and versions == want_versions
    assert set(arms) == {"prod", "ens"}
    np.testing.assert_allclose(p, want_p, rtol=1e-12, atol=1e-12)
    route = update.route
    assert route.version == 2 and route.weights == weights
    np.testing.assert_allclose(route.policy["state"]["log_weights"], state["log_weights"], rtol=0, atol=1e-12)
