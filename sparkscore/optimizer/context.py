"""The state rules share while planning one query.

A rule is a pure function ``rule(expression, context) -> expression`` over the sqlglot AST; the
:class:`Context` is where it finds the engine's statistics (``catalog``), the options, the models
bound so far, and where it records its :class:`Decision`\\ s.  Models
live here (keyed by a short string the :class:`~sparkscore.optimizer.nodes.ModelCall` nodes
carry), never inside the AST, so copying an AST stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Protocol, runtime_checkable

from sparkscore.errors import QueryError
from sparkscore.ir import Model

if TYPE_CHECKING:
    from sparkscore.optimizer.names import NameGenerator
    from sparkscore.optimizer.plan import UdfSpec


@dataclass(frozen=True, eq=False)
class ResolvedModel:
    """A registry model pinned for one query (version and content hash fixed at planning time)."""

    name: str
    version: int
    sha256: str
    model: Model

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"


@runtime_checkable
class Catalog(Protocol):
    """Schema and statistics the engine knows; ``None`` means unknown."""

    def columns(self, table: str) -> list[tuple[str, str]] | None: ...

    def row_count(self, table: str) -> int | None: ...

    def distinct_count(self, table: str, column: str) -> int | None: ...


@dataclass(frozen=True)
class OptimizerOptions:
    """Thresholds the cost-based rules use; benchmarks and users may override them."""

    inline_max_features: int = 32
    inline_max_nodes: int = 255
    factorize_udf_overhead: float = 0.0    # cost.py's u: per-row share of a UDF call (its columns cost u_f each)
    factorize_carry: float = 5.5           # cost.py's c: carrying one column through a join, in fact-column reads
    factorize_min_speedup: float = 1.2    # factorize_linear fires at this estimated speedup or more: the 1.2x a
                                          # firing must pay (bench/fit_factorize_cost.py picked it on the sweep)


@dataclass(frozen=True)
class Decision:
    """One rule's verdict on one model call (or on the query): fired or declined, and why."""

    rule: str
    fired: bool
    reason: str


@dataclass(frozen=True, eq=False)
class BoundModel:
    """A model a :class:`ModelCall` runs: the registry model itself or one derived from it."""

    key: str
    model: Model
    source: ResolvedModel

    @property
    def derived(self) -> bool:
        return self.model is not self.source.model


@dataclass(eq=False)
class Context:
    dialect: str
    catalog: Catalog
    options: OptimizerOptions
    resolve: Callable[[str], ResolvedModel]
    models: dict[str, BoundModel] = field(default_factory=dict)
    decisions: list[Decision] = field(default_factory=list)
    resolved: dict[str, ResolvedModel] = field(default_factory=dict)
    udfs: dict[str, "UdfSpec"] = field(default_factory=dict)
    disabled: tuple[str, ...] = ()   # disable_rules: later rules a rule may count on (or not)
    names: "NameGenerator | None" = None  # set by plan_query: every generated column name comes from it
    resolve_route: Callable[[str], object] | None = None  # 'name@route' -> registry ResolvedRoute, None if no route
    routes: dict[str, object] = field(default_factory=dict)  # ref text -> ResolvedRoute | None, once per query

    def fresh_name(self, prefix: str) -> str:
        """A column name unique in the whole query (see :mod:`.names`)."""
        if self.names is None:
            raise QueryError("internal: no name generator for this query; plan it with plan_query")
        return self.names.fresh(prefix)

    def decide(self, rule: str, fired: bool, reason: str) -> None:
        self.decisions.append(Decision(rule, fired, reason))

    def model(self, key: str) -> BoundModel:
        try:
            return self.models[key]
        except KeyError:
            raise QueryError(f"internal: model call refers to unbound model key {key!r}; report this query") from None

    def add_model(self, model: Model, source: ResolvedModel) -> BoundModel:
        """Bind ``model`` (``source.model`` or a model derived from it) and return its entry.

        Keys are ``name/version`` for the registry model and ``name/version#<sha8>`` for derived
        ones, so equal derived models share one entry (and one UDF).
        """
        key = source.ref if model is source.model else f"{source.ref}#{model.sha256[:8]}"
        bound = self.models.get(key)
        if bound is None:
            bound = self.models[key] = BoundModel(key, model, source)
        return bound
