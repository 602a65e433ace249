"""Cost rule of ``factorize_linear``: does computing dimensions' partial margins below a star join pay?

Units: reading one fact column for one row (``scan`` = 1).  Both plans scan the fact's ``d_S``
features and its ``carried_S`` other columns the query reads, probe every join (``join`` per join and
row), and carry each dimension's other columns through its join.  They differ in what each dimension
``R`` carries: the materialized plan carries its ``d_R`` features to every output row and scores
them there; factorizing ``R`` scores them once per dimension row (``partial`` per feature and
dimension row) and carries ``m`` partial columns (one per model output) instead::

    per output row   common = joins J + s (d_S + carried_S) + k dec_S + sum_R carry(R) carried_R
    materialized     rows (common + sum_R (carry(R) d_R + k dec_R) + U(d) [model is a UDF])
    factorized F     rows (common + sum_{R in F} carry(R) m + sum_{R not in F} (carry(R) d_R + k dec_R)
                           + U(final width) [final model is a UDF])
                     + sum_{R in F} |R| (a d_R + k dec_R + U(d_R) [partial is a UDF])

``U(n) = u + u_f n`` is one row through an Arrow UDF of ``n`` input columns.

``dec`` counts a source's DECIMAL features (TPC-H's prices and quantities): the model reads them as
DOUBLE, so every row that evaluates the model casts them (``k`` each); factorizing a dimension
moves its casts from the output rows to its own rows.

``carry(R)`` is ``carry`` for a dimension whose hash table (8 bytes per column, key and hash) is larger
than ``cache_bytes`` and ``carry_cached`` for one that fits: gathering a column from a cache-resident
hash table costs about half as much, which is why two features of a small dimension gain little.
The UDF terms are what ``inline_models`` will do with each model (GLMs of <= ``inline_max_features``
single-output features become SQL): factorizing a GLM too wide to inline often splits it into two
that inline, which pays far more than the join arithmetic.  TR = rows / |R| and FR = d_R / d_S (the
Morpheus rule) only enter through these terms: the sweep found absolute ``d_R``, the dimension's
size and the carried columns to decide, and ``d_S`` to matter little.

Dimensions are chosen *jointly*: factorizing several dimensions shrinks the rows every other join
carries, so a dimension whose partial alone gains 1.1x is worth it beside two others (three
dimensions of 2 features each gained 1.4-1.5x measured).  ``choose`` starts from every eligible
dimension and drops the one with the smallest marginal gain while it is below ``min_marginal``; the
rule fires when the chosen set's estimated speedup reaches ``factorize_min_speedup``.

The constants were fitted by ``bench/fit_factorize_cost.py`` (least squares on log speedup, soft-L1)
to the sweep of ``bench/bench_factorize_sweep.py`` on DuckDB 2.0.1, measured on a quiet machine, and
validated on TPC-H; a ``choose`` that fires only at ``d_R > m`` or on DECIMAL features keeps d_R = 1
DOUBLE dimensions out (they cannot gain); ``factorize_linear``'s docstring states the resulting
decision boundary and ``bench/results/optimizer_factorize_{sweep,tpch}.md`` the measurements.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


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
class JoinCosts:
    """Fitted constants of the rule, in units of reading one fact column for one row (module doc)."""

    join: float = 11.4          # J: probing one join per output row
    scan: float = 1.0           # s: reading one fact column per row (the unit)
    carry: float = 5.5          # c: carrying one column of a dimension larger than the cache through its join
    carry_cached: float = 3.1   # c': the same for a dimension whose hash table fits in cache_bytes
    partial: float = 1.9        # a: one feature of a partial on one dimension row
    udf: float = 0.0            # u: per-row overhead of an Arrow UDF call
    udf_feature: float = 17.7   # u_f: each input column an Arrow UDF receives, per row
    cast: float = 3.9           # k: converting one DECIMAL feature to DOUBLE where the model reads it
    cache_bytes: int = 2 << 20  # per-core L2 of the calibration machine
    min_marginal: float = 1.05  # a dimension stays in the factorized set if it gains at least this


def factorize_costs(options) -> JoinCosts:
    """The rule's constants with the ones ``OptimizerOptions`` lets users override."""
    return replace(JoinCosts(), carry=options.factorize_carry, udf=options.factorize_udf_overhead)


@dataclass(frozen=True)
class Dimension:
    """One joined source of a star join, as the cost rule sees it."""

    alias: str
    rows: int                 # |R|
    features: int             # d_R: model features read from R
    carried: int = 0          # other columns of R the query reads (carried in both plans)
    eligible: bool = True     # False: its features stay above the join whatever the rule says
    decimal: int = 0          # how many of its features are DECIMAL (a cast per row that reads them)


