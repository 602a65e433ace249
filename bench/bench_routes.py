"""Routes (issue 16 item 6): a routed query's cost on DuckDB, and bandit regret on a drifting stream.

    python bench/bench_routes.py            # 2M rows + 200-window replay -> bench/results/routes.{json,md}
    python bench/bench_routes.py --quick    # 100k rows + 40 windows, prints only (CI smoke run)

**Cost.** Two LightGBM binary classifiers (100 trees, 31 leaves, 8 features; versions 1 and 2 of
``gbm``) behind the route ``gbm@ab`` (50/50 by ``id``).  On one DuckDB connection and thread count:

* ``one model``: ``SELECT sum(PREDICT('gbm/1', *)) FROM t``;
* ``route``: ``SELECT sum(PREDICT('gbm@ab', *)) FROM t`` -- the bucket in SQL, each row scored by
  its own arm only, both arms in one routed UDF call per DuckDB chunk (target <= 1.3x one model);
* ``route, one UDF per arm``: the same CASE with each arm its own UDF in its branch (the plan
  before the routed UDF: each UDF gets about half of every chunk);
* ``both arms``: ``SELECT sum(PREDICT('gbm/1', *)), sum(PREDICT('gbm/2', *)) FROM t`` -- what scoring
  every arm on every row would cost (the 2x the route avoids);
* ``bucket only``: ``SELECT sum(<bucket SQL>) FROM t``: what the hash costs alone.

**Regret.** A synthetic stream of ``windows`` x ``rows`` labelled requests over three arms whose
0/1-loss rates drift (arm ``a`` is best first and degrades abruptly at the middle, ``c`` improves
gradually from a third to two thirds of the stream, ``b`` is constant).  Each window: the current
route version's split assigns fresh keys with the route's own hash (:func:`routes.bucket`), each
row's loss is drawn from its arm's rate (seeded), and the bandit writes the next route version from
the window's per-arm ``(n, loss_sum)`` (:func:`bandit.apply`, the function ``route update`` and
the serve endpoint call).  Regret is in expected loss (rows x the arm's rate, so the draw's noise
does not enter): the policy's total minus the best fixed arm's (the arm with the lowest total in
hindsight), minus uniform's (1/3 each), and minus the per-window best arm's (dynamic regret).
Every policy runs with the default floor (500 basis points per arm: 15% of traffic explores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import sparkscore as ss  # noqa: E402
from sparkscore.ir import LinearModel, Model, Signature  # noqa: E402
from sparkscore.monitor import bandit  # noqa: E402
from sparkscore.registry import routes  # noqa: E402

FEATURES = [f"x{i}" for i in range(8)]
ARMS = ("a", "b", "c")
POLICIES = {"exp3": {"policy": "exp3"}, "exp4": {"policy": "exp4"}, "thompson": {"policy": "thompson"},
            "exp3 decay 0.9": {"policy": "exp3", "decay": 0.9},
            "thompson decay 0.9": {"policy": "thompson", "decay": 0.9}}


def median(values: list[float]) -> float:
    return float(np.median(values))


# ---------------------------------------------------------------------------- cost
def cost(n_rows: int, repeats: int, threads: int) -> dict:
    """Rounds of every query in turn (interleaved, so a change of the machine's load hits each alike),
    the median of ``repeats`` rounds per query, and the load average before each round."""
    import lightgbm
    from sqlglot import exp

    from sparkscore.optimizer.route_models import bucket_sql, key_text_sql

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(n_rows, len(FEATURES))), columns=FEATURES)
    y = (X.x0 + 0.5 * X.x1 * X.x2 - 0.3 * X.x3 + rng.normal(0, 0.5, n_rows) > 0).astype(int).to_numpy()
    reg = ss.Registry(tempfile.mkdtemp(prefix="bench-routes-"))
    for seed in (1, 2):
        part = slice(seed * 10_000, seed * 10_000 + 20_000)
        gbm = lightgbm.LGBMClassifier(n_estimators=100, num_leaves=31, verbose=-1, n_jobs=1, random_state=seed)
        reg.register("gbm", gbm.fit(X[part], y[part]), feature_names=FEATURES)
    route = reg.set_route("gbm", "ab", {1: 50, 2: 50}, key="id")
    con = duckdb.connect(config={"threads": threads})
    X.insert(0, "id", np.arange(n_rows, dtype=np.int64))
    con.register("x_frame", X)
    con.sql("CREATE TABLE t AS SELECT * FROM x_frame")
    con.unregister("x_frame")
    ss.duckdb.install(con, reg)  # gbm_v1 / gbm_v2 for the plain-SQL forms below
    text, _ = key_text_sql(exp.column("id"), "BIGINT", "duckdb", route.ref)
    bucket = bucket_sql(route.salt, text, "duckdb").sql("duckdb")
    args = ", ".join(FEATURES)
    boundary, first = next((end, label) for start, end, label in route.ranges if start == 0)
    assert (first, route.ranges[-1][1]) == (route.arms[0].label, 10_000) and len(route.ranges) == 2, route.ranges
    queries = {"one model": "SELECT sum(PREDICT('gbm/1', *)) FROM t",
               "route": "SELECT sum(PREDICT('gbm@ab', *)) FROM t",
               # the plan before one routed UDF per route: each arm its own UDF in the CASE branch
               "route, one UDF per arm": f"SELECT sum(CASE WHEN {bucket} < {boundary} THEN gbm_v1({args}) "
                                         f"ELSE gbm_v2({args}) END) FROM t",
               "both arms": "SELECT sum(PREDICT('gbm/1', *)), sum(PREDICT('gbm/2', *)) FROM t",
               "bucket only": f"SELECT sum({bucket}) FROM t"}

    def run(q: str):
        return (ss.duckdb.sql(con, q, reg) if "PREDICT" in q else con.sql(q)).fetchall()

    for q in queries.values():  # warm: load, compile
        run(q.replace("FROM t", "FROM (SELECT * FROM t LIMIT 1000)"))
    times: dict[str, list[float]] = {k: [] for k in queries}
    loads = []
    for _ in range(repeats):
        loads.append(_loadavg())
        for k, q in queries.items():
            start = time.perf_counter()
            run(q)
            times[k].append(time.perf_counter() - start)
    seconds = {k: median(v) for k, v in times.items()}
    out = {k: {"seconds": round(s, 4), "rows_per_s": round(n_rows / s), "rounds": [round(v, 3) for v in times[k]]}
           for k, s in seconds.items()}
    out["loadavg_per_round"] = loads
    for k in ("route", "route, one UDF per arm", "both arms", "bucket only"):
        out[f"{k} / one model"] = round(seconds[k] / seconds["one model"], 3)
    out["route / one model, per round"] = [round(r / o, 3) for r, o in zip(times["route"], times["one model"])]
    return out


# ---------------------------------------------------------------------------- regret
def rates(t: int, windows: int) -> np.ndarray:
    """0/1-loss rates of arms a, b, c in window ``t`` (module docstring)."""
    a = 0.25 if t < windows // 2 else 0.45
    lo, hi = windows / 3, 2 * windows / 3
    c = 0.45 - 0.2 * min(max((t - lo) / (hi - lo), 0.0), 1.0)
    return np.array([a, 0.35, c])


def tiny_glm(shift: float) -> Model:
    return Model(LinearModel(np.array([1.0]), [shift], "identity"), Signature.from_names(["x"]), task="regression")


def replay(name: str, params: dict, windows: int, rows: int, seed: int = 7) -> dict:
    reg = ss.Registry(tempfile.mkdtemp(prefix="bench-bandit-"))
    for i, arm in enumerate(ARMS):
        reg.register("m", tiny_glm(float(i)))
        reg.set_alias("m", arm, i + 1)
    route = reg.set_route("m", "ab", {a: w for a, w in zip(ARMS, (3334, 3333, 3333))}, key="id")
    params = dict(params)
    policy = params.pop("policy")
    p, restart = bandit._params_of(route, policy, params)
    rng = np.random.default_rng(seed)
    expected, shares_seen = 0.0, []
    per_arm_total = np.zeros(len(ARMS))
    uniform = dynamic = 0.0
    t0 = time.perf_counter()
    for t in range(windows):
        mu = rates(t, windows)
        keys = range(t * rows, (t + 1) * rows)
        owner = np.empty(routes.BUCKETS, dtype=np.int64)
        for start, end, label in route.ranges:
            owner[start:end] = ARMS.index(label)
        arm_of = owner[np.fromiter((routes.bucket(route.salt, k) for k in keys), np.int64, rows)]
        loss = (rng.random(rows) < mu[arm_of]).astype(np.float64)
        counts = np.bincount(arm_of, minlength=len(ARMS))
        expected += float(counts @ mu)
        per_arm_total += rows * mu
        uniform += rows * float(mu.mean())
        dynamic += rows * float(mu.min())
        shares_seen.append([route.weights.get(a, 0) for a in ARMS])
        stats = {a: bandit.ArmStats(int(counts[i]), float(loss[arm_of == i].sum())) for i, a in enumerate(ARMS)
                 if counts[i]}
        up = bandit.apply(reg, route, p, restart, stats, {"source": "bench", "window": t})
        route, restart = up.route, False
    elapsed = time.perf_counter() - t0
    assert bandit.replay(reg, "m", "ab", route.version) == route.weights  # the last decision replays
    best = float(per_arm_total.min())
    s = np.array(shares_seen) / 100.0
    half = windows // 2
    return {"policy": name, "params": {"policy": policy, **params}, "expected_loss": round(expected, 1),
            "regret_vs_best_fixed": round(expected - best, 1), "best_fixed_arm": ARMS[int(per_arm_total.argmin())],
            "regret_vs_uniform": round(expected - uniform, 1), "dynamic_regret": round(expected - dynamic, 1),
            "mean_share_percent_first_half": [round(float(v), 1) for v in s[:half].mean(axis=0)],
            "mean_share_percent_second_half": [round(float(v), 1) for v in s[half:].mean(axis=0)],
            "route_versions": route.version, "seconds": round(elapsed, 2)}


def regret(windows: int, rows: int) -> dict:
    mus = np.array([rates(t, windows) for t in range(windows)])
    results = [replay(name, params, windows, rows) for name, params in POLICIES.items()]
    return {"windows": windows, "rows_per_window": rows, "arms": list(ARMS),
            "mean_rates": [round(float(v), 4) for v in mus.mean(axis=0)],
            "best_fixed_expected_loss": round(float(rows * mus.sum(axis=0).min()), 1),
            "uniform_expected_loss": round(float(rows * mus.mean(axis=1).sum()), 1), "policies": results}


def to_markdown(doc: dict) -> str:
    c, r = doc["cost"], doc["regret"]
    lines = [f"# Routes: cost on DuckDB ({doc['config']['rows']:,} rows, {doc['config']['threads']} threads) "
             "and bandit regret", "", doc["note"], "", f"load average at start: {doc['machine']['loadavg_start']}, "
             f"at end: {doc['machine']['loadavg_end']}", "", "| query | median seconds | rows/s | rounds (s) | / one model |",
             "|---|---|---|---|---|"]
    for k in ("one model", "route", "route, one UDF per arm", "both arms", "bucket only"):
        ratio = "1" if k == "one model" else f"{c[f'{k} / one model']}x"
        lines.append(f"| {k} | {c[k]['seconds']} | {c[k]['rows_per_s']:,} | {c[k]['rounds']} | {ratio} |")
    lines += ["", f"route / one model: **{c['route / one model']}x** (target <= 1.3x; per round "
              f"{c['route / one model, per round']}); both arms / one model: {c['both arms / one model']}x", "",
              f"load average before each round: {c['loadavg_per_round']}", "",
              f"## Regret on a drifting stream ({r['windows']} windows x {r['rows_per_window']} rows, arms "
              f"{', '.join(r['arms'])}, mean 0/1-loss rates {r['mean_rates']})", "",
              f"best fixed arm's expected loss {r['best_fixed_expected_loss']}, uniform's {r['uniform_expected_loss']}",
              "", "| policy | expected loss | regret vs best fixed | vs uniform | dynamic regret | "
              "shares % 1st half (a,b,c) | 2nd half |", "|---|---|---|---|---|---|---|"]
    for p in r["policies"]:
        lines.append(f"| {p['policy']} | {p['expected_loss']} | {p['regret_vs_best_fixed']} | {p['regret_vs_uniform']} | "
                     f"{p['dynamic_regret']} | {p['mean_share_percent_first_half']} | "
                     f"{p['mean_share_percent_second_half']} |")
    lines += ["", "## Reading", "", *FINDINGS]
    return "\n".join(lines) + "\n"


#: what the 2M-row runs showed: the committed one (session 3, quiet machine, load 0.4-2.2), a second
#: quiet run of 5 rounds just after it, and the loaded run before them (load 19-30)
FINDINGS = [
    "- **The route costs 1.35x one model on the quiet machine (median of 3 interleaved rounds; per round",
    "  1.35x, 1.52x, 1.23x; a second quiet run of 5 rounds: 1.40x, per round 1.32-1.51x): the 1.3x target",
    "  is missed by 4-8%.**  Both arms on every row cost 1.83-1.91x, so each row is scored by its own arm",
    "  only.  This session changed two things (exactness unchanged): (1) on DuckDB the arms left as UDFs",
    "  share ONE routed function per route (arm index first; it splits each chunk by arm, encodes it once,",
    "  one kernel call per arm on its rows); (2) the bucket reads `md5_number`'s digest bytes with shifts",
    "  and masks under one COALESCE instead of parsing `md5()`'s hex (same buckets: the 50 vectors and the",
    "  1M-key test pass): bucket alone is 0.08x one model (0.30 s at 2M rows; 0.35 s -> 0.15 s CPU at",
    "  500k keys; wrapped in `CASE WHEN text IS NULL` it costs 0.9 s because DuckDB does not share the",
    "  eight `md5_number()` calls inside a CASE branch).  (1) did not pay: the hand-written plan with one",
    "  installed UDF per arm in the CASE (`route, one UDF per arm`, same bucket, no planning) measured",
    "  1.27x and 1.30x in the two quiet runs.  Per 2,048-row chunk the tree kernel is most of the time;",
    "  two half-chunks through two different models cost more kernel time than one full chunk of one",
    "  model, however they are called, and batching rows across DuckDB chunks is not possible from a",
    "  scalar UDF (the `batch` path of bench_duckdb_udf does it outside SQL).  The loaded run before",
    "  (load 19-30) gave 1.45x / 1.41x for the same two forms.",
    "- **Regret.** The three arms have the same mean loss over the stream (0.35), so the best fixed arm and",
    "  uniform are alike; the stream's drift is what a policy can exploit.  Without forgetting, Exp3, Exp4",
    "  and Thompson lock onto arm a in the first half (87-89% of traffic) and stay there after a degrades",
    "  (their accumulated evidence outweighs 100 windows of new feedback): regret ~0-190 vs the best fixed",
    "  arm.  With `decay=0.9` per update they follow the drift (75-82% on c in the second half) and beat the",
    "  best fixed arm by ~20% of its loss (-6,913 for Exp3, -7,281 for Thompson); Exp4's Hedge step has the",
    "  same expectation as Exp3's importance-weighted one and gives nearly the same figures here.  The",
    "  default floor (5% per arm, 15% of traffic exploring) bounds how close any policy gets to the",
    "  per-window best arm (dynamic regret).",
]


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ")[:3].__str__()
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k rows, 40 windows, one repeat (CI smoke run)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--part", choices=("all", "cost", "regret"), default="all")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    opts = parser.parse_args()
    n_rows, repeats, windows, rows = (100_000, 1, 40, 300) if opts.quick else (2_000_000, 3, 200, 500)
    load0 = _loadavg()
    doc = {"benchmark": "routes",
           "config": {"rows": n_rows, "repeats": repeats, "threads": opts.threads,
                      "gbm": "2 x LightGBM binary, 100 trees, 31 leaves, 8 features; route 50/50 by id"},
           "note": "Measured on a 2-core VM shared with 7 other jobs running tests (see the load averages): "
                   "absolute times are noisy; the ratio of queries within one round is the signal (rounds "
                   "interleave the queries; the table gives each query's median over the rounds).  Regret "
                   "figures are deterministic (seeded) and do not depend on the load.",
           "cost": cost(n_rows, repeats, opts.threads) if opts.part in ("all", "cost") else None,
           "regret": regret(windows, rows) if opts.part in ("all", "regret") else None}
    doc["machine"] = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                      "duckdb": duckdb.__version__, "loadavg_start": load0, "loadavg_end": _loadavg()}
    print(json.dumps(doc, indent=2))
    if not opts.quick and opts.part == "all":
        opts.out.mkdir(parents=True, exist_ok=True)
        (opts.out / "routes.json").write_text(json.dumps(doc, indent=2) + "\n")
        (opts.out / "routes.md").write_text(to_markdown(doc))


if __name__ == "__main__":
    main()
