"""Fit ``factorize_linear``'s cost constants to a measured sweep, and pick its firing threshold.

Why a script: the constants in ``sparkscore/optimizer/cost.py`` (``JoinCosts``) are a fit to
``bench/results/optimizer_factorize_sweep.json``; committing the fit makes them reproducible and
lets the next machine refit them from its own sweep.

The model is the rule's own estimator (``StarEstimate``): for every measured shape it predicts the
forced plan's speedup (every dimension factorized, as the sweep measures it).  The constants (``scan``
is the unit and stays 1) are fitted by least squares on log speedup with a soft-L1 loss, so a few
noisy points do not pull the fit.  The threshold is then the estimate at which firing is right most
often: a shape where the rule fires must measure >= 1.2x, a shape where it declines must not measure
more than 1/0.9 (declining loses at most 10%).

Usage: ``PYTHONPATH=. python bench/fit_factorize_cost.py [SWEEP_JSON]`` prints the constants, the
residual and the errors per threshold; it changes no file.
"""

from __future__ import annotations

import json
import sys
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

sys.path.insert(0, str(Path(__file__).parent))
from bench_factorize_sweep import PAYS, RESULTS, all_dims, shape_estimate  # noqa: E402

from sparkscore.optimizer import OptimizerOptions  # noqa: E402
from sparkscore.optimizer.cost import JoinCosts  # noqa: E402

FITTED = ("join", "carry", "carry_cached", "partial", "udf", "udf_feature", "cast")
START = {"cast": 1.0, "udf": 1.0, "udf_feature": 10.0}  # constants that are 0 before a first fit
LOSES = 1 / 0.9


def costs_of(theta: np.ndarray) -> JoinCosts:
    return replace(JoinCosts(), **dict(zip(FITTED, np.exp(theta))))


def estimates(points: list[dict], costs: JoinCosts) -> np.ndarray:
    options = OptimizerOptions()
    out = []
    for p in points:
        star = shape_estimate(p, options, costs)
        out.append(star.speedup(all_dims(star)))
    return np.array(out)


def decisions(points: list[dict], costs: JoinCosts, threshold: float) -> np.ndarray:
    """What the rule does with these constants: its jointly chosen set's estimate reaches ``threshold``."""
    options = OptimizerOptions()
    fired = []
    for p in points:
        star = shape_estimate(p, options, costs)
        chosen = star.choose()
        fired.append(bool(chosen) and star.speedup(chosen) >= threshold)
    return np.array(fired)


def errors(points: list[dict], fired: np.ndarray) -> tuple[list[dict], list[dict]]:
    measured = np.array([p["speedup"] for p in points])
    bad_fire = [p for p, f, m in zip(points, fired, measured) if f and m < PAYS]
    bad_decline = [p for p, f, m in zip(points, fired, measured) if not f and m > LOSES]
    return bad_fire, bad_decline


def fit(points: list[dict]) -> tuple[JoinCosts, float]:
    measured = np.log([p["speedup"] for p in points])
    start = np.log([getattr(JoinCosts(), name) or START[name] for name in FITTED])

    def residual(theta):
        return np.log(estimates(points, costs_of(theta))) - measured

    result = least_squares(residual, start, loss="soft_l1", f_scale=0.1, bounds=(np.log(1e-3), np.log(1e9)))
    rms = float(np.sqrt(np.mean(residual(result.x) ** 2)))
    return costs_of(result.x), rms


def shape(p: dict) -> str:
    return (f"{p['group']} TR={p['tr']} d_S={p['d_fact']} d_R={p['d_dim']} c={p['carried']} n={p['n_dims']}"
            f"{' dec' if p.get('decimal') else ''}: {p['speedup']:.2f}x")


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS / "optimizer_factorize_sweep.json"
    points = json.loads(path.read_text())["points"]
    costs, rms = fit(points)
    print("fitted JoinCosts:", {f.name: round(getattr(costs, f.name), 3) for f in fields(costs)
                                if f.name in FITTED})
    print(f"rms log residual {rms:.3f} over {len(points)} points")
    for threshold in (1.1, 1.15, 1.2, 1.25, 1.3, 1.35, 1.4, 1.5):
        fired = decisions(points, costs, threshold)
        bad_fire, bad_decline = errors(points, fired)
        print(f"threshold {threshold}: fires {int(fired.sum())}, declines {int((~fired).sum())}; "
              f"fires < {PAYS}x: {len(bad_fire)}; declines > {LOSES:.2f}x: {len(bad_decline)}")
    current = decisions(points, JoinCosts(), OptimizerOptions().factorize_min_speedup)
    bad_fire, bad_decline = errors(points, current)
    print(f"committed rule: fires {int(current.sum())}; fires < {PAYS}x: {len(bad_fire)}; "
          f"declines > {LOSES:.2f}x: {len(bad_decline)}")
    for p in bad_fire:
        print("  fires, does not pay:", shape(p))
    for p in bad_decline:
        print("  declines, would win:", shape(p))


if __name__ == "__main__":
    main()
