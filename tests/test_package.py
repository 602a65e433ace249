"""Package-level contracts: light import, layering (DESIGN section 1), public API surface."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_is_light_and_fast():
    code = ("import time, sys; t = time.perf_counter(); import sparkscore; dt = time.perf_counter() - t; "
            "heavy = [m for m in ('torch', 'pyspark', 'sklearn', 'lightgbm', 'xgboost', 'catboost', 'duckdb', "
            "'sqlglot') "
            "if m in sys.modules]; print(dt); print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    seconds, heavy = out.stdout.splitlines()[0], (out.stdout.splitlines() + [""])[1]
    assert heavy == "", f"import sparkscore pulled in {heavy}"
    assert float(seconds) < 1.0


def test_layers_import_downwards_only():
    """import-linter contracts in .importlinter: layers, optimizer w/o torch, compiler w/o sqlglot."""
    out = subprocess.run([sys.executable, "-m", "importlinter.cli", "--config", str(ROOT / ".importlinter")],
                         capture_output=True, text=True, cwd=ROOT)
    if out.returncode != 0 and "No module named importlinter.cli" in out.stderr:
        out = subprocess.run(["lint-imports", "--config", str(ROOT / ".importlinter")],
                             capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "BROKEN" not in out.stdout


def test_public_api_names():
    import sparkscore as ss

    for name in ("convert", "Model", "Registry", "explain", "duckdb", "spark", "errors"):
        assert hasattr(ss, name) or name in ss.__all__, name
    assert issubclass(ss.errors.SignatureError, ValueError)
    assert issubclass(ss.errors.ModelNotFoundError, ss.errors.SparkscoreError)
