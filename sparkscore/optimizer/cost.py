"""Cost rule of ``factorize_linear``: does computing a dimension's partial margin below the join pay?

Units are "feature-row operations".  Scoring after the join reads every joined row's ``d_S + d_R``
features and pays a fixed per-row evaluation overhead ``u`` (the Arrow UDF round-trip; about 0
for SQL arithmetic); the join also *carries* the ``d_R`` dimension columns to every output row, at
``c`` per column.  Factorizing dimension ``R`` scores its ``d_R`` features once per dimension row
and carries ``m`` partial columns (one per model output) instead::

    materialized = rows (d_S + d_R + u + c d_R)
    factorized   = |R| (d_R + u) + rows (d_S + m + u + c m)

With ``TR = rows / |R|`` and ``FR = d_R / d_S`` this is Morpheus' tuple-ratio / feature-ratio rule
plus the cost of carrying columns through the join, which on DuckDB dominates for SQL arithmetic
(factorizing an inlined GLM pays even at TR = 1 when d_R >= 2), while the UDF's per-row overhead
makes the UDF plan pay only from a larger TR.  ``u`` and ``c`` were calibrated on DuckDB by
``bench/bench_optimizer.py`` (``factorize_linear``'s docstring, ``bench/results/optimizer_*.md``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RowCount:
    """A source's row count for cost estimates, with where it came from or why it is unknown.

    Counts come from engine statistics that DELETE / UPDATE need not maintain: they steer cost
    only, never correctness, and ``note`` says so in EXPLAIN.
    """

    rows: int | None
    note: str


def row_count(catalog, table: str) -> RowCount:
    """``catalog``'s row count of ``table`` with its provenance (``row_stats`` where the catalog has it)."""
    stats = getattr(catalog, "row_stats", None)  # optional in the Catalog protocol: test catalogs lack it
    if stats is not None:
        return stats(table)
    rows = catalog.row_count(table)
    return RowCount(rows, "from the catalog" if rows is not None else "the catalog has no row count")


@dataclass(frozen=True)
class FactorizeEstimate:
    rows: int            # estimated join output rows (= fact rows for key-foreign-key joins)
    dim_rows: int        # |R|
    d_fact: int          # model features read from every other source
    d_dim: int           # model features read from R
    outputs: int         # partial columns per dimension row (model outputs)
    row_overhead: float  # u: per-row evaluation overhead, in features
    carry: float         # c: cost of carrying one column through the join per output row, in features

    @property
    def tuple_ratio(self) -> float:
        return self.rows / max(self.dim_rows, 1)

    @property
    def feature_ratio(self) -> float:
        return self.d_dim / max(self.d_fact, 1)

    @property
    def materialized(self) -> float:
        return self.rows * (self.d_fact + self.d_dim + self.row_overhead + self.carry * self.d_dim)

    @property
    def factorized(self) -> float:
        u = self.row_overhead
        return (self.dim_rows * (self.d_dim + u)
                + self.rows * (self.d_fact + self.outputs + u + self.carry * self.outputs))

    @property
    def speedup(self) -> float:
        return self.materialized / self.factorized

    def pays(self, min_speedup: float) -> bool:
        return self.speedup >= min_speedup

    def describe(self) -> str:
        return (f"TR={self.tuple_ratio:.3g}, FR={self.feature_ratio:.3g} (d_R={self.d_dim}, d_S={self.d_fact}), "
                f"rows={self.rows}, |R|={self.dim_rows}, est. speedup {self.speedup:.2f}x")


def factorize_estimate(*, rows: int, dim_rows: int, d_fact: int, d_dim: int, outputs: int, inlined: bool,
                       options) -> FactorizeEstimate:
    """The estimate ``factorize_linear`` makes for one dimension (one place for the rule and the benchmarks)."""
    return FactorizeEstimate(rows=rows, dim_rows=dim_rows, d_fact=d_fact, d_dim=d_dim, outputs=outputs,
                             row_overhead=0.0 if inlined else options.factorize_udf_overhead,
                             carry=options.factorize_carry)
