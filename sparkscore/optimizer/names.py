"""The one generator of column names the rewrite rules add to a query.

A generated name must not capture or shadow anything: it is unique against every identifier the
query already spells (its columns, aliases, CTE and table names), against every column of every
catalog table the query reads (``SELECT *`` of a subquery brings those in unnamed), and against
every name generated before it in the same query.  Comparisons are case-insensitive because both
engines resolve unquoted identifiers that way.  Every rule that adds a column asks
``Context.fresh_name`` (one :class:`NameGenerator` per query), so two rules, or two dimensions of
one rule, can never hand out the same name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlglot import exp

from sparkscore.optimizer.sources import catalog_name


@dataclass(eq=False)
class NameGenerator:
    taken: set[str] = field(default_factory=set)
    _counters: dict[str, int] = field(default_factory=dict)

    @classmethod
    def for_query(cls, expression: exp.Expr, catalog, dialect: str) -> "NameGenerator":
        taken = {ident.name.lower() for ident in expression.find_all(exp.Identifier)}
        for table in expression.find_all(exp.Table):
            name = catalog_name(table, dialect)
            columns = catalog.columns(name) if name else None
            taken.update(str(c).lower() for c, _ in columns or ())
        return cls(taken)

    def fresh(self, prefix: str) -> str:
        """``prefix`` + the smallest counter not taken yet; the name is then taken."""
        n = self._counters.get(prefix, 0)
        while f"{prefix}{n}".lower() in self.taken:
            n += 1
        self._counters[prefix] = n + 1
        name = f"{prefix}{n}"
        self.taken.add(name.lower())
        return name
