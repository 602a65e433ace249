"""Scoring-kernel benchmark: sparkscore compiled kernels vs the native predictors, same run, same threads.

    python bench/bench_kernels.py            # full sweep (run by hand on a quiet machine)
    python bench/bench_kernels.py --quick    # CI smoke run, < 1 minute
    python bench/bench_kernels.py --depths 3 8 12 --trees 10 100 500 --batches 1 100 10000 100000

Trees: depth x trees x batch for sklearn RandomForest / GradientBoosting / HistGradientBoosting,
LightGBM and XGBoost; peers are the libraries' own predict (and hummingbird-ml / ONNX Runtime when
importable).  GLMs: kernel rows/s against the memory-bandwidth bound (bytes per row / measured copy
bandwidth).  Writes JSON, a markdown table and a PNG under bench/results/.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

THREADS = 2
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = str(THREADS)

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sparkscore as ss  # noqa: E402
from sparkscore import compiler  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
N_FEATURES = 28
LIBS = ("sklearn_rf", "sklearn_gb", "sklearn_hgb", "lightgbm", "xgboost")


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    versions = {}
    for mod in ("numpy", "numba", "torch", "sklearn", "lightgbm", "xgboost", "hummingbird", "onnxruntime"):
        if importlib.util.find_spec(mod):
            versions[mod] = getattr(__import__(mod), "__version__", "?")
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": THREADS, "python": platform.python_version(),
            "platform": platform.platform(), "load_average_at_start": os.getloadavg(), "versions": versions}


def best_seconds(fn, repeats: int, min_time: float = 0.02) -> float:
    """Best-of-``repeats`` seconds per call; tiny calls are looped until ``min_time`` to beat timer noise."""
    fn()
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    inner = max(1, int(min_time / max(once, 1e-7)))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - start) / inner)
    return best


def fit(lib: str, depth: int, trees: int, X, y):
    """A native binary classifier and its predict-proba function with ``THREADS`` threads."""
    if lib == "sklearn_rf":
        from sklearn.ensemble import RandomForestClassifier
        m = RandomForestClassifier(n_estimators=trees, max_depth=depth, n_jobs=THREADS, random_state=0).fit(X, y)
        return m, m.predict_proba
    if lib == "sklearn_gb":
        from sklearn.ensemble import GradientBoostingClassifier
        m = GradientBoostingClassifier(n_estimators=trees, max_depth=depth, subsample=0.5, random_state=0).fit(X, y)
        return m, m.predict_proba
    if lib == "sklearn_hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier
        m = HistGradientBoostingClassifier(max_iter=trees, max_depth=depth, max_leaf_nodes=None,
                                           early_stopping=False, random_state=0).fit(X, y)
        return m, m.predict_proba
    if lib == "lightgbm":
        import lightgbm as lgb
        m = lgb.LGBMClassifier(n_estimators=trees, max_depth=depth, num_leaves=min(2 ** depth, 4096),
                               min_child_samples=2, n_jobs=THREADS, verbose=-1).fit(X, y)
        booster = m.booster_
        return m, lambda Z: booster.predict(Z, num_threads=THREADS)
    if lib == "xgboost":
        import xgboost as xgb
        m = xgb.XGBClassifier(n_estimators=trees, max_depth=depth, n_jobs=THREADS, tree_method="hist").fit(X, y)
        booster = m.get_booster()
        return m, lambda Z: booster.inplace_predict(Z)
    raise ValueError(lib)


def peers(native) -> dict:
    """Optional peers that exist only where installable (hummingbird needs `pip install --no-deps hummingbird-ml`)."""
    out = {}
    if importlib.util.find_spec("hummingbird"):
        try:
            import hummingbird.ml
            hb = hummingbird.ml.convert(native, "torch")
            out["hummingbird_torch"] = hb.predict_proba
        except Exception as exc:  # noqa: BLE001 - a peer that cannot convert is reported, not fatal
            print(f"  hummingbird: {type(exc).__name__}: {exc}")
    if importlib.util.find_spec("onnxruntime") and importlib.util.find_spec("skl2onnx") and \
            type(native).__module__.startswith("sklearn"):
        try:
            import onnxruntime as ort
            from skl2onnx import to_onnx
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = THREADS
            sess = ort.InferenceSession(to_onnx(native, np.zeros((1, N_FEATURES), np.float32)).SerializeToString(),
                                        opts)
            name = sess.get_inputs()[0].name
            out["onnxruntime"] = lambda Z: sess.run(None, {name: Z.astype(np.float32)})
        except Exception as exc:  # noqa: BLE001
            print(f"  onnxruntime: {type(exc).__name__}: {exc}")
    return out


def bench_trees(libs, depths, trees_list, batches, n_train: int, repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n_train, N_FEATURES))
    y = ((X[:, 0] + X[:, 1] * X[:, 2] + np.sin(3 * X[:, 3]) + rng.normal(scale=0.5, size=n_train)) > 0).astype(int)
    Xt = rng.normal(size=(max(batches), N_FEATURES))
    rows = []
    for lib in libs:
        for depth in depths:
            for trees in trees_list:
                start = time.perf_counter()
                native, native_proba = fit(lib, depth, trees, X, y)
                fit_s = time.perf_counter() - start
                model = ss.convert(native)
                start = time.perf_counter()
                scorer = compiler.compile(model, backend="auto")
                compile_s = time.perf_counter() - start
                others = peers(native)
                for n in batches:
                    Z = Xt[:n]
                    reps = repeats if n <= 10_000 else max(1, repeats - 1)
                    t_native = best_seconds(lambda: native_proba(Z), reps)
                    t_ss = best_seconds(lambda: scorer.scores(Z), reps)
                    row = {"lib": lib, "depth": depth, "trees": trees, "batch": n,
                           "native_rows_s": n / t_native, "sparkscore_rows_s": n / t_ss,
                           "speedup_vs_native": t_native / t_ss, "strategy": scorer.strategy_for(n),
                           "fit_s": round(fit_s, 2), "compile_s": round(compile_s, 3)}
                    for peer, fn in others.items():
                        row[f"{peer}_rows_s"] = n / best_seconds(lambda: fn(Z), reps)
                    rows.append(row)
                    print(f"{lib:12s} depth {depth:2d} trees {trees:3d} batch {n:6d}: native {n / t_native:12.0f} "
                          f"rows/s, sparkscore {n / t_ss:12.0f} rows/s ({row['speedup_vs_native']:.2f}x, "
                          f"{row['strategy']})", flush=True)
    return rows


def copy_bandwidth() -> float:
    """Bytes/s of a large numpy copy (read + write), the memory-bandwidth bound of a streaming GLM."""
    a = np.ones(1 << 25)
    b = np.empty_like(a)
    t = best_seconds(lambda: np.copyto(b, a), 3)
    return 2 * a.nbytes / t


def bench_glm(n_rows: int, repeats: int) -> list[dict]:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    X = rng.normal(size=(5000, N_FEATURES))
    y = (X @ rng.normal(size=N_FEATURES) > 0).astype(int)
    native = LogisticRegression(max_iter=500).fit(X, y)
    model = ss.convert(native)
    Xt = rng.normal(size=(n_rows, N_FEATURES))
    bandwidth = copy_bandwidth()
    bound = bandwidth / (8 * N_FEATURES)  # the kernel must at least read every input double once
    out = []
    for backend in ("numpy", "torch"):
        scorer = compiler.compile(model, backend=backend)
        t = best_seconds(lambda: scorer.scores(Xt), repeats)
        t_native = best_seconds(lambda: native.predict_proba(Xt), repeats)
        out.append({"backend": backend, "rows": n_rows, "rows_s": n_rows / t, "native_rows_s": n_rows / t_native,
                    "copy_bandwidth_gb_s": bandwidth / 1e9, "bound_rows_s": bound, "fraction_of_bound": n_rows / t / bound})
        print(f"GLM {backend}: {n_rows / t:.0f} rows/s = {n_rows / t / bound:.0%} of the bandwidth bound "
              f"({bound:.0f} rows/s); sklearn {n_rows / t_native:.0f} rows/s", flush=True)
    return out


def summarise(rows: list[dict]) -> dict:
    big = [r for r in rows if r["batch"] >= 10_000]
    small = [r for r in rows if r["batch"] <= 100]
    return {
        "configs_batch_ge_10k": len(big),
        "ge_1x_native_batch_ge_10k": sum(r["speedup_vs_native"] >= 1.0 for r in big),
        "ge_2x_native_batch_ge_10k": sum(r["speedup_vs_native"] >= 2.0 for r in big),
        "configs_batch_le_100": len(small),
        "within_2x_native_batch_le_100": sum(r["speedup_vs_native"] >= 0.5 for r in small),
        "min_speedup_batch_ge_10k": min((r["speedup_vs_native"] for r in big), default=None),
        "median_speedup_batch_ge_10k": float(np.median([r["speedup_vs_native"] for r in big])) if big else None,
    }


def markdown(result: dict) -> str:
    lines = [f"# Scoring kernels vs native predict ({result['machine']['cpu']}, {THREADS} threads)", "",
             f"Summary: `{json.dumps(result['summary'])}`", "",
             "| lib | depth | trees | batch | native rows/s | sparkscore rows/s | speedup | strategy |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["trees"]:
        lines.append(f"| {r['lib']} | {r['depth']} | {r['trees']} | {r['batch']} | {r['native_rows_s']:.0f} | "
                     f"{r['sparkscore_rows_s']:.0f} | {r['speedup_vs_native']:.2f}x | {r['strategy']} |")
    lines += ["", "| GLM backend | rows | rows/s | sklearn rows/s | bandwidth bound rows/s | fraction of bound |",
              "|---|---|---|---|---|---|"]
    for g in result["glm"]:
        lines.append(f"| {g['backend']} | {g['rows']} | {g['rows_s']:.0f} | {g['native_rows_s']:.0f} | "
                     f"{g['bound_rows_s']:.0f} | {g['fraction_of_bound']:.0%} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(4 * len(batches), 4), sharey=True, squeeze=False)
    for ax, n in zip(axes[0], batches):
        sel = [r for r in rows if r["batch"] == n]
        labels = [f"{r['lib']}\nd{r['depth']} t{r['trees']}" for r in sel]
        ax.bar(range(len(sel)), [r["speedup_vs_native"] for r in sel])
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(f"batch {n}")
        ax.set_xticks(range(len(sel)), labels, rotation=90, fontsize=5)
    axes[0][0].set_ylabel("speedup vs native predict (x)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI smoke run (< 1 minute)")
    p.add_argument("--libs", nargs="+", default=list(LIBS), choices=LIBS)
    p.add_argument("--depths", nargs="+", type=int, default=[3, 6, 8, 10, 12])
    p.add_argument("--trees", nargs="+", type=int, default=[10, 100, 500])
    p.add_argument("--batches", nargs="+", type=int, default=[1, 100, 10_000, 100_000])
    p.add_argument("--train-rows", type=int, default=5000)
    p.add_argument("--glm-rows", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--name", default=None, help="results file stem (default kernels_quick / kernels_full)")
    args = p.parse_args(argv)
    if args.quick:
        args.libs, args.depths, args.trees = ["sklearn_rf", "lightgbm", "xgboost"], [3, 8], [10]
        args.batches, args.train_rows, args.glm_rows, args.repeats = [1, 100, 10_000], 1000, 100_000, 2
    import numba
    import torch
    numba.set_num_threads(THREADS)
    torch.set_num_threads(THREADS)
    started = time.time()
    result = {"machine": machine(), "args": vars(args)}
    result["trees"] = bench_trees(args.libs, args.depths, args.trees, args.batches, args.train_rows, args.repeats)
    result["glm"] = bench_glm(args.glm_rows, args.repeats)
    result["summary"] = summarise(result["trees"])
    result["wall_s"] = round(time.time() - started, 1)
    result["notes"] = ("hummingbird-ml not installed here (needs `pip install --no-deps hummingbird-ml`); its column "
                       "appears when importable. Inputs are the encoded float64 matrix for both sides.")
    stem = args.name or ("kernels_quick" if args.quick else "kernels_full")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (RESULTS / f"{stem}.md").write_text(markdown(result))
    plot(result["trees"], RESULTS / f"{stem}.png")
    print(json.dumps(result["summary"]), f"wall {result['wall_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