@dataclass(frozen=True)
class StarEstimate:
    """Cost of a star join's plans with a set of dimensions factorized (module doc)."""

    rows: int                          # join output rows (= fact rows for key-foreign-key joins)
    d_fact: int                        # model features read from the FROM (fact) source
    outputs: int                       # m: partial columns per factorized dimension
    dims: tuple[Dimension, ...]
    carried_fact: int = 0              # other fact columns the query reads
    decimal_fact: int = 0              # DECIMAL features among the fact's (cast per row in every plan)
    inline_limit: int | None = 32      # largest GLM inline_models turns into SQL; None: it is disabled
    inlinable: bool = True             # the model's inputs / outputs let inline_models inline it at all
    costs: JoinCosts = JoinCosts()

    def carry(self, dim: Dimension) -> float:
        width = 8 * (dim.features + dim.carried + 2)
        return self.costs.carry_cached if dim.rows * width <= self.costs.cache_bytes else self.costs.carry

    def _udf(self, n_features: int, n_outputs: int) -> bool:
        return not (self.inlinable and self.inline_limit is not None and n_outputs == 1 and n_features <= self.inline_limit)

    def udfs(self, factorized: frozenset[str]) -> tuple[bool, list[bool]]:
        """(final model is a UDF, per factorized dimension: its partial is a UDF)."""
        kept = self.d_fact + sum(d.features for d in self.dims if d.alias not in factorized)
        final = self._udf(kept + self.outputs * len(factorized), self.outputs) if factorized else \
            self._udf(kept, self.outputs)
        partials = [self._udf(d.features, 1) if self.inline_limit is not None else True
                    for d in self.dims if d.alias in factorized]
        return final, partials

    def cost(self, factorized: frozenset[str] = frozenset()) -> float:
        k = self.costs
        per_row = len(self.dims) * k.join + k.scan * (self.d_fact + self.carried_fact) + k.cast * self.decimal_fact
        below = 0.0
        final_udf, partial_udfs = self.udfs(factorized)
        partial_udf = iter(partial_udfs)
        for dim in self.dims:
            c = self.carry(dim)
            if dim.alias in factorized:
                per_row += c * (dim.carried + self.outputs)
                below += dim.rows * (k.partial * dim.features + k.cast * dim.decimal
                                     + (self._udf_cost(dim.features) if next(partial_udf) else 0.0))
            else:
                per_row += c * (dim.carried + dim.features) + k.cast * dim.decimal
        final_width = self.d_fact + sum(d.features if d.alias not in factorized else self.outputs for d in self.dims)
        return self.rows * (per_row + (self._udf_cost(final_width) if final_udf else 0.0)) + below

    def _udf_cost(self, n_features: int) -> float:
        """One row through an Arrow UDF: a call share plus the transfer of each input column."""
        return self.costs.udf + self.costs.udf_feature * n_features

    def speedup(self, factorized: frozenset[str]) -> float:
        return self.cost() / self.cost(factorized)

    def marginal(self, alias: str, factorized: frozenset[str]) -> float:
        """What adding ``alias`` to the rest of ``factorized`` gains."""
        return self.cost(factorized - {alias}) / self.cost(factorized)

    def choose(self, force: bool = False) -> frozenset[str]:
        """Every eligible dimension, less the weakest while its marginal gain is below ``min_marginal``
        (``force``: every eligible one, as benchmarks and tests ask with ``factorize_min_speedup=0``)."""
        if force:
            return frozenset(d.alias for d in self.dims if d.eligible)
        chosen = frozenset(d.alias for d in self.dims if d.eligible and (d.features > self.outputs or d.decimal))
        while chosen:
            weakest = min(chosen, key=lambda a: self.marginal(a, chosen))
            if self.marginal(weakest, chosen) >= self.costs.min_marginal:
                break
            chosen -= {weakest}
        return chosen

    def describe(self, dim: Dimension, factorized: frozenset[str]) -> str:
        """One dimension's shape and marginal gain (for EXPLAIN)."""
        fr = dim.features / max(self.d_fact + sum(d.features for d in self.dims if d is not dim), 1)
        carried = f", carried {self.carried_fact}+{dim.carried}" if self.carried_fact or dim.carried else ""
        if self.decimal_fact or dim.decimal:
            carried += f", DECIMAL {self.decimal_fact}+{dim.decimal}"
        gain = self.marginal(dim.alias, factorized | {dim.alias})
        return (f"TR={self.rows / max(dim.rows, 1):.3g}, FR={fr:.3g} (d_R={dim.features}, d_S={self.d_fact}{carried}), "
                f"rows={self.rows}, |R|={dim.rows}, marginal {gain:.2f}x")

    def plan(self, factorized: frozenset[str]) -> str:
        final_udf, partial_udfs = self.udfs(factorized)
        before = "UDF" if self.udfs(frozenset())[0] else "inlined"
        after = ("UDF" if final_udf else "inlined") + (" + UDF partials" if any(partial_udfs) else "")
        return before if not factorized else f"{before} -> {after}"


def inline_limit(options) -> int:
    """Largest single-output GLM ``inline_models`` turns into SQL (what decides UDF vs inlined plans)."""
    return options.inline_max_features
