"""One monitor run, before / after the scored projection is materialized once (issue 14, "the model
is scored once"): 200k rows x 20 features on DuckDB, a LightGBM model large enough to run as a UDF
(not inlined), drift against the stored training profile with two slice specs and labels.

Run it once per code tree (``PYTHONPATH`` picks the tree) and compare: it prints one JSON line with
the wall time of ``ss.monitor.drift`` (median of ``--repeat``), the rows the model scored (counted
through ``SPARKSCORE_SCORE_LOG``), peak RSS and the load average before and after::

    PYTHONPATH=/tmp/base python3 bench/bench_monitor_scan.py --label before
    PYTHONPATH=$PWD      python3 bench/bench_monitor_scan.py --label after
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def frame(n: int, d: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(rng.normal(size=(n, d)), columns=[f"f{i}" for i in range(d)])
    df["region"] = rng.choice(["EU", "US", "APAC"], n)
    df["y"] = (df.f0 + 0.5 * df.f1 - 0.3 * df.f2 + rng.normal(0, 1, n) > 0).astype(int)
    return df


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--label", default="run")
    ap.add_argument("--no-slices", action="store_true", help="no --slice specs (isolates the scoring from per-slice sketches)")
    args = ap.parse_args()

    import lightgbm as lgb

    import sparkscore as ss

    train, batch = frame(20_000, args.features, 0), frame(args.rows, args.features, 1)
    features = [f"f{i}" for i in range(args.features)]
    native = lgb.LGBMClassifier(n_estimators=100, num_leaves=31, num_threads=1, verbose=-1).fit(train[features], train.y)
    root = Path(tempfile.mkdtemp(prefix="bench_monitor_scan_"))
    reg = ss.Registry(root / "registry")
    reg.register("scan", native, training_data=train, training_labels="y", profile=True)
    log = root / "scored.log"
    os.environ["SPARKSCORE_SCORE_LOG"] = str(log)
    load_before = open("/proc/loadavg").read().split()[:3]
    times, scored = [], []
    for _ in range(args.repeat):
        log.write_text("")
        t0 = time.perf_counter()
        ss.monitor.drift("scan/1", batch, registry=reg, labels="y", slices=[] if args.no_slices else ["region", "f0 >= 1"])
        times.append(time.perf_counter() - t0)
        scored.append(sum(int(line.split()[1]) for line in log.read_text().splitlines()))
    print(json.dumps({"label": args.label, "slices": not args.no_slices, "rows": args.rows, "features": args.features,
                      "drift_s_median": round(statistics.median(times), 3), "drift_s": [round(t, 3) for t in times],
                      "rows_scored_per_run": scored, "peak_rss_mib": round(resource.getrusage(
                          resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "loadavg_before": load_before, "loadavg_after": open("/proc/loadavg").read().split()[:3]}))


if __name__ == "__main__":
    main()
