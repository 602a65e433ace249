"""Monitoring benchmark: sparkscore drift vs Evidently 0.7 and whylogs 1.6, same data, same machine, one run.

Sections (each records /proc/loadavg when it starts):

* ``agreement`` -- one reference and one current batch small enough for sparkscore's exact path
  (<= 20,000 rows each, so KS / Wasserstein come from the raw values): every value is checked
  against scipy (``ks_2samp``, ``wasserstein_distance``, ``jensenshannon`` on the stored buckets,
  ``chi2_contingency`` and -- a different test, shown for the record -- ``chisquare``), against
  Evidently's stat tests for the metrics whose definitions coincide (KS p-value, normed
  Wasserstein, categorical PSI and JS), and against whylogs' profile statistics (counts, nulls,
  min, max, mean, stddev) and its sketch KS statistic.  Where a definition differs the
  difference is measured and explained in the results md instead.
* ``speed_1m`` -- 1M rows x 50 numeric features (reference and current parquet files):
  sparkscore on DuckDB against the stored training profile and against the reference file, vs
  Evidently's ``DataDriftPreset`` end to end (read both files into pandas + run the report), and
  whylogs (profile both + drift scores).  Each measurement runs in its own child process, so its
  peak RSS (``ru_maxrss``) is its own.
* ``scale_10m`` -- 10M rows x 100 features (float32 parquet, generated once under /tmp) on DuckDB
  with peak RSS, and on Spark local[2].

``--quick`` shrinks every size (the whole run < 60 s, for CI and smoke runs).  Results go to
``bench/results/monitor{,_quick}.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("SPARKSCORE_BENCH_DATA", "/tmp/sparkscore_bench_monitor"))
TOL = 1e-6


# ---------------------------------------------------------------------- helpers
def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
               if line.startswith("MemTotal"))
    versions = {}
    for name in ("sparkscore", "duckdb", "pyspark", "evidently", "whylogs", "scipy", "numpy", "pandas", "pyarrow",
                 "datasketches"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:  # noqa: BLE001 -- a peer not installed is recorded as such
            versions[name] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem / 2**20, 1), "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions, "load_average_at_start": loadavg()}


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM: per address space; ``ru_maxrss`` survives exec on Linux, so a child
    would report its parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def numeric_frame(n: int, features: int, seed: int, shift: int = 0, dtype=np.float64) -> pd.DataFrame:
    """Features on different scales; the first ``shift`` features moved by half a std in the current batch."""
    rng = np.random.default_rng(seed)
    cols = {}
    for j in range(features):
        scale = 1.0 + (j % 7)
        loc = (j % 5) * 10.0 + (0.5 * scale if j < shift else 0.0)
        cols[f"f{j:03d}"] = (rng.standard_normal(n, dtype=np.float32 if dtype == np.float32 else np.float64)
                             * scale + loc).astype(dtype)
    return pd.DataFrame(cols)


def write_parquet(path: Path, n: int, features: int, seed: int, shift: int, dtype, chunk: int = 500_000) -> Path:
    """Written once in row-group chunks (bounded memory), reused by later runs of the same size."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    writer = None
    for start in range(0, n, chunk):
        rows = min(chunk, n - start)
        if dtype == np.float32:  # the large files: numpy straight to Arrow (pandas costs minutes at 10M x 100)
            rng = np.random.default_rng(seed * 1000 + start // chunk)
            block = rng.standard_normal((features, rows), dtype=np.float32)
            scale = (1.0 + np.arange(features) % 7).astype(np.float32)
            loc = ((np.arange(features) % 5) * 10.0 + np.where(np.arange(features) < shift, 0.5 * scale, 0.0))
            block = block * scale[:, None] + loc.astype(np.float32)[:, None]
            table = pa.Table.from_arrays([pa.array(block[j]) for j in range(features)],
                                         names=[f"f{j:03d}" for j in range(features)])
        else:
            table = pa.Table.from_pandas(numeric_frame(rows, features, seed * 1000 + start // chunk, shift, dtype),
                                         preserve_index=False)
        writer = writer or pq.ParquetWriter(tmp, table.schema, compression="snappy")
        writer.write_table(table, row_group_size=min(chunk, 250_000))
    writer.close()
    tmp.rename(path)
    return path


def linear_model(features: int):
    """A linear regression on every feature.  At 50 and 100 features PREDICT is NOT inlined as SQL
    (``OptimizerOptions.inline_max_features`` is 32): it runs as the engine's Arrow UDF, in both reads of the
    scored view (the sketch stream and the aggregate)."""
    from sklearn.linear_model import LinearRegression

    X = numeric_frame(5000, features, 99)
    y = X.to_numpy() @ np.linspace(-1, 1, features) + np.random.default_rng(1).normal(0, 1, len(X))
    return LinearRegression().fit(X, y)


def registry_with(model, name: str, training: Path | pd.DataFrame, root: Path):
    import sparkscore as ss

    reg = ss.Registry(root)
    t = time.perf_counter()
    mv = reg.register(name, model, training_data=str(training) if isinstance(training, Path) else training, profile=True)
    return reg, mv, time.perf_counter() - t


# ---------------------------------------------------------------------- agreement
def agreement(n: int) -> dict:
    """Values on the exact path vs scipy, Evidently and whylogs (see the module docstring)."""
    from scipy import stats
    from scipy.spatial import distance
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    import sparkscore as ss

    numeric = [f"f{j:03d}" for j in range(6)]
    ref = numeric_frame(n, 6, 11)
    cur = numeric_frame(n, 6, 12, shift=3)
    rng = np.random.default_rng(3)
    cats = ["red", "green", "blue", "amber"]
    ref["color"] = rng.choice(cats, n, p=[0.4, 0.3, 0.2, 0.1])
    cur["color"] = rng.choice(cats, n, p=[0.3, 0.3, 0.25, 0.15])
    ref["plan"] = rng.choice(["a", "b"], n, p=[0.7, 0.3])
    cur["plan"] = rng.choice(["a", "b"], n, p=[0.7, 0.3])
    y = (ref[numeric[0]] + (ref.color == "red") > ref[numeric[0]].median()).astype(int)
    ct = ColumnTransformer([("num", StandardScaler(), numeric), ("cat", OneHotEncoder(), ["color", "plan"])])
    native = make_pipeline(ct, LogisticRegression(max_iter=500)).fit(ref, y)
    with tempfile.TemporaryDirectory() as tmp:
        reg = ss.Registry(Path(tmp) / "registry")
        reg.register("agree", native, profile=False)
        t = time.perf_counter()
        result = ss.monitor.drift("agree/1", cur, reference=ref, registry=reg)
        ours_s = time.perf_counter() - t
    rows = {(r.feature, r.metric): r for r in result.rows}
    checks: list[dict] = []

    def check(peer: str, feature: str, metric: str, ours: float, theirs: float, coincide: bool, note: str = "") -> None:
        diff = abs(float(ours) - float(theirs))
        checks.append({"peer": peer, "feature": feature, "metric": metric, "sparkscore": float(ours),
                       "peer_value": float(theirs), "abs_diff": diff, "definitions_coincide": coincide,
                       "agree_1e-6": bool(diff <= TOL * max(1.0, abs(float(theirs)))), "note": note})

    # --- scipy on the exact path
    for f in numeric:
        r, c = ref[f].to_numpy(), cur[f].to_numpy()
        ks = stats.ks_2samp(r, c)
        check("scipy", f, "ks statistic", rows[f, "ks"].value, ks.statistic, True, "ks_2samp")
        check("scipy", f, "ks p-value", rows[f, "ks"].p_value, ks.pvalue, True, "ks_2samp")
        check("scipy", f, "wasserstein (normed)", rows[f, "wasserstein"].value,
              stats.wasserstein_distance(r, c) / np.std(r), True, "wasserstein_distance / np.std(ref)")
        edges = np.asarray(result.reference_profile.column(f).edges)
        bins = len(edges) + 1
        hr = np.bincount(np.searchsorted(edges, r, side="right"), minlength=bins)
        hc = np.bincount(np.searchsorted(edges, c, side="right"), minlength=bins)
        check("scipy", f, "jensen_shannon", rows[f, "jensen_shannon"].value,
              distance.jensenshannon(np.r_[hr, 0] / n, np.r_[hc, 0] / n), True, "jensenshannon on the stored buckets")
    for f in ("color", "plan"):
        vr, vc = ref[f].value_counts(), cur[f].value_counts()
        keys = sorted(vr.index)
        table = np.array([[vr[k] for k in keys], [vc.get(k, 0) for k in keys]])
        chi = stats.chi2_contingency(table, correction=False)
        check("scipy", f, "chi_square statistic", rows[f, "chi_square"].value, chi.statistic, True,
              "chi2_contingency(correction=False): the 2 x K homogeneity test")
        check("scipy", f, "chi_square p-value", rows[f, "chi_square"].p_value, chi.pvalue, True, "chi2_contingency")
        gof = stats.chisquare(table[1], table[0] / table[0].sum() * table[1].sum())
        check("scipy", f, "chi_square p-value vs chisquare()", rows[f, "chi_square"].p_value, gof.pvalue, False,
              "scipy.stats.chisquare = goodness of fit against the reference shares taken as exact")

    # --- Evidently
    evidently_s = None
    try:
        from evidently import DataDefinition, Dataset, Report
        from evidently.metrics import ValueDrift

        dd = DataDefinition(numerical_columns=numeric, categorical_columns=["color", "plan"])
        wanted = [(f, m) for f in numeric for m in ("ks", "wasserstein", "psi", "jensenshannon")]
        wanted += [(f, m) for f in ("color", "plan") for m in ("psi", "jensenshannon", "chisquare")]
        report = Report([ValueDrift(column=f, method=m) for f, m in wanted])
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            snap = report.run(Dataset.from_pandas(cur, data_definition=dd), Dataset.from_pandas(ref, data_definition=dd))
        evidently_s = time.perf_counter() - t
        values = [m["value"] for m in snap.dict()["metrics"]]
        from evidently.legacy.calculations.stattests.utils import get_binned_data
        from evidently.legacy.core import ColumnType

        from sparkscore.monitor import metrics as M

        for (f, m), v in zip(wanted, values):
            if m == "ks":
                check("evidently", f, "ks p-value", rows[f, "ks"].p_value, v, True, "ks_2samp p-value")
            elif m == "wasserstein":
                check("evidently", f, "wasserstein (normed)", rows[f, "wasserstein"].value, v, True,
                      "W1 / np.std(ref) (Evidently floors the std at 0.001)")
            elif f in numeric:
                ours = rows[f, "psi" if m == "psi" else "jensen_shannon"].value
                rp, cp = get_binned_data(ref[f], cur[f], ColumnType.Numerical, 30, False)  # shares, zeros kept
                same_formula = M.psi(rp, cp) if m == "psi" else M.jensen_shannon(rp, cp)
                check("evidently", f, f"{m} (numeric)", ours, v, False,
                      "different buckets: Evidently bins ref+cur on Sturges equal-width edges, sparkscore on the "
                      f"reference deciles + missing; sparkscore's formula on Evidently's buckets gives {same_formula:.12g}")
                zeros = bool((rp == 0).any() or (cp == 0).any())
                check("evidently", f, f"{m} (numeric) formula on Evidently's buckets"
                      + (" (empty buckets)" if zeros and m == "psi" else ""), same_formula, v, not (zeros and m == "psi"),
                      "same buckets, same formula" if not (zeros and m == "psi") else
                      "empty buckets: Evidently fills zero shares with 1e-4 (min/1e6 when a share <= 1e-4) and does "
                      "not renormalise; sparkscore fills 1e-4")
            elif m == "chisquare":
                gof = stats.chisquare(*_gof(ref[f], cur[f]))
                check("evidently", f, "chi_square p-value", rows[f, "chi_square"].p_value, v, False,
                      f"Evidently: goodness of fit (scipy.chisquare, p={gof.pvalue:.12g}); sparkscore: 2 x K homogeneity")
                check("evidently", f, "chi_square p-value vs scipy.chisquare", gof.pvalue, v, True,
                      "Evidently's test reproduced with scipy.stats.chisquare")
            else:
                check("evidently", f, m, rows[f, "psi" if m == "psi" else "jensen_shannon"].value, v, True,
                      "category shares (no unseen / missing values here)")
    except ImportError as exc:
        checks.append({"peer": "evidently", "error": str(exc)})

    # --- whylogs
    whylogs_s = None
    try:
        import whylogs as why
        from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores

        t = time.perf_counter()
        rv, cv = why.log(ref).view(), why.log(cur).view()
        scores = calculate_drift_scores(target_view=cv, reference_view=rv)
        whylogs_s = time.perf_counter() - t
        prof = result.current_profile
        for f in numeric:
            s = cv.get_column(f).to_summary_dict()
            col = prof.column(f)
            check("whylogs", f, "count", col.count, s["counts/n"], True)
            check("whylogs", f, "nulls", col.nulls, s["counts/null"], True)
            check("whylogs", f, "min", col.min, s["distribution/min"], True)
            check("whylogs", f, "max", col.max, s["distribution/max"], True)
            check("whylogs", f, "mean", col.mean, s["distribution/mean"], True)
            check("whylogs", f, "stddev (sample, ddof=1)", col.std * np.sqrt(col.finite / (col.finite - 1)),
                  s["distribution/stddev"], True, "sparkscore stores the population std; scaled by sqrt(n/(n-1))")
            exact = stats.ks_2samp(ref[f], cur[f]).statistic
            check("whylogs", f, "ks statistic (whylogs: KLL at 100 quantiles)", rows[f, "ks"].value,
                  scores[f]["statistic"], False,
                  f"whylogs evaluates |F_ref - F_cur| only at its sketches' quantiles (KLL k=1024); exact {exact:.6g}")
        for f in ("color", "plan"):
            check("whylogs", f, "chi_square p-value", rows[f, "chi_square"].p_value, scores[f]["pvalue"], False,
                  "whylogs: goodness of fit on frequent items with expected counts truncated to int, "
                  "dof = current unique count - 1")
    except ImportError as exc:
        checks.append({"peer": "whylogs", "error": str(exc)})
    coincide = [c for c in checks if c.get("definitions_coincide")]
    return {"rows": n, "features": {"numeric": numeric, "categorical": ["color", "plan"]},
            "methods": sorted({r.method for r in result.rows}), "checks": checks,
            "coinciding_checks": len(coincide), "coinciding_disagreements": sum(not c["agree_1e-6"] for c in coincide),
            "max_abs_diff_coinciding": max((c["abs_diff"] for c in coincide), default=None),
            "seconds": {"sparkscore": ours_s, "evidently": evidently_s, "whylogs": whylogs_s}}


def _gof(ref: pd.Series, cur: pd.Series):
    keys = sorted(set(ref) | set(cur))
    vr, vc = ref.value_counts(), cur.value_counts()
    obs = np.array([vc.get(k, 0) for k in keys], dtype=float)
    exp_ = np.array([vr.get(k, 0) for k in keys], dtype=float) * len(cur) / len(ref)
    return obs, exp_


# ---------------------------------------------------------------------- timed children
PHASES = ("columns", "scored", "sketch", "aggregate")


def time_phases(runner_cls) -> dict:
    """Seconds per Runner call (the sketch stream and the ONE aggregate timed apart), filled as they run."""
    spent: dict = {}
    for name in PHASES:
        original = getattr(runner_cls, name)

        def timed(self, *a, _original=original, _name=name, **k):
            t = time.perf_counter()
            try:
                return _original(self, *a, **k)
            finally:
                spent[_name] = spent.get(_name, 0.0) + time.perf_counter() - t
        setattr(runner_cls, name, timed)
    return spent


def child(task: str, args: dict) -> dict:
    """One measurement in this (fresh) process: seconds and this process's peak RSS."""
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    out: dict = {}
    if task.startswith("sparkscore_"):
        from sparkscore.engines import monitoring

        out["phases_s"] = time_phases(monitoring.SparkRunner if task == "sparkscore_spark" else monitoring.DuckDBRunner)
    if task == "sparkscore_duckdb":
        import sparkscore as ss

        reg = ss.Registry(args["registry"])
        reference = args.get("reference")
        result = ss.monitor.drift(args["ref"], args["current"], reference=reference, registry=reg)
        out = {"drifted": list(result.drifted), "rows": len(result.rows),
               "methods": sorted({r.method for r in result.rows})}
    elif task == "sparkscore_spark":
        from pyspark.sql import SparkSession

        import sparkscore as ss

        spark = (SparkSession.builder.master("local[2]").appName("bench-monitor").config("spark.ui.enabled", "false")
                 .config("spark.sql.shuffle.partitions", "2").config("spark.driver.memory", "4g")
                 .config("spark.sql.execution.arrow.pyspark.enabled", "true").getOrCreate())
        started = time.perf_counter()
        out["spark_start_s"] = started - t0
        reg = ss.Registry(args["registry"])
        result = ss.monitor.drift(args["ref"], spark.read.parquet(args["current"]), engine=spark, registry=reg)
        out.update({"drifted": list(result.drifted), "rows": len(result.rows),
                    "methods": sorted({r.method for r in result.rows}), "drift_s": time.perf_counter() - started})
        spark.stop()
    elif task == "evidently":
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        ref, cur = pd.read_parquet(args["reference"]), pd.read_parquet(args["current"])
        dd = DataDefinition(numerical_columns=list(ref.columns))
        snap = Report([DataDriftPreset()]).run(Dataset.from_pandas(cur, data_definition=dd),
                                              Dataset.from_pandas(ref, data_definition=dd))
        metrics = snap.dict()["metrics"]
        out = {"drifted_count": metrics[0]["value"]["count"], "metrics": len(metrics),
               "methods": sorted({m["metric_name"].split("method=")[1].split(",")[0] for m in metrics[1:]})}
    elif task == "whylogs":
        import whylogs as why
        from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores

        ref, cur = pd.read_parquet(args["reference"]), pd.read_parquet(args["current"])
        scores = calculate_drift_scores(target_view=why.log(cur).view(), reference_view=why.log(ref).view())
        out = {"drifted_count": sum(1 for s in scores.values() if s and s.get("drift_category") == "DRIFT")}
    else:
        raise SystemExit(f"unknown child task {task!r}")
    out.update({"seconds": time.perf_counter() - t0, "peak_rss_mib": peak_rss_mib()})
    return out


DEADLINE: float | None = None  # epoch seconds: no measured process runs past it (--deadline)


class TreeRSS:
    """Samples /proc every ``every_s`` for the RSS of a process and all its descendants (Spark: the Python
    driver, the JVM it starts, and the JVM's Python workers), keeping the peak of their sum and of each kind."""

    def __init__(self, pid: int, every_s: float = 0.5) -> None:
        import threading

        self.pid, self.every_s = pid, every_s
        self.peak_total = 0.0
        self.peak_by_kind: dict = {}
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> list:
        children: dict = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                    children.setdefault(int(fields[1]), []).append(int(entry.name))
                except (OSError, IndexError):
                    continue
        out, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(children.get(pid, ()))
        return out

    def _sample(self) -> None:
        total, kinds = 0.0, {}
        for pid in self._tree():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                name = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            rss = next((int(line.split()[1]) / 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0.0)
            kind = "driver" if pid == self.pid else "jvm" if name == "java" else \
                "python_workers" if name.startswith("python") or name.startswith("pyspark") else "other"
            kinds[kind] = kinds.get(kind, 0.0) + rss
            total += rss
        self.samples += 1
        self.peak_total = max(self.peak_total, total)
        for kind, rss in kinds.items():
            self.peak_by_kind[kind] = max(self.peak_by_kind.get(kind, 0.0), rss)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._sample()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        return {"tree_peak_rss_mib": round(self.peak_total, 1),
                "tree_peak_rss_by_kind_mib": {k: round(v, 1) for k, v in sorted(self.peak_by_kind.items())},
                "rss_samples": self.samples}


def run_child(task: str, args: dict, timeout: float) -> dict:
    la = loadavg()
    if DEADLINE is not None:
        timeout = min(timeout, DEADLINE - time.time())
        if timeout < 10:
            return {"task": task, "error": "not run: the run's --deadline had passed", "loadavg": la}
    cmd = [sys.executable, __file__, "--child", task, json.dumps(args)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    sampler = TreeRSS(proc.pid)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"task": task, "error": f"timed out after {timeout:.0f} s", "loadavg": la, **sampler.stop()}
    wall = time.perf_counter() - t
    tree = sampler.stop()
    if proc.returncode != 0:  # the whole stderr kept on disk: its last line alone hides a JVM's death
        saved = DATA / f"{task}.stderr"
        saved.write_text(stderr)
        causes = [line.strip()[:300] for line in stderr.splitlines() if "Error" in line or "Exception" in line]
        return {"task": task, "error": stderr.strip().splitlines()[-1:] or ["failed"], "causes": causes[:5],
                "stderr": str(saved), "returncode": proc.returncode, "loadavg": la, **tree}
    res = json.loads(stdout.strip().splitlines()[-1])
    res.update({"task": task, "process_wall_s": wall, "loadavg": la, "loadavg_end": loadavg(), **tree})
    print(f"  {task}: {res['seconds']:.1f} s (process {wall:.1f} s), peak RSS {res['peak_rss_mib']:.0f} MiB "
          f"(process tree {tree['tree_peak_rss_mib']:.0f} MiB), load {la[0]:.1f}", flush=True)
    return res


TASKS: set | None = None  # --tasks: the measurements to (re-)run; None = all


def wanted(name: str) -> bool:
    return TASKS is None or name in TASKS


def speed(n: int, features: int, shift: int, timeout: float, work: Path, out: dict | None = None) -> dict:
    ref_path = write_parquet(DATA / f"ref_{n}x{features}.parquet", n, features, 21, 0, np.float64)
    cur_path = write_parquet(DATA / f"cur_{n}x{features}.parquet", n, features, 22, shift, np.float64)
    out = dict(out or {})
    out.update({"rows": n, "features": features, "shifted_features": shift, "loadavg": loadavg(),
                "bytes": {"reference": ref_path.stat().st_size, "current": cur_path.stat().st_size}})
    peers = {"reference": str(ref_path), "current": str(cur_path)}
    for name in ("whylogs", "evidently"):  # the peers first: they need no registry
        if wanted(name):
            out[name] = run_child(name, peers, timeout)
    if wanted("sparkscore_vs_profile") or wanted("sparkscore_vs_reference_file"):
        reg, mv, out["register_with_profile_s"] = registry_with(linear_model(features), "speed", ref_path,
                                                                work / f"reg_{n}x{features}")
        common = {"registry": str(reg.root), "ref": mv.ref, "current": str(cur_path)}
        if wanted("sparkscore_vs_profile"):
            out["sparkscore_vs_profile"] = run_child("sparkscore_duckdb", common, timeout)
        if wanted("sparkscore_vs_reference_file"):
            out["sparkscore_vs_reference_file"] = run_child("sparkscore_duckdb", {**common, "reference": str(ref_path)},
                                                            timeout)
    ev = out.get("evidently", {}).get("seconds")
    for key in ("sparkscore_vs_profile", "sparkscore_vs_reference_file"):
        s = out.get(key, {}).get("seconds")
        out[f"speedup_{key}_over_evidently"] = ev / s if ev and s else None
        wl = out.get("whylogs", {}).get("seconds")
        out[f"speedup_{key}_over_whylogs"] = wl / s if wl and s else None
    return out


def scale(n: int, features: int, ref_rows: int, timeout: float, work: Path, spark: bool,
          out: dict | None = None) -> dict:
    t = time.perf_counter()
    ref_path = write_parquet(DATA / f"ref_{ref_rows}x{features}_f32.parquet", ref_rows, features, 31, 0, np.float32)
    cur_path = write_parquet(DATA / f"cur_{n}x{features}_f32.parquet", n, features, 32, 5, np.float32)
    gen_s = time.perf_counter() - t
    reg, mv, register_s = registry_with(linear_model(features), "scale", ref_path, work / f"reg_{n}x{features}")
    out = dict(out or {})
    out.update({"rows": n, "features": features, "reference_rows": ref_rows, "dtype": "float32 parquet (snappy)",
                "current_bytes": cur_path.stat().st_size, "in_memory_float64_bytes": n * features * 8,
                "generate_or_reuse_s": gen_s, "register_with_profile_s": register_s, "loadavg": loadavg()})
    common = {"registry": str(reg.root), "ref": mv.ref, "current": str(cur_path)}
    if wanted("duckdb"):
        out["duckdb"] = run_child("sparkscore_duckdb", common, timeout)
    if spark and wanted("spark_local2"):
        out["spark_local2"] = run_child("sparkscore_spark", common, timeout)
    return out


# ---------------------------------------------------------------------- report
def markdown(res: dict) -> str:
    m = res["machine"]
    a = res.get("agreement", {})
    lines = [f"# Monitoring benchmark: sparkscore vs Evidently {m['versions'].get('evidently')} and whylogs "
             f"{m['versions'].get('whylogs')}{' (quick)' if res['quick'] else ''}", "",
             f"Run {res['started']} UTC on {m['cpu']} ({m['cores']} cores, {m['memory_gib']} GiB), Python {m['python']}, "
             f"DuckDB {m['versions'].get('duckdb')}, pyspark {m['versions'].get('pyspark')}. The machine was shared "
             f"with other helpers running tests: load average {m['load_average_at_start'][0]:.1f} at the start, "
             f"{m.get('load_average_at_end', [float('nan')])[0]:.1f} at the end (per section below), on 2 cores, so "
             "absolute seconds are inflated for every tool alike; compare ratios.", ""]
    if a:
        lines += ["## (a) Agreement on the exact path", "",
                  f"{a['rows']:,} reference + {a['rows']:,} current rows, 6 numeric (3 shifted) + 2 categorical inputs "
                  f"of a logistic-regression pipeline (load {res['loadavg'].get('agreement', [0])[0]:.1f}); "
                  f"sparkscore methods used: {', '.join(a['methods'])}.", "",
                  f"**{a['coinciding_checks']} checks where the definitions coincide: "
                  f"{a['coinciding_disagreements']} disagree beyond 1e-6 (relative for values > 1); max abs "
                  f"difference {a['max_abs_diff_coinciding']:.3g}.**", "",
                  "| peer | metric | checks | max abs diff | all within 1e-6 | definitions |", "|---|---|---|---|---|---|"]
        groups: dict = {}
        for c in a["checks"]:
            if "error" in c:
                continue
            groups.setdefault((c["peer"], c["metric"], c["definitions_coincide"]), []).append(c)
        for (peer, metric, same), cs in groups.items():
            lines.append(f"| {peer} | {metric} | {len(cs)} | {max(c['abs_diff'] for c in cs):.3g} | "
                         f"{'yes' if all(c['agree_1e-6'] for c in cs) else 'no'} | {'same' if same else 'differ'} |")
        lines += ["", "Definitional differences (rows marked *differ* above):", "",
                  "- **Numeric PSI / Jensen-Shannon**: Evidently bins reference + current together on Sturges "
                  "equal-width edges (>20 distinct values) and fills empty shares with 1e-4 (or min/1e6); sparkscore "
                  "bins on the reference's stored deciles plus a `missing` bucket (so the current batch is binned "
                  "without seeing the reference rows: one scan, and a null burst moves the metric). Same buckets, same "
                  "numbers: sparkscore's formula on Evidently's buckets reproduces Evidently's JS values, and its PSI where no "
                  "bucket is empty (the *same* rows); with empty end buckets (Sturges edges span ref + cur) the "
                  "zero-share rules differ: Evidently substitutes 1e-4 (or min/1e6) without renormalising, "
                  "sparkscore 1e-4 on renormalised shares.",
                  "- **Chi-square**: Evidently (and `scipy.stats.chisquare`) test goodness of fit of the current counts "
                  "against the reference shares taken as exact; sparkscore tests homogeneity of the 2 x K table "
                  "(`scipy.stats.chi2_contingency(correction=False)`, equal within 1e-6), because the reference is a "
                  "sample too: with equal sample sizes the goodness-of-fit statistic is about twice as large, so its "
                  "p-values are smaller (more alarms). whylogs also truncates expected counts to integers and takes "
                  "dof from the current unique count.",
                  "- **KS in whylogs**: evaluated on its KLL sketches (k=1024, whylogs' `large_kll_k` default) at 100 "
                  "quantile points only (`np.linspace(0, 1, 100)`), so it is "
                  "an approximation of `ks_2samp`'s statistic; sparkscore's exact path equals `ks_2samp`, and its "
                  "sketch path carries the bound `eps_ref + eps_cur` in `error_bound`.",
                  "- **whylogs stddev** is the sample std (ddof=1); sparkscore stores the population std (M2/n), "
                  "compared after scaling by sqrt(n/(n-1)).", ""]
    for key, title in (("speed_1m", "(b) Speed"), ("scale_10m", "(b) Scale")):
        s = res.get(key)
        if not s:
            continue
        lines += [f"## {title}: {s['rows']:,} rows x {s['features']} features", ""]
        if key == "speed_1m":
            lines += [f"Reference and current parquet files of {s['rows']:,} rows each (float64, 5 features shifted "
                      f"by half a std); a linear model on all features (PREDICT as the engine's Arrow UDF: "
                      f"{s['features']} features > inline_max_features 32). Registering the model "
                      f"with its training profile (one-off, at registration): {s['register_with_profile_s']:.1f} s. "
                      f"Section load {s['loadavg'][0]:.1f}.", "",
                      "| tool (own process, end to end) | seconds | peak RSS MiB | load at start | ratio vs Evidently | "
                      "ratio vs whylogs |", "|---|---|---|---|---|---|"]
            ev = s["evidently"].get("seconds")
            ev_floor = None  # Evidently killed at the timeout: the ratio is a lower bound
            if ev is None and str(s["evidently"].get("error", "")).startswith("timed out after"):
                ev_floor = float(s["evidently"]["error"].split()[3])
            for name, label in (("sparkscore_vs_profile", "sparkscore DuckDB, vs stored training profile"),
                                ("sparkscore_vs_reference_file", "sparkscore DuckDB, vs reference file (profiles both)"),
                                ("evidently", "Evidently DataDriftPreset (read both + report)"),
                                ("whylogs", "whylogs (read both, profile both, drift scores)")):
                r = s.get(name)
                if r is None:
                    continue
                if "error" in r:
                    lines.append(f"| {label} | failed: {r['error']} | | {r['loadavg'][0]:.1f} | | |")
                    continue
                ratio = f"{ev / r['seconds']:.1f}x" if ev else (f"> {ev_floor / r['seconds']:.1f}x" if ev_floor else "-")
                wl = s.get("whylogs", {}).get("seconds")
                wl_ratio = f"{wl / r['seconds']:.1f}x" if wl and name.startswith("sparkscore") else "-"
                lines.append(f"| {label} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} | {r['loadavg'][0]:.1f} | {ratio} | "
                             f"{wl_ratio} |")
        else:
            lines += [f"Current batch: {s['rows']:,} rows x {s['features']} float32 columns "
                      f"({s['current_bytes'] / 2**30:.2f} GiB parquet; {s['in_memory_float64_bytes'] / 2**30:.1f} GiB "
                      f"as a float64 frame); training profile from {s['reference_rows']:,} rows, stored at "
                      f"registration ({s['register_with_profile_s']:.1f} s).", "",
                      "| engine | seconds | peak RSS MiB (driver) | peak RSS MiB (process tree: by kind) | sketch stream s "
                      "| aggregate s | load at start | drifted features |", "|---|---|---|---|---|---|---|---|"]
            for name, label in (("duckdb", "sparkscore DuckDB"), ("spark_local2", "sparkscore Spark local[2]")):
                r = s.get(name)
                if r is None:
                    continue
                if "error" in r:
                    lines.append(f"| {label} | failed: {r['error']} | | | | | {r['loadavg'][0]:.1f} | |")
                    continue
                extra = f" (Spark start {r['spark_start_s']:.1f} s)" if "spark_start_s" in r else ""
                tree = r.get("tree_peak_rss_mib")
                kinds = ", ".join(f"{k} {v:.0f}" for k, v in r.get("tree_peak_rss_by_kind_mib", {}).items())
                phases = r.get("phases_s", {})
                cells = [label, f"{r['seconds']:.1f}{extra}", f"{r['peak_rss_mib']:.0f}",
                         f"{tree:.0f} ({kinds})" if tree else "-",
                         *(f"{phases[p]:.1f}" if p in phases else "-" for p in ("sketch", "aggregate")),
                         f"{r['loadavg'][0]:.1f}", str(len(r["drifted"]))]
                lines.append("| " + " | ".join(cells) + " |")
            lines += ["", "Peak RSS (driver) is the measured Python process's own VmHWM; the process tree column is "
                      "the peak of the summed VmRSS of that process and every descendant, sampled from /proc every "
                      "0.5 s (Spark: the Python driver, the JVM and the JVM's Python workers; by kind: each kind's own "
                      "peak). Memory is bounded by the scan: the aggregate query and the sketch stream hold "
                      "sketches and counters, never the rows."]
        lines.append("")
    if res.get("reruns"):
        lines += ["## Re-runs merged into these results", ""]
        for r in res["reruns"]:
            mm = r["machine"]
            lines.append(f"- {r['started']} UTC: sections {', '.join(r['sections'])}, tasks {', '.join(r['tasks'])}; "
                         f"load average {mm['load_average_at_start'][0]:.1f} at the start, "
                         f"{mm.get('load_average_at_end', [float('nan')])[0]:.1f} at the end ({mm['cores']} cores"
                         f"{'; ' + r['note'] if r.get('note') else ''}).")
        lines.append("")
    if res.get("notes"):
        lines += ["## Notes", "", *[f"- {n}" for n in res["notes"]], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (< 60 s)")
    parser.add_argument("--sections", default="agreement,speed_1m,scale_10m")
    parser.add_argument("--no-spark", action="store_true")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per measured process")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--spark", action="store_true", help="with --quick: also run the Spark local[2] scale check")
    parser.add_argument("--deadline", default=None, metavar="HH:MM",
                        help="UTC time by which every measured process must end (later ones are killed / not run)")
    parser.add_argument("--tasks", default=None, metavar="a,b",
                        help="only these measurements (whylogs, evidently, sparkscore_vs_profile, "
                             "sparkscore_vs_reference_file, duckdb, spark_local2); the others are kept from --merge")
    parser.add_argument("--merge", action="store_true",
                        help="update the existing results file: re-measured entries replace the old ones, the rest "
                             "(and its notes) are kept")
    parser.add_argument("--note", action="append", default=[], help="a note for the results md (repeatable)")
    parser.add_argument("--child", nargs=2, metavar=("TASK", "ARGS"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        print(json.dumps(child(opts.child[0], json.loads(opts.child[1]))))
        return
    global DEADLINE
    if opts.deadline:
        hh, mm = (int(x) for x in opts.deadline.split(":"))
        now = time.gmtime()
        DEADLINE = time.mktime((now.tm_year, now.tm_mon, now.tm_mday, hh, mm, 0, 0, 0, 0)) - time.timezone
    global TASKS
    TASKS = set(opts.tasks.split(",")) if opts.tasks else None
    sections = opts.sections.split(",")
    out = opts.out or ROOT / "bench" / "results" / ("monitor_quick" if opts.quick else "monitor")
    res: dict = {"quick": opts.quick, "started": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "machine": machine(),
                 "loadavg": {}, "notes": []}
    if opts.merge and out.with_suffix(".json").exists():
        old = json.loads(out.with_suffix(".json").read_text())
        rerun = {"started": res["started"], "sections": sections, "tasks": sorted(TASKS or ["all"]),
                 "machine": res["machine"]}
        res = {**old, "reruns": [*old.get("reruns", []), rerun]}
    res["notes"] = [*res.get("notes", []), *opts.note]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "agreement" in sections:
            res["loadavg"]["agreement"] = loadavg()
            print(f"agreement (load {res['loadavg']['agreement'][0]:.1f})", flush=True)
            res["agreement"] = agreement(2000 if opts.quick else 20_000)
            print(f"  {res['agreement']['coinciding_checks']} coinciding checks, "
                  f"{res['agreement']['coinciding_disagreements']} disagree", flush=True)
            save(res, out)
        if "speed_1m" in sections:
            n, f = (20_000, 5) if opts.quick else (1_000_000, 50)
            print(f"speed {n:,} x {f}", flush=True)
            res["speed_1m"] = speed(n, f, min(5, f), opts.timeout, work, res.get("speed_1m"))
            save(res, out)
        if "scale_10m" in sections:
            n, f = (50_000, 10) if opts.quick else (10_000_000, 100)
            print(f"scale {n:,} x {f}", flush=True)
            spark = not opts.no_spark and (opts.spark or not opts.quick)
            res["scale_10m"] = scale(n, f, 20_000 if opts.quick else 200_000, opts.timeout, work, spark,
                                     res.get("scale_10m"))
            save(res, out)
    if opts.quick and not opts.spark:
        res["notes"].append("quick mode skips the Spark local[2] check (its JVM start alone is ~10-50 s here); "
                            "add --spark")
    save(res, out)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")


def save(res: dict, out: Path) -> None:
    """Written after every section, so a run cut short by the deadline keeps what it measured."""
    (res["reruns"][-1]["machine"] if res.get("reruns") else res["machine"])["load_average_at_end"] = loadavg()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2, default=float))
    try:
        out.with_suffix(".md").write_text(markdown(res))
    except Exception as exc:  # noqa: BLE001 -- the JSON is written; the md can be re-rendered from it
        print(f"markdown failed ({exc!r}); re-render with markdown(json.load(...))", file=sys.stderr)


if __name__ == "__main__":
    main()
