"""A fused 4-GLM mean ensemble vs one GLM on DuckDB (issue 16 item 6, target <= 1.1x).

    python bench/bench_ensembles.py            # 1M rows, writes bench/results/ensembles.{json,md}
    python bench/bench_ensembles.py --quick    # 100k rows, stdout only

Models (8 numeric features): one LinearRegression on all of them, and a ``mean`` ensemble of four
linear regressors on overlapping 5-feature subsets, registered with ``register_ensemble``.  The
ensemble fuses into one 8-feature GLM (weighted sums of coefficients and intercepts) at planning
time, so DuckDB runs it as the same inlined SQL arithmetic as the single GLM.  For context the
script also times the four members as four PREDICT calls averaged in SQL (``stack_linear`` /
``inline_models`` then run them as four expressions) and the ensemble with every rewrite after
``bind_models`` disabled (one UDF running the fused GLM kernel).  Each path is the best of
``--repeats`` runs of ``SELECT sum(...) FROM t``; the load average is recorded before and after,
since the machine is shared.
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

FEATURES = [f"x{i}" for i in range(8)]
SUBSETS = [FEATURES[0:5], FEATURES[1:6], FEATURES[2:7], FEATURES[3:8]]


def loadavg() -> list[float]:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def setup(n_rows: int, reg: ss.Registry) -> tuple[duckdb.DuckDBPyConnection, pd.DataFrame]:
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(n_rows, len(FEATURES))), columns=FEATURES)
    y = X.to_numpy() @ np.linspace(-1, 1, len(FEATURES)) + rng.normal(0, 0.1, n_rows)
    sample = slice(0, 20_000)
    reg.register("one_glm", LinearRegression().fit(X[sample], y[sample]))
    for i, cols in enumerate(SUBSETS):
        reg.register(f"member{i}", LinearRegression().fit(X[cols][sample], y[sample]))
    reg.register_ensemble("glm_ens", [f"member{i}/1" for i in range(len(SUBSETS))], "mean")
    con = duckdb.connect()
    con.register("frame", X)
    con.execute("CREATE TABLE t AS SELECT * FROM frame")
    con.unregister("frame")
    return con, X


def timed(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run(n_rows: int, repeats: int) -> dict:
    reg = ss.Registry(tempfile.mkdtemp(prefix="bench-ensembles-"))
    con, X = setup(n_rows, reg)
    members = " + ".join(f"PREDICT('member{i}', *)" for i in range(len(SUBSETS)))
    paths = {
        "one GLM": ("SELECT sum(PREDICT('one_glm', *)) FROM t", ()),
        "fused 4-GLM mean ensemble": ("SELECT sum(PREDICT('glm_ens', *)) FROM t", ()),
        "4 GLM PREDICTs averaged in SQL": (f"SELECT sum(({members}) / 4.0) FROM t", ()),
        "fused ensemble as one UDF (rewrites off)": (
            "SELECT sum(PREDICT('glm_ens', *)) FROM t",
            ("prune_model_inputs", "prune_by_predicates", "factorize_linear", "stack_linear", "inline_models")),
    }
    results, sums = {}, {}
    for name, (query, disabled) in paths.items():
        ss.duckdb.sql(con, query, registry=reg, disable_rules=disabled).fetchall()  # plan, compile, warm
        seconds = timed(lambda: ss.duckdb.sql(con, query, registry=reg, disable_rules=disabled).fetchall(), repeats)
        sums[name] = ss.duckdb.sql(con, query, registry=reg, disable_rules=disabled).fetchall()[0][0]
        results[name] = {"seconds": round(seconds, 4), "rows_per_s": round(n_rows / seconds)}
    base = results["one GLM"]["seconds"]
    for entry in results.values():
        entry["vs one GLM"] = round(entry["seconds"] / base, 3)
    plan = str(ss.explain(paths["fused 4-GLM mean ensemble"][0], engine=con, registry=reg))
    fused_line = next((line.strip() for line in plan.splitlines() if "ensemble glm_ens/1" in line), "")
    agree = abs(sums["fused 4-GLM mean ensemble"] - sums["4 GLM PREDICTs averaged in SQL"]) <= 1e-9 * max(
        1.0, abs(sums["4 GLM PREDICTs averaged in SQL"])) * n_rows
    return {"results": results, "explain": fused_line, "fused_equals_members": bool(agree)}


def to_markdown(doc: dict) -> str:
    out = [f"# Fused 4-GLM mean ensemble vs one GLM on DuckDB ({doc['rows']:,} rows)", "",
           f"Load average before / after: {doc['loadavg_before']} / {doc['loadavg_after']} on {doc['cpus']} cores "
           "(the machine is shared with other jobs: absolute figures are noisy, the ratio within one run is the "
           "signal). Target: fused ensemble <= 1.1x one GLM.", "",
           f"EXPLAIN: `{doc['explain']}`", "",
           "| path | seconds (best of %d) | rows/s | vs one GLM |" % doc["repeats"], "|---|---|---|---|"]
    for name, r in doc["results"].items():
        out.append(f"| {name} | {r['seconds']} | {r['rows_per_s']:,} | {r['vs one GLM']}x |")
    ratio = doc["results"]["fused 4-GLM mean ensemble"]["vs one GLM"]
    out += ["", f"Fused ensemble / one GLM: **{ratio}x** ({'met' if ratio <= 1.1 else 'missed'}); the fused sum "
            f"equals the four members averaged: {doc['fused_equals_members']}.", ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k rows, stdout only")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    opts = parser.parse_args()
    n_rows = opts.rows or (100_000 if opts.quick else 1_000_000)
    before = loadavg()
    found = run(n_rows, opts.repeats)
    doc = {"benchmark": "ensembles", "rows": n_rows, "repeats": opts.repeats, "cpus": os.cpu_count(),
           "python": platform.python_version(), "duckdb": duckdb.__version__, "loadavg_before": before,
           "loadavg_after": loadavg(), **found}
    print(json.dumps(doc, indent=2))
    if not opts.quick:
        opts.out.mkdir(parents=True, exist_ok=True)
        (opts.out / "ensembles.json").write_text(json.dumps(doc, indent=2) + "\n")
        (opts.out / "ensembles.md").write_text(to_markdown(doc))


if __name__ == "__main__":
    main()
