"""A grammar of PREDICT queries over the optimizer fixtures' schema, as hypothesis strategies.

Used by the generated-query property test (``test_generated_queries.py``): every query the engine
runs with every optional rule disabled must return the same multiset of rows with any subset of the
rules enabled.  The grammar covers what the rules reason about: a fact table (or a CTE / derived
table / CTE shadowing it, a UNION ALL), dimensions with NULL / missing keys (``regions``), with a
declared PRIMARY KEY (``plans``, ``plan_prices`` with an unqualified key), with duplicated keys and
no constraint (``plans_dup``), a schema-qualified one (``main.regions``), LEFT / INNER joins, ON
and USING, WHERE filters (comparisons on thresholds, BETWEEN incl. ``a AND a``, IN, DECIMAL
columns, subqueries), whole-row references, columns named like the generated ``ss_partial_*``,
several GLMs (single and multi-output, with preprocessing) and trees, PREDICT and PREDICT_PROBA,
and outer queries (a derived table, aggregates, UNION ALL).

The SQL is assembled from this fixed vocabulary only (no user input), in the duckdb dialect; the
Spark test transpiles it with the optimizer's own parser.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

#: Models and the (qualifier role, column) inputs they read: "c" fact, "r" region dim, "p" plan dim.
MODELS = {
    "glm": (("c", "age"), ("c", "tenure"), ("c", "spend")),
    "score": (("c", "age"), ("c", "tenure"), ("c", "spend")),
    "lgbm": (("c", "age"), ("c", "tenure"), ("c", "spend")),
    "xgb": (("c", "age"), ("c", "tenure"), ("c", "spend")),
    "forest": (("c", "age"), ("c", "tenure"), ("c", "spend")),
    "tier": (("c", "age"), ("c", "tenure"), ("c", "spend")),
    "spend_glm": (("c", "age"), ("c", "spend"), ("c", "region")),
    "region_tree": (("c", "age"), ("c", "region"), ("c", "tenure")),
    "star": (("c", "age"), ("c", "tenure"), ("r", "gdp"), ("r", "growth"), ("r", "risk")),
    "star_pipe": (("c", "age"), ("c", "tenure"), ("r", "gdp"), ("r", "growth"), ("r", "risk")),
    "star_tier": (("c", "age"), ("c", "tenure"), ("r", "gdp"), ("r", "growth"), ("r", "risk")),
    "ptree": (("c", "age"), ("c", "tenure"), ("c", "spend"), ("p", "price")),
    "planned": (("c", "age"), ("c", "plan_id"), ("p", "price")),
}
#: Calls whose result is one DOUBLE (PREDICT of regressors / binary classifiers): aggregatable.
DOUBLE_PREDICT = {"glm", "score", "lgbm", "xgb", "forest", "spend_glm", "region_tree", "star", "star_pipe", "ptree",
                  "planned"}
CLASSIFIERS = {"glm", "lgbm", "tier", "star", "star_tier"}
#: Literals on (and beside) the fixture models' thresholds, in DOUBLE and DECIMAL spellings.
NUMBERS = ("30.1", "3.01e1", "30.5", "12", "1.2e1", "0", "-0.5", "0.1", "40", "55", "20")
DECIMALS = ("30.10", "30.105", "30.09", "12.00", "12", "55", "0.00", "3.01e1")


_often = st.sampled_from((True, True, True, False))
_sometimes = st.sampled_from((True, False, False))


@dataclass(frozen=True)
class Query:
    sql: str
    duckdb_only: bool


def _predicate(draw, column: str, numbers) -> str:
    form = draw(st.sampled_from(("cmp", "cmp", "between", "between_same", "in", "not_null", "or", "not")))
    if form == "or":
        return f"({_predicate(draw, column, numbers)} OR {column} IS NULL)"
    if form == "not":
        return f"NOT ({_predicate(draw, column, numbers)})"
    a, b = sorted((draw(st.sampled_from(numbers)), draw(st.sampled_from(numbers))), key=float)
    if form == "cmp":
        return f"{column} {draw(st.sampled_from(('>', '>=', '<', '<=', '=')))} {a}"
    if form == "between":
        return f"{column} BETWEEN {a} AND {b}"
    if form == "between_same":
        return f"{column} BETWEEN {a} AND {a}"
    if form == "in":
        return f"{column} IN ({a}, {b})"
    return f"{column} IS NOT NULL"


@st.composite
def queries(draw, spark: bool = False) -> Query:
    duck_only = False
    ctes: list[str] = []
    fact_kind = draw(st.sampled_from(("customers", "customers", "customers_ss", "customers_dec", "cte_union",
                                      "cte_shadow", "derived")))
    if fact_kind == "cte_union":
        ctes.append("f AS (SELECT * FROM customers WHERE age > 20 UNION ALL SELECT * FROM customers)")
        fact = "f AS c"
    elif fact_kind == "cte_shadow":
        ctes.append("customers AS (SELECT * FROM customers UNION ALL SELECT * FROM customers WHERE tenure < 12)")
        fact = "customers AS c"
    elif fact_kind == "derived":
        fact = "(SELECT * FROM customers WHERE spend IS NOT NULL) AS c"
    else:
        fact = f"{fact_kind} AS c"
    decimal = fact_kind == "customers_dec"
    roles = {"c": "c"}
    joins: list[str] = []
    if not decimal and draw(_often):
        kind = draw(st.sampled_from(("regions", "regions", "regions_ss", "main.regions", "cte")))
        side = draw(st.sampled_from(("LEFT JOIN", "JOIN")))
        if kind == "main.regions" and not spark:
            duck_only = True
            roles["r"] = "regions"
            joins.append(f"{side} main.regions ON c.region = main.regions.region")
        else:
            table = kind if kind in ("regions", "regions_ss") else "rr"
            if kind == "cte":
                ctes.append("rr AS (SELECT * FROM regions UNION ALL SELECT * FROM regions WHERE gdp > 1)")
            roles["r"] = "r"
            on = draw(st.sampled_from(("ON c.region = r.region", "ON r.region = c.region", "USING (region)",
                                       "ON c.region = r.region AND c.age <= 40")))
            joins.append(f"{side} {table} AS r {on}")
    if not decimal and draw(st.booleans()):
        table = draw(st.sampled_from(("plans", "plans_dup", "plan_prices")))
        side = draw(st.sampled_from(("LEFT JOIN", "LEFT JOIN", "JOIN")))
        roles["p"] = "p"
        if table == "plan_prices":
            joins.append(f"{side} plan_prices AS p ON c.plan_id = pid")
        else:
            on = draw(st.sampled_from(("ON c.plan_id = p.plan_id", "ON p.plan_id = c.plan_id")))
            joins.append(f"{side} {table} AS p {on}")

    available = [m for m, inputs in MODELS.items()
                 if all(role in roles for role, _ in inputs)
                 and not (decimal and any(col in ("region", "plan_id") for _, col in inputs))]
    # the star-join models first where a dimension is joined: what the join rules rewrite
    joined = [m for m in available if any(role != "c" for role, _ in MODELS[m])]
    first = draw(st.sampled_from(joined if joined and draw(_often) else available))
    calls = [first] + draw(st.lists(st.sampled_from(available), max_size=2))
    projections = ["c.id"]
    outputs: list[tuple[str, bool]] = []   # (alias, is one DOUBLE)
    for k, model in enumerate(calls):
        args = ", ".join(f"{roles[role]}.{col}" for role, col in MODELS[model])
        if model in ("star", "star_pipe") and "USING" not in " ".join(joins) and draw(st.booleans()):
            args = "*"
        proba = model in CLASSIFIERS and draw(st.booleans())
        projections.append(f"PREDICT{'_PROBA' if proba else ''}('{model}', {args}) AS m{k}")
        outputs.append((f"m{k}", not proba and model in DOUBLE_PREDICT))
    extras = []
    if "r" in roles:
        extras += [f"{roles['r']}.gdp AS gdp"]
        if not spark:
            extras += [f"{roles['r']} AS r_row", f"TO_JSON({roles['r']}) AS r_json", f"ROW(*COLUMNS({roles['r']}.*)) AS r_cols",
                       "COLUMNS('gdp|ss_partial')"]
        if "regions_ss" in " ".join(joins):
            extras.append("r.ss_partial_0 AS own_partial")
    if "p" in roles:
        extras.append("p.price AS price")
        if not spark:
            extras.append("COLUMNS('price')")
    if fact_kind == "customers_ss":
        extras.append("ss_partial_0")
    chosen = [e for e in extras if draw(_sometimes)]
    duck_only = duck_only or any(e.startswith(("r AS", "regions AS", "TO_JSON", "ROW(", "COLUMNS(")) for e in chosen)
    projections += chosen

    numbers = DECIMALS if decimal else NUMBERS
    where = [_predicate(draw, f"c.{col}", numbers)
             for col in draw(st.lists(st.sampled_from(("age", "tenure", "spend")), max_size=3))]
    if not decimal and draw(st.booleans()):
        where.append(draw(st.sampled_from(("c.region = 'EU'", "c.region IN ('EU', 'APAC')",
                                           "c.plan_id IN (SELECT plan_id FROM plans_dup WHERE price > 6)"))))
    if "r" in roles and draw(st.booleans()):
        where.append(f"{roles['r']}.gdp > 1")
    if "p" in roles and draw(st.booleans()):
        where.append("p.price <= 19")

    if draw(_sometimes):  # a model call in WHERE too
        model = draw(st.sampled_from([m for m in available if m in DOUBLE_PREDICT]))
        where.append(f"PREDICT('{model}', {', '.join(f'{roles[role]}.{col}' for role, col in MODELS[model])}) > 0.2")
    grouped = draw(_sometimes) and all(one for _, one in outputs)
    if grouped:  # one row per group: averages of every call
        key = f"{roles['r']}.region" if "r" in roles and "USING" not in " ".join(joins) else "c.plan_id"
        projections = [key] + [f"AVG({p.rsplit(' AS ', 1)[0]}) AS {p.rsplit(' AS ', 1)[1]}" for p in projections[1:]
                               if p.startswith("PREDICT")] + ["COUNT(*) AS n"]
    sql = f"SELECT {', '.join(projections)} FROM {fact} {' '.join(joins)}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    if grouped:
        sql += f" GROUP BY {projections[0]}"
    outer = draw(st.sampled_from(("none", "none", "derived", "aggregate", "union")))
    if outer == "derived":
        sql = f"SELECT * FROM ({sql}) AS q"
    elif outer == "aggregate":
        doubles = [alias for alias, one in outputs if one]
        if doubles:
            sums = ", ".join(f"SUM({a}) AS s_{a}, COUNT({a}) AS n_{a}" for a in doubles)
            sql = f"SELECT COUNT(*) AS n, {sums} FROM ({sql}) AS q"
    elif outer == "union":
        sql = f"{sql} UNION ALL {sql}"
    if ctes:
        sql = f"WITH {', '.join(ctes)} {sql}"
    return Query(sql, duck_only)
