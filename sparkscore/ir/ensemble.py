"""Ensembles: several pinned model versions combined into one model (DESIGN section 14).

An :class:`Ensemble` is the estimator of an ``ss.Model`` of kind ``"ensemble"``: its members are
complete models (their own signatures, feature maps and links), each pinned by the registry
name, version and sha256 it was registered from.  The ensemble's signature is the union of the
members' inputs by name (a name two members read with different types is refused), so one call
(one SQL UDF, one ``Model.predict``) hands every member its columns of the same batch.

Combiners (``weights`` are normalised to sum to 1; ``mean`` is equal weights):

* ``mean`` / ``weighted``: regressors -> the weighted mean of the members' values; classifiers ->
  the weighted mean of their class probabilities, label = first argmax (ties: the class listed
  first in ``classes``).
* ``vote``: classifiers only.  Each member's own label (by its own decision rule) gets the member's
  weight; ``predict_proba`` is the vote share and the label its first argmax, so a **tie goes to
  the class listed first in ``classes``** (equal weights count exactly: ties are never broken by
  rounding).
* ``margin_mean``: the weighted mean of the members' *untransformed* outputs (raw margins), then the
  members' common link (sigmoid / softmax / exp / identity, in float64).  For classifiers this is
  the documented alternative to averaging probabilities: it is what one boosted model made of all
  the members' trees computes, so tree (and GLM) members fuse.  Labels: margin > 0 (binary) or the
  first argmax of the margins.
* ``stack``: a GLM (:class:`LinearModel`, given or fitted by the user) over the members' outputs in
  member order: a regressor's values, a binary classifier's P(classes[1]), a multiclass
  classifier's probabilities.

:func:`fuse` turns an ensemble into one plain GLM or one tree ensemble where that is exact up to
float64 reassociation (a weighted sum of margins under one link); every backend and the optimizer
use it, so a fused GLM is inlined / factorized like any GLM.  :func:`combine` is the unfused
definition (:mod:`sparkscore.compiler.ensemble`: the reference evaluator runs it over reference
members, compiled scorers over compiled members).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from sparkscore.errors import IntegrityError, SignatureError, UnsupportedModelError
from sparkscore.ir.features import FeatureMap
from sparkscore.ir.linear import LinearModel
from sparkscore.ir.signature import Column, Signature
from sparkscore.ir.trees import LEAF, TreeEnsemble

COMBINERS = ("mean", "weighted", "vote", "stack", "margin_mean")
#: member links margin_mean may combine, by their float64 name
_MARGIN_LINKS = {"identity": "identity", "logistic": "logistic", "sigmoid": "logistic", "logistic32": "logistic",
                 "softmax": "softmax", "softmax32": "softmax", "exp": "exp", "exp32": "exp", "exp_double": "exp"}


class EnsembleError(UnsupportedModelError):
    """An ensemble whose members or combiner cannot be combined as asked."""


@dataclass(frozen=True)
class MemberRef:
    """The registry version a member was pinned to (``version`` 0: not from a registry)."""

    name: str
    version: int
    sha256: str

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"


@dataclass(frozen=True, eq=False)
class Ensemble:
    """Members + combiner; ``margins`` selects the untransformed output (``Model.margin_model``)."""

    members: tuple            # tuple[Model, ...]
    refs: tuple               # tuple[MemberRef, ...]
    combiner: str
    weights: np.ndarray       # (n_members,) float64, sum 1
    positions: tuple          # per member: int array, its inputs' columns in the union signature
    n_features: int
    n_outputs: int
    stack: LinearModel | None = None
    margins: bool = False

    def __post_init__(self) -> None:
        weights = np.ascontiguousarray(self.weights, dtype=np.float64)
        weights.setflags(write=False)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "members", tuple(self.members))
        object.__setattr__(self, "refs", tuple(self.refs))
        pos = tuple(np.asarray(p, dtype=np.int64) for p in self.positions)
        for p in pos:
            p.setflags(write=False)
        object.__setattr__(self, "positions", pos)

    @property
    def n_members(self) -> int:
        return len(self.members)

    @property
    def link(self) -> str:
        """The link applied after combining (margin_mean / stack); ``identity`` otherwise."""
        if self.combiner == "stack":
            return self.stack.link
        if self.combiner == "margin_mean":
            return _MARGIN_LINKS[member_link(self.members[0])]
        return "identity"


# ---------------------------------------------------------------------------- building
def member_link(model) -> str:
    est = model.estimator
    return est.link if isinstance(est, LinearModel) else getattr(est, "post_transform", "identity")


def union_signature(members: Sequence, name: str) -> tuple[Signature, tuple[np.ndarray, ...]]:
    """Union of the members' inputs by name (first appearance order) and each member's positions in it."""
    columns: dict[str, Column] = {}
    for m in members:
        for col in m.signature.inputs:
            seen = columns.get(col.name)
            if seen is None:
                columns[col.name] = col
            elif seen.dtype != col.dtype or seen.categories != col.categories:
                raise SignatureError(
                    f"ensemble {name!r}: members read input {col.name!r} with different types ({_type(seen)} in one, "
                    f"{_type(col)} in {m.name!r}); rename the column in one member or retrain it on the same type")
            else:
                if col.nullable and not seen.nullable:
                    seen = columns[col.name] = dataclasses.replace(seen, nullable=True)
                if col.accepts is not None:  # a strict member refuses what it never saw: so does the ensemble
                    accepts = col.accepts if seen.accepts is None else tuple(v for v in seen.accepts if v in col.accepts)
                    columns[col.name] = dataclasses.replace(seen, accepts=accepts)
    order = list(columns)
    positions = tuple(np.array([order.index(n) for n in m.signature.names], dtype=np.int64) for m in members)
    return Signature(tuple(columns.values())), positions


def _type(col: Column) -> str:
    return f"{col.dtype}" + (f" with categories {list(col.categories)[:4]}" if col.categories is not None else "")


def output_width(model) -> int:
    """Columns a member contributes to a stack: values, P(classes[1]) for binary, all probabilities."""
    if not model.is_classifier:
        return model.estimator.n_outputs
    return 1 if model.n_classes == 2 else model.n_classes


def build(members: Sequence, combiner: str, weights: Sequence[float] | None = None, *,
          refs: Sequence[MemberRef] | None = None, stack=None, classes: Sequence | None = None,
          name: str = "ensemble", metadata: dict | None = None):
    """The ensemble ``Model`` over ``members`` (``ss.Model`` each), checked as described in the module docstring."""
    from sparkscore.ir.model import Model

    members = tuple(members)
    if combiner not in COMBINERS:
        raise EnsembleError(f"ensemble {name!r}: unknown combiner {combiner!r}; use one of {', '.join(COMBINERS)}")
    if not members:
        raise EnsembleError(f"ensemble {name!r}: no members; pass at least one model ref")
    for m in members:
        if not isinstance(m, Model):
            raise EnsembleError(f"ensemble {name!r}: member {m!r} is not an ss.Model; pass registry refs or ss.convert(...) models")
    refs = tuple(refs) if refs is not None else tuple(MemberRef(m.name, 0, m.sha256) for m in members)
    if len(refs) != len(members):
        raise EnsembleError(f"ensemble {name!r}: {len(refs)} refs for {len(members)} members")
    k = len(members)
    if weights is None:
        if combiner == "weighted":
            raise EnsembleError(f"ensemble {name!r}: combiner 'weighted' needs weights=[...], one per member")
        w = np.full(k, 1.0 / k)
    else:
        if combiner == "mean" or combiner == "stack":
            raise EnsembleError(f"ensemble {name!r}: combiner {combiner!r} takes no weights; use combiner='weighted'"
                                if combiner == "mean" else f"ensemble {name!r}: a stack's weights are its GLM's coefficients")
        w = np.asarray(weights, dtype=np.float64).ravel()
        if w.shape != (k,) or not np.isfinite(w).all() or (w <= 0).any():
            raise EnsembleError(f"ensemble {name!r}: weights must be {k} finite positive numbers (one per member), "
                                f"got {list(np.asarray(weights).ravel())}")
        w = w / w.sum()
    signature, positions = union_signature(members, name)
    tasks = {m.task for m in members}
    decision = "proba"
    stack_est = None
    if combiner in ("mean", "weighted", "vote", "margin_mean"):
        if len(tasks) != 1:
            raise EnsembleError(f"ensemble {name!r}: combiner {combiner!r} needs all regressors or all classifiers; "
                                "use combiner='stack' to combine both")
        task = tasks.pop()
        if task == "classification":
            out_classes = members[0].classes
            for m in members[1:]:
                if tuple(m.classes) != tuple(out_classes):
                    raise EnsembleError(f"ensemble {name!r}: member {m.name!r} has classes {list(m.classes)} but "
                                        f"{members[0].name!r} has {list(out_classes)}; members must share classes in one order")
            n_out = members[0].estimator.n_outputs if combiner == "margin_mean" else len(out_classes)
        else:
            if combiner == "vote":
                raise EnsembleError(f"ensemble {name!r}: combiner 'vote' needs classifiers; use 'mean' or 'weighted' for regressors")
            out_classes = None
            n_out = members[0].estimator.n_outputs
            if any(m.estimator.n_outputs != n_out for m in members):
                raise EnsembleError(f"ensemble {name!r}: regressors with different output counts "
                                    f"({[m.estimator.n_outputs for m in members]})")
        if combiner == "margin_mean":
            links = {_MARGIN_LINKS.get(member_link(m)) for m in members}
            if None in links or len(links) != 1:
                raise EnsembleError(f"ensemble {name!r}: margin_mean needs one shared link among identity/sigmoid/softmax/exp, "
                                    f"got {sorted({member_link(m) for m in members})}; use combiner='mean'")
            if any(m.estimator.n_outputs != n_out for m in members):
                raise EnsembleError(f"ensemble {name!r}: margin_mean members with different margin widths")
            if task == "classification":
                decision = "margin"
    else:  # stack
        if stack is None:
            raise EnsembleError(f"ensemble {name!r}: combiner 'stack' needs stack=LinearModel(coef, intercept, link) "
                                "over the members' outputs")
        stack_model = stack if isinstance(stack, Model) else None
        stack_est = stack.estimator if stack_model is not None else stack
        if not isinstance(stack_est, LinearModel) or (stack_model is not None and stack_model.features):
            raise EnsembleError(f"ensemble {name!r}: stack must be a LinearModel (or an ss.Model of one without "
                                "preprocessing), got " + type(stack_est).__name__)
        if stack_est.dtype != "float64" or stack_est.accumulate != "blas":
            raise EnsembleError(f"ensemble {name!r}: stack must be a float64 GLM")
        width = sum(output_width(m) for m in members)
        if stack_est.n_features != width:
            raise EnsembleError(f"ensemble {name!r}: stack GLM takes {stack_est.n_features} features but the members "
                                f"give {width} outputs (values, P(class 1) of binary, probabilities of multiclass)")
        n_out = stack_est.n_outputs
        if stack_est.link in ("identity", "exp"):
            task, out_classes = "regression", None
        else:
            task = "classification"
            out_classes = tuple(classes) if classes is not None else (
                stack_model.classes if stack_model is not None and stack_model.classes else None)
            if out_classes is None:
                shared = {tuple(m.classes) for m in members if m.is_classifier}
                if len(shared) != 1 or not all(m.is_classifier for m in members):
                    raise EnsembleError(f"ensemble {name!r}: a {stack_est.link} stack needs classes=[...] "
                                        "(the members do not share one set of classes)")
                out_classes = shared.pop()
            if stack_model is not None:
                decision = stack_model.decision
    if classes is not None and combiner != "stack" and tuple(classes) != tuple(out_classes or ()):
        raise EnsembleError(f"ensemble {name!r}: classes= applies to stack ensembles only")
    est = Ensemble(members, refs, combiner, w, positions, len(signature), n_out, stack_est)
    rules = {m.metadata.get("feature_name_rule") for m in members} - {None}
    meta = {"source": "sparkscore.ensemble", "name": name, **({"feature_name_rule": rules.pop()} if len(rules) == 1 else {}),
            **(metadata or {})}
    return Model(est, signature, (), task, out_classes, meta, decision)


# ---------------------------------------------------------------------------- margins
def margin_version(model):
    """``model.margin_model`` of an ensemble: defined where the combiner has margins."""
    ens = model.estimator
    if ens.combiner in ("margin_mean", "stack"):
        return dataclasses.replace(model, estimator=dataclasses.replace(ens, margins=True))
    if not model.is_classifier and all(member_link(m) == "identity" for m in ens.members):
        return model
    raise EnsembleError(f"ensemble {model.name!r}: combiner {ens.combiner!r} averages transformed outputs, so it has no "
                        "raw margin; use PREDICT / PREDICT_PROBA, or combiner='margin_mean'")


# ---------------------------------------------------------------------------- fusion
def fuse(model):
    """(one plain GLM / tree-ensemble ``Model`` equal to the ensemble, None) or (None, why not).

    Exact up to float64 reassociation (rtol 1e-9 in the tests): the ensemble must be a weighted
    sum of margins under one link (``mean`` / ``weighted`` regressors with identity links,
    ``margin_mean``, a single-output ``stack`` over single-output identity-link regressors), and
    its members all GLMs or all tree ensembles that one IR can hold.
    """
    ens = model.estimator
    plan = _linear_plan(model)
    if isinstance(plan, str):
        return None, plan
    kinds = {m.kind for m in ens.members}
    if kinds == {"linear"}:
        return _fuse_glms(model, *plan)
    if kinds == {"trees"}:
        return _fuse_trees(model, *plan)
    return None, f"members are {' and '.join(sorted(kinds))}: no single GLM or tree ensemble holds them"


def _linear_plan(model):
    """(weights, extra intercept, link) when the ensemble is ``link(sum w_i margin_i + b)``, else why not."""
    ens = model.estimator
    identity = all(member_link(m) == "identity" for m in ens.members)
    if ens.combiner == "margin_mean":
        link = _MARGIN_LINKS[member_link(ens.members[0])]
        return ens.weights, np.zeros(ens.n_outputs), "identity" if ens.margins else link
    if ens.combiner in ("mean", "weighted"):
        if model.is_classifier or not identity:
            what = "classifiers' probabilities" if model.is_classifier else "non-identity links"
            return f"{ens.combiner} of {what} is not a sum of margins (margin_mean would fuse)"
        return ens.weights, np.zeros(ens.n_outputs), "identity"
    if ens.combiner == "stack":
        stack = ens.stack
        if any(m.is_classifier for m in ens.members) or not identity:
            return "a stack over classifiers' probabilities or non-identity links is not a sum of margins"
        if stack.n_outputs != 1 or any(m.estimator.n_outputs != 1 for m in ens.members):
            return "a multi-output stack"
        if stack.link not in _FUSED_LINKS:
            return f"a stack with link {stack.link!r}"
        return stack.coef[:, 0], stack.intercept, "identity" if ens.margins else stack.link
    return f"combiner {ens.combiner!r} is not a weighted sum of margins"


#: GLM link -> the tree post-transform computing the same function in float64
_FUSED_LINKS = {"identity": "identity", "logistic": "sigmoid", "softmax": "softmax", "exp": "exp"}


def _fused_model(model, estimator, features=()):
    from sparkscore.ir.model import Model

    meta = {**model.metadata, "derived": "ensemble_fused"}
    return Model(estimator, model.signature, tuple(features), model.task, model.classes, meta, model.decision)


def _fuse_glms(model, weights, extra, link):
    ens = model.estimator
    for m in ens.members:
        est = m.estimator
        if est.dtype != "float64" or est.accumulate != "blas":
            return None, f"member {m.name!r} is a float32 GLM (its margins round to float32)"
        if len(m.features) > 1:
            return None, f"member {m.name!r} has {len(m.features)} chained feature maps"
    if ens.combiner == "margin_mean" and not ens.margins:
        link = ens.members[0].estimator.link  # the members' own name for it
    d, k = ens.n_features, ens.n_outputs
    intercept = sum(w * m.estimator.intercept for w, m in zip(weights, ens.members)) + extra
    if not any(m.features for m in ens.members):  # coefficients of shared inputs add up
        coef = np.zeros((d, k))
        for w, m, pos in zip(weights, ens.members, ens.positions):
            np.add.at(coef, pos, w * m.estimator.coef)
        return _fused_model(model, LinearModel(coef, intercept, link)), \
            f"{ens.n_members} GLMs -> one {d}x{k} GLM (weighted sums of coefficients and intercepts)"
    parts = []  # one feature block per member, its rows of the stacked coefficients
    for w, m, pos in zip(weights, ens.members, ens.positions):
        fmap = m.features[0] if m.features else FeatureMap.identity(len(m.signature))
        parts.append((dataclasses.replace(fmap, n_inputs=d, source=pos[fmap.source]), w * m.estimator.coef))
    fmap = FeatureMap(d, *(np.concatenate([getattr(f, a) for f, _ in parts])
                           for a in ("kind", "source", "fill", "center", "scale", "category")))
    coef = np.vstack([c for _, c in parts])
    return _fused_model(model, LinearModel(coef, intercept, link), (fmap,)), \
        f"{ens.n_members} GLMs -> one {fmap.n_outputs}x{k} GLM over their stacked feature maps"


_SAME_TREE_FIELDS = ("cmp", "threshold_dtype", "cat_negative_before_trunc")


def _fuse_trees(model, weights, extra, link):
    ens = model.estimator
    first = ens.members[0].estimator
    for m in ens.members:
        est = m.estimator
        if m.features:
            return None, f"member {m.name!r} has trees over a feature map"
        if est.accumulate_dtype != "float64":
            return None, f"member {m.name!r} sums its trees in float32 (a fused float32 sum would round differently)"
        for f in _SAME_TREE_FIELDS:
            if getattr(est, f) != getattr(first, f):
                return None, f"members differ in {f} ({getattr(first, f)!r} vs {getattr(est, f)!r})"
        if not np.array_equal(est.missing_value, first.missing_value):
            return None, "members treat different values as missing"
        if est.value.shape[1] != first.value.shape[1]:
            return None, "members have different leaf widths"
    post = first.post_transform if ens.combiner == "margin_mean" and not ens.margins else _FUSED_LINKS[link]
    n_words = max(m.estimator.cat_words.shape[1] for m in ens.members)
    cols = {name: [] for name in ("feature", "threshold", "left", "right", "default_left", "missing",
                                  "is_categorical", "cat_index")}
    values, words, roots, outs = [], [], [], []
    base = np.asarray(extra, dtype=np.float64).copy()
    offset = n_cat = 0
    for w, m, pos in zip(weights, ens.members, ens.positions):
        est = m.estimator
        leaf = est.feature == LEAF
        cols["feature"].append(np.where(leaf, LEAF, pos[np.maximum(est.feature, 0)]))
        cols["threshold"].append(est.threshold)
        cols["left"].append(np.where(leaf, -1, est.left + offset))
        cols["right"].append(np.where(leaf, -1, est.right + offset))
        cols["default_left"].append(est.default_left)
        cols["missing"].append(est.missing)
        cols["is_categorical"].append(est.is_categorical)
        cols["cat_index"].append(np.where(est.cat_index >= 0, est.cat_index + n_cat, -1))
        scale = w if est.aggregation == "sum" else w / max(est.n_trees, 1)
        values.append(est.value * scale)
        cw = np.zeros((est.cat_words.shape[0], n_words), dtype=np.uint32)
        cw[:, :est.cat_words.shape[1]] = est.cat_words
        words.append(cw)
        roots.append(est.roots + offset)
        outs.append(est.tree_output)
        base = base + w * est.base_score
        offset += est.n_nodes
        n_cat += est.cat_words.shape[0]
    fused = TreeEnsemble(**{k: np.concatenate(v) for k, v in cols.items()}, cat_words=np.vstack(words),
                         value=np.vstack(values), roots=np.concatenate(roots), tree_output=np.concatenate(outs),
                         n_features=ens.n_features, n_outputs=ens.n_outputs, base_score=base, cmp=first.cmp,
                         threshold_dtype=first.threshold_dtype, accumulate_dtype="float64", aggregation="sum",
                         post_transform=post, cat_negative_before_trunc=first.cat_negative_before_trunc,
                         missing_value=first.missing_value)
    return _fused_model(model, fused), \
        f"{ens.n_members} tree ensembles -> one of {fused.n_trees} trees (same leaves scaled by the weights, base scores combined)"


# ---------------------------------------------------------------------------- format
def to_doc(ens: Ensemble) -> tuple[dict, dict[str, np.ndarray]]:
    """JSON fields and arrays of the ensemble (members are stored by ref; their files beside it)."""
    doc = {"combiner": ens.combiner, "members": [dataclasses.asdict(r) for r in ens.refs],
           "n_outputs": ens.n_outputs, "stack": None}
    arrays = {"weights": ens.weights}
    if ens.stack is not None:
        doc["stack"] = {"link": ens.stack.link}
        arrays["stack.coef"] = ens.stack.coef
        arrays["stack.intercept"] = ens.stack.intercept
    return doc, arrays


def from_doc(doc: dict, arrays: dict[str, np.ndarray], members: Sequence, signature: Signature) -> Ensemble:
    refs = tuple(MemberRef(r["name"], int(r["version"]), r["sha256"]) for r in doc["members"])
    if len(refs) != len(members):
        raise ValueError(f"the ensemble pins {len(refs)} members but {len(members)} were loaded")
    stack = None
    if doc.get("stack") is not None:
        stack = LinearModel(arrays["stack.coef"], arrays["stack.intercept"], doc["stack"]["link"])
    order = list(signature.names)
    positions = tuple(np.array([order.index(n) for n in m.signature.names], dtype=np.int64) for m in members)
    if doc["combiner"] not in COMBINERS:
        raise ValueError(f"unknown combiner {doc['combiner']!r}")
    return Ensemble(tuple(members), refs, doc["combiner"], arrays["weights"], positions, len(signature),
                    int(doc["n_outputs"]), stack)


def check_member(ref: MemberRef, member, where: str) -> None:
    if member.sha256 != ref.sha256:
        raise IntegrityError(f"{where}: ensemble member {ref.ref} has sha256 {member.sha256[:12]}... but the ensemble "
                             f"pinned {ref.sha256[:12]}...; the member files were modified: register the ensemble again")


__all__ = ["COMBINERS", "Ensemble", "EnsembleError", "MemberRef", "build", "fuse"]
