"""Model monitoring: training profiles, drift and quality metrics computed by the engine, prediction logs.

Sits below the engines and serving (they call it) and above the optimizer, compiler and registry
(DESIGN section 12). It builds SQL as sqlglot ASTs and touches only aggregated results; never torch.
"""

from __future__ import annotations

from sparkscore.monitor.api import drift, profile, track
from sparkscore.monitor.compute import DRIFT_COLUMNS, DriftResult, DriftRow
from sparkscore.monitor.metrics import DEFAULTS, Thresholds
from sparkscore.monitor.profile import ColumnProfile, MonitorError, Profile
from sparkscore.monitor.report import histograms, render_html, write_report

__all__ = ["DEFAULTS", "DRIFT_COLUMNS", "ColumnProfile", "DriftResult", "DriftRow", "MonitorError", "Profile",
           "Thresholds", "drift", "histograms", "profile", "render_html", "track", "write_report"]
