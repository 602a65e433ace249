"""The monitoring SQL, built as sqlglot ASTs for the engine's dialect (never string concatenation).

Two queries over the user's data:

* :func:`scored_query` -- the profiled columns in a fixed order: every model input (numeric ones
  as DOUBLE), the model's own ``PREDICT(ref, *)`` output (so the prediction comes from the engine in
  the same scan, inlined or as a UDF by the optimizer) and the label.  Columns are aliased
  ``c0, c1, ...`` so no user name needs to be a valid alias.
* :func:`aggregate_query` -- ONE aggregate over that projection (which the engine plans once, PREDICT
  included, as a view that the sketch stream and the aggregate both read): row count, per numeric column the
  NULL / NaN / ±inf / finite counts, min / max / mean / population variance of the finite values
  and the cumulative histogram ``COUNT(x < e_i)`` on the stored edges; per categorical column the
  count of each stored category.  Slices become ``GROUP BY`` keys of the same query.

Comparisons are chosen so NaN and NULL never land in a bin in either engine: both order NaN above
every number, so ``x < e`` is false for NaN, and a NULL comparison is not true.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from sqlglot import exp

from sparkscore.optimizer.nodes import ScorePredict, ScorePredictProba, number

SOURCE = "__ss_batch"
SCORED = "__ss_scored"
PROBA = "pp"  # the PREDICT_PROBA column of the scored projection (multiclass quality)


@dataclass(frozen=True)
class AggColumn:
    """One profiled column as the aggregate sees it: its alias in the scored query and what to count."""

    alias: str
    kind: str                          # numeric | categorical
    edges: tuple[float, ...] = ()      # interior histogram edges (numeric)
    categories: tuple[Any, ...] = ()   # stored categories (categorical)


def scored_query(source: exp.Expression, ref: str, inputs: Sequence[tuple[str, str]], label: str | None,
                 slices: Sequence[exp.Expression] = (), proba: bool = False) -> exp.Select:
    """``SELECT <inputs as c0..>, PREDICT(ref, <inputs>) AS cN [, label AS cL] [, slice keys s0..] [, proba AS pp]
    FROM (source)``.

    ``inputs``: (data column name, kind) in signature order, the columns ``Model.bind_columns``
    bound to the signature; numeric inputs are cast to DOUBLE.  PREDICT takes those same columns
    *by position*, so the prediction and the profiled inputs come from one binding (a LightGBM
    model fitted on ``Age (yrs)``, whose signature says ``Age_(yrs)``, reads ``Age (yrs)`` in both).
    ``proba``: also ``PREDICT_PROBA`` as ``pp`` (multiclass quality: the per-class scores of the AUC
    and the top-label confidence of the calibration error).
    """
    projections: list[exp.Expression] = []
    columns = [exp.column(name, table=SOURCE, quoted=True) for name, _ in inputs]
    for i, ((name, kind), column) in enumerate(zip(inputs, columns)):
        value = exp.cast(column.copy(), exp.DataType.Type.DOUBLE) if kind == "numeric" else column.copy()
        projections.append(exp.alias_(value, f"c{i}"))
    projections.append(exp.alias_(ScorePredict(this=exp.Literal.string(ref), expressions=[c.copy() for c in columns]),
                                  f"c{len(inputs)}"))
    if label is not None:
        projections.append(exp.alias_(exp.column(label, table=SOURCE, quoted=True), f"c{len(inputs) + 1}"))
    for i, key in enumerate(slices):
        projections.append(exp.alias_(key, f"s{i}"))
    if proba:
        projections.append(exp.alias_(ScorePredictProba(this=exp.Literal.string(ref),
                                                        expressions=[c.copy() for c in columns]), PROBA))
    return exp.select(*projections).from_(exp.Subquery(this=source, alias=exp.TableAlias(this=exp.to_identifier(SOURCE))))


def stream_query(scored: exp.Expression, n_columns: int, n_keys: int = 0) -> exp.Select:
    """The scored columns (what the sketches read), in order, then the slice keys ``s0..`` (per-slice sketches)."""
    return exp.select(*[exp.column(f"c{i}", table=SCORED) for i in range(n_columns)],
                      *[exp.column(f"s{i}", table=SCORED) for i in range(n_keys)]).from_(_scored_source(scored))


def _scored_source(scored: exp.Expression) -> exp.Expression:
    """The scored projection as ``__ss_scored``: a view the engine planned once (a table), or the SELECT itself."""
    if isinstance(scored, exp.Table):
        return exp.Table(this=scored.this.copy(), alias=exp.TableAlias(this=exp.to_identifier(SCORED)))
    return exp.Subquery(this=scored, alias=exp.TableAlias(this=exp.to_identifier(SCORED)))


def _count_if(condition: exp.Expression) -> exp.Expression:
    """``SUM(CASE WHEN cond THEN 1 ELSE 0 END)``: portable across DuckDB and Spark (NULL -> 0)."""
    return exp.Sum(this=exp.Case(ifs=[exp.If(this=condition, true=exp.Literal.number(1))],
                                 default=exp.Literal.number(0)))


def _literal(value: Any) -> exp.Expression:
    if isinstance(value, bool):
        return exp.Boolean(this=value)
    if isinstance(value, (int, float)):
        return number(float(value))
    return exp.Literal.string(str(value))


def _proba(c: int) -> exp.Expression:
    """Column ``c`` of the scored PREDICT_PROBA array (sqlglot's 0-based index: ``pp[1]`` in DuckDB, ``pp[0]`` in Spark)."""
    # returns_list_for_maps: a list, never a map (spares sqlglot's DuckDB generator a type annotation per call)
    return exp.Bracket(this=exp.column(PROBA, table=SCORED), expressions=[exp.Literal.number(c)],
                       returns_list_for_maps=True)


def _class_scores(q: "Quality") -> list[tuple[exp.Expression, exp.Expression]]:
    """(score, is-positive condition) per ranked problem: the one binary problem, or one-vs-rest per class."""
    y = exp.column(q.label, table=SCORED)
    if q.task == "binary":
        return [(exp.column(q.prediction, table=SCORED), exp.EQ(this=y, expression=_literal(q.positive)))]
    return [(_proba(c), exp.EQ(this=y.copy(), expression=_literal(value))) for c, value in enumerate(q.classes)]


@dataclass(frozen=True)
class Quality:
    """Quality metrics of the prediction against the label, per slice (aliases in the scored query).

    ``task``: ``binary`` (prediction = P(positive), label compared with ``positive``), ``multiclass``
    (prediction = label; with ``classes``, the scored query also holds ``PREDICT_PROBA`` as
    :data:`PROBA`, column ``i`` the probability of ``classes[i]``: one-vs-rest AUC and top-label
    calibration) or ``regression``.
    """

    prediction: str
    label: str
    task: str
    positive: Any = None
    classes: tuple = ()


LOGLOSS_EPS = 1e-15  # probabilities clipped to [eps, 1 - eps] before the log (sklearn's log_loss convention)


def _quality(q: Quality) -> list[tuple[str, exp.Expression]]:
    p, y = exp.column(q.prediction, table=SCORED), exp.column(q.label, table=SCORED)
    both = exp.and_(exp.Not(this=exp.Is(this=p.copy(), expression=exp.Null())),
                    exp.Not(this=exp.Is(this=y.copy(), expression=exp.Null())))

    def avg(value: exp.Expression) -> exp.Expression:
        return exp.Avg(this=exp.Case(ifs=[exp.If(this=both.copy(), true=value)]))

    if q.task == "regression":
        err = exp.Sub(this=exp.cast(p.copy(), exp.DataType.Type.DOUBLE), expression=exp.cast(y.copy(), exp.DataType.Type.DOUBLE))
        return [("n_scored", _count_if(both.copy())),
                ("mse", avg(exp.Mul(this=exp.Paren(this=err.copy()), expression=exp.Paren(this=err.copy())))),
                ("mae", avg(exp.Abs(this=err.copy())))]
    if q.task == "multiclass":
        hit = exp.EQ(this=exp.cast(p.copy(), exp.DataType.Type.VARCHAR), expression=exp.cast(y.copy(), exp.DataType.Type.VARCHAR))
        out = [("n_scored", _count_if(both.copy())), ("accuracy", avg(exp.Case(ifs=[exp.If(this=hit.copy(), true=exp.Literal.number(1))],
                                                                            default=exp.Literal.number(0))))]
        if q.classes:
            scored = exp.and_(both.copy(), exp.Not(this=exp.Is(this=_proba(0), expression=exp.Null())))
            out.append(("n_proba", _count_if(scored.copy())))
            out += [(f"positives:{c}", _count_if(exp.and_(scored.copy(), cond))) for c, (_, cond) in enumerate(_class_scores(q))]
            # top-label calibration: confidence = the greatest class probability, "positive" = the label was predicted
            confidence = exp.Greatest(this=_proba(0), expressions=[_proba(c) for c in range(1, len(q.classes))])
            out += _reliability(confidence, scored, hit)
        return out
    pos = exp.EQ(this=y.copy(), expression=_literal(q.positive))
    clipped = exp.Greatest(this=number(LOGLOSS_EPS), expressions=[exp.Least(this=p.copy(), expressions=[number(1 - LOGLOSS_EPS)])])
    outcome = exp.Case(ifs=[exp.If(this=pos.copy(), true=number(1.0))], default=number(0.0))
    predicted = exp.Case(ifs=[exp.If(this=exp.GTE(this=p.copy(), expression=number(0.5)), true=number(1.0))], default=number(0.0))
    diff = exp.Sub(this=p.copy(), expression=outcome.copy())
    return [("n_scored", _count_if(both.copy())),
            ("accuracy", avg(exp.Case(ifs=[exp.If(this=exp.EQ(this=predicted, expression=outcome.copy()), true=number(1.0))],
                                      default=number(0.0)))),
            ("log_loss", avg(exp.Neg(this=exp.Case(ifs=[exp.If(this=pos.copy(), true=exp.Ln(this=clipped.copy()))],
                                                   default=exp.Ln(this=exp.Sub(this=number(1.0), expression=clipped.copy())))))),
            ("brier", avg(exp.Mul(this=exp.Paren(this=diff.copy()), expression=exp.Paren(this=diff.copy())))),
            ("positives", _count_if(exp.and_(both.copy(), pos.copy()))),
            *_reliability(p, both, pos)]


#: interior edges of the reliability bins: ``numpy.linspace(0, 1, 11)[1:-1]`` like
#: ``sklearn.calibration.calibration_curve(n_bins=10, strategy="uniform")``, whose bin of ``p`` is the
#: number of edges strictly below it (so ``[0, 0.1], (0.1, 0.2], ..., (0.9, 1]``; outside [0, 1] clamps)
RELIABILITY_EDGES = tuple(float(e) for e in np.linspace(0.0, 1.0, 11)[1:-1])


def _reliability(p: exp.Expression, both: exp.Expression, pos: exp.Expression) -> list[tuple[str, exp.Expression]]:
    """Per reliability bin: the scored rows, the sum of their predicted P(positive) and their positives.

    The expected calibration error ``sum_b |sum_p_b - positives_b| / n`` follows from these sums.
    """
    out = []
    edges = RELIABILITY_EDGES
    for b in range(len(edges) + 1):
        inside = [both.copy()]
        if b > 0:
            inside.append(exp.GT(this=p.copy(), expression=number(edges[b - 1])))
        if b < len(edges):
            inside.append(exp.LTE(this=p.copy(), expression=number(edges[b])))
        cond = exp.and_(*inside)
        out += [(f"bin_n:{b}", _count_if(cond.copy())),
                (f"bin_p:{b}", exp.Sum(this=exp.Case(ifs=[exp.If(this=cond.copy(), true=p.copy())]))),
                (f"bin_y:{b}", _count_if(exp.and_(cond.copy(), pos.copy())))]
    return out


AUC_RANK = "__ss_rank"


def _rank_names(q: Quality, problem: int, group: int) -> tuple[str, str]:
    """(alias of the mid-rank column, name of its positives' sum) of ranked problem ``problem`` in grouping set ``group``."""
    if q.task == "binary":
        return f"{AUC_RANK}{group}", f"rank_sum:{group}"
    return f"{AUC_RANK}{problem}_{group}", f"rank_sum:{problem}:{group}"


def _rank_scored(q: Quality) -> exp.Expression:
    """The rows a ranking counts: prediction and label present (and, multiclass, the probabilities)."""
    p, y = exp.column(q.prediction, table=SCORED), exp.column(q.label, table=SCORED)
    terms = [exp.Not(this=exp.Is(this=p, expression=exp.Null())), exp.Not(this=exp.Is(this=y, expression=exp.Null()))]
    if q.task == "multiclass":
        terms.append(exp.Not(this=exp.Is(this=_proba(0), expression=exp.Null())))
    return exp.and_(*terms)


def _ranked(scored: exp.Expression, q: Quality, sets: Sequence[Sequence[int]]) -> exp.Select:
    """The scored rows plus, per ranked problem (the binary one, or one-vs-rest per class of a
    multiclass model) and per grouping set ``j`` (0 = the whole batch), the mid-rank of the score
    among that set's group of scored rows (``RANK() + (ties - 1) / 2``): the exact AUC of each group
    is then ``(sum of positives' mid-ranks - P (P + 1) / 2) / (P N)`` (Mann-Whitney U, ties counted
    one half, as ``sklearn.metrics.roc_auc_score``), summed by the one aggregate.  The price is one
    sort per problem and grouping set, done by the engine."""
    both = _rank_scored(q)
    projections: list[exp.Expression] = [exp.Star()]
    for c, (score, _) in enumerate(_class_scores(q)):
        for j, group in enumerate([(), *sets]):
            keys = [both.copy(), *(exp.column(f"s{i}", table=SCORED) for i in group)]
            rank = exp.Window(this=exp.Anonymous(this="RANK"), partition_by=[k.copy() for k in keys],
                              order=exp.Order(expressions=[exp.Ordered(this=score.copy(), nulls_first=False)]))
            ties = exp.Window(this=exp.Count(this=exp.Star()), partition_by=[*(k.copy() for k in keys), score.copy()])
            mid = exp.Add(this=rank, expression=exp.Div(this=exp.Paren(this=exp.Sub(this=ties, expression=number(1.0))),
                                                       expression=number(2.0)))
            projections.append(exp.alias_(mid, _rank_names(q, c, j)[0]))
    return exp.select(*projections).from_(_scored_source(scored))


def aggregate_query(scored: exp.Expression, columns: Sequence[AggColumn], slice_sets: Sequence[Sequence[int]] = (),
                    quality: Quality | None = None) -> tuple[exp.Select, list[str]]:
    """The ONE aggregate query and the names of its result columns, in order.

    ``slice_sets``: groups of slice-key indices (``s0, s1, ...`` in the scored query); with any,
    the query groups by ``GROUPING SETS ((), set1, set2, ...)`` and returns each key and its
    ``GROUPING()`` flag, so the overall row and every slice come from the same scan.
    """
    names: list[str] = []
    select: list[exp.Expression] = []

    def add(name: str, expression: exp.Expression) -> None:
        names.append(name)
        select.append(exp.alias_(expression, f"a{len(names) - 1}"))

    keys = sorted({i for group in slice_sets for i in group})
    for i in keys:
        add(f"slice:{i}", exp.column(f"s{i}", table=SCORED))
        add(f"grouping:{i}", exp.Anonymous(this="GROUPING", expressions=[exp.column(f"s{i}", table=SCORED)]))
    add("rows", exp.Count(this=exp.Star()))
    for name, expression in _quality(quality) if quality is not None else ():
        add(f"quality:{name}", expression)
    ranked = quality is not None and (quality.task == "binary" or bool(quality.classes))
    if ranked:
        for c, (_, positive) in enumerate(_class_scores(quality)):
            scored_pos = exp.and_(_rank_scored(quality), positive.copy())
            for j in range(len(slice_sets) + 1):
                alias, name = _rank_names(quality, c, j)
                add(f"quality:{name}", exp.Sum(this=exp.Case(ifs=[exp.If(
                    this=scored_pos.copy(), true=exp.column(alias, table=SCORED))])))
    inf, ninf = number(math.inf), number(-math.inf)
    for col in columns:
        x = exp.column(col.alias, table=SCORED)
        add(f"{col.alias}:nonnull", exp.Count(this=x.copy()))
        if col.kind == "numeric":
            finite = exp.and_(exp.GT(this=x.copy(), expression=ninf.copy()), exp.LT(this=x.copy(), expression=inf.copy()))
            only_finite = exp.Case(ifs=[exp.If(this=finite, true=x.copy())])
            add(f"{col.alias}:nans", _count_if(exp.IsNan(this=x.copy())))
            add(f"{col.alias}:pos_inf", _count_if(exp.EQ(this=x.copy(), expression=inf.copy())))
            add(f"{col.alias}:neg_inf", _count_if(exp.EQ(this=x.copy(), expression=ninf.copy())))
            add(f"{col.alias}:finite", exp.Count(this=only_finite.copy()))
            add(f"{col.alias}:min", exp.Min(this=only_finite.copy()))
            add(f"{col.alias}:max", exp.Max(this=only_finite.copy()))
            add(f"{col.alias}:mean", exp.Avg(this=only_finite.copy()))
            add(f"{col.alias}:var", exp.VariancePop(this=only_finite.copy()))
            for j, edge in enumerate(col.edges):
                add(f"{col.alias}:below:{j}", _count_if(exp.LT(this=x.copy(), expression=number(edge))))
        else:
            for j, value in enumerate(col.categories):
                add(f"{col.alias}:cat:{j}", _count_if(exp.EQ(this=x.copy(), expression=_literal(value))))
    query = exp.select(*select).from_(_scored_source(_ranked(scored, quality, slice_sets) if ranked else scored))
    if slice_sets:
        sets = [exp.Tuple(expressions=[])] + [exp.Tuple(expressions=[exp.column(f"s{i}", table=SCORED) for i in group])
                                              for group in slice_sets]
        query.set("group", exp.Group(expressions=[exp.GroupingSets(expressions=sets)]))
    return query, names
