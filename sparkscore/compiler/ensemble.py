"""Running an unfused ensemble: each member on its columns of the same batch, then the combiner.

:func:`combine` is the definition of every combiner (see :mod:`sparkscore.ir.ensemble`); the
reference evaluator calls it with the members' reference scores, :func:`compiled` with each
member's compiled scorer, so one UDF call runs every member on one batch.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from sparkscore.compiler.reference import apply_link, linear_link
from sparkscore.ir.ensemble import Ensemble


def member_scorer_models(ens: Ensemble) -> tuple:
    """The model each member is *run* as: its margin model where the combiner reads margins or labels."""
    out = []
    for m in ens.members:
        if ens.combiner == "margin_mean" or (ens.combiner == "vote" and m.labels_from_margins):
            out.append(m.margin_model)
        else:
            out.append(m)
    return tuple(out)


def combine(model, outputs: Sequence[np.ndarray]) -> np.ndarray:
    """The ensemble's scores (what ``Model.scores`` returns) from each member's scores, as run by
    :func:`member_scorer_models` (in member order, each on its columns of the same rows)."""
    ens = model.estimator
    w = ens.weights
    members = ens.members
    if ens.combiner in ("mean", "weighted"):
        parts = [m.outputs_to_proba(S) if m.is_classifier else S for m, S in zip(members, outputs)]
        return _weighted_sum(w, parts)
    if ens.combiner == "margin_mean":
        z = _weighted_sum(w, outputs)
        return z if ens.margins else apply_link(ens.link, z)
    if ens.combiner == "vote":
        n = outputs[0].shape[0]
        shares = np.zeros((n, model.n_classes))
        rows = np.arange(n)
        for i, (m, S) in enumerate(zip(members, outputs)):
            idx = _label_index(m, S)
            shares[rows, idx] += w[i]
        return shares
    feats = []
    for m, S in zip(members, outputs):
        if not m.is_classifier:
            feats.append(S)
        else:
            P = m.outputs_to_proba(S)
            feats.append(P[:, 1:2] if m.n_classes == 2 else P)
    F = np.hstack(feats) if feats else np.zeros((0, 0))
    z = F @ ens.stack.coef + ens.stack.intercept
    return z if ens.margins else linear_link(ens.stack, z)


def _weighted_sum(w: np.ndarray, parts: Sequence[np.ndarray]) -> np.ndarray:
    out = w[0] * np.asarray(parts[0], dtype=np.float64)
    for wi, p in zip(w[1:], parts[1:]):
        out = out + wi * np.asarray(p, dtype=np.float64)
    return out


def _label_index(m, S: np.ndarray) -> np.ndarray:
    """Index (in ``m.classes``) of the label ``m.predict`` gives for its scores / margins ``S``."""
    n = S.shape[0]
    if m.n_classes == 1:
        return np.zeros(n, dtype=np.int64)
    if m.labels_from_margins:
        if S.shape[1] == 1:
            with np.errstate(invalid="ignore"):
                return (S[:, 0] >= 0 if m.decision == "margin_ge" else S[:, 0] > 0).astype(np.int64)
        return np.argmax(S, axis=1)
    return np.argmax(m.outputs_to_proba(S), axis=1)



def run(model, X: np.ndarray, member_scores: Sequence[Callable[[np.ndarray], np.ndarray]]) -> np.ndarray:
    """The ensemble's scores for the union input matrix ``X``: member ``i`` scores ``X[:, positions[i]]``."""
    ens = model.estimator
    outputs = [fn(np.ascontiguousarray(X[:, pos])) for fn, pos in zip(member_scores, ens.positions)]
    return combine(model, outputs)
