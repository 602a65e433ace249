"""``ss.Model``: one model's IR, signature and metadata, with predict / save / load.

Prediction is delegated to :mod:`sparkscore.compiler` (imported lazily: the one sanctioned
upward call, listed in the layering contract) so that the IR stays a plain data package.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping, Union

import numpy as np

from sparkscore.errors import IntegrityError, SparkscoreError
from sparkscore.ir.features import FeatureMap
from sparkscore.ir.inputs import as_matrix, bind_names
from sparkscore.ir.linear import LinearModel
from sparkscore.ir.serialize import content_sha256, read_dir, to_payload, write_dir
from sparkscore.ir.signature import Signature
from sparkscore.ir.trees import TreeEnsemble

Estimator = Union[LinearModel, TreeEnsemble]
_KINDS = {"linear": LinearModel, "trees": TreeEnsemble}
TASKS = ("regression", "classification")
#: where an ensemble's directory keeps its members' directories (``members/0``, ``members/1``, ...)
ENSEMBLE_MEMBERS = "members"
#: How a classifier picks its label (sklearn's rule per estimator family):
#:
#: * ``proba``: first argmax of ``predict_proba`` (forests, XGBoost softprob, LightGBM, ...);
#: * ``margin``: on the untransformed outputs, binary ``margin > 0`` -> ``classes[1]``, multiclass the
#:   first argmax (``LinearClassifierMixin.predict``: LogisticRegression, SGD, Ridge/Perceptron/SVC;
#:   ``OneVsRestClassifier`` too: in sklearn 1.9 its loop over reversed estimators keeps the first;
#:   HistGradientBoostingClassifier; XGBoost ``multi:softmax``);
#: * ``margin_ge``: binary ``margin >= 0``, multiclass first argmax (GradientBoostingClassifier).
#:
#: Deciding on margins keeps labels exact where probabilities round to a tie (0.5, saturated 1.0,
#: two softmax outputs equal while their margins differ by an ulp).
#: A one-class classifier (fitted on a single label) always predicts that label; its
#: ``predict_proba`` is its single output column, shape (n, 1), whatever the rule.
DECISIONS = ("proba", "margin", "margin_ge")


@dataclass(frozen=True, eq=False)
class Model:
    """A scoring-ready model: ``estimator(features(encode(X)))``.

    ``task`` is ``"regression"`` or ``"classification"``; classifiers carry ``classes`` (labels in
    output order) and ``decision``, the label rule (:data:`DECISIONS`).  A classifier fitted on one
    class has one output column (its probability, 1.0) and predicts that class, as sklearn does.
    ``metadata`` is JSON-able (source library, version, class name, ...).
    """

    estimator: Estimator
    signature: Signature
    features: tuple[FeatureMap, ...] = ()
    task: str = "regression"
    classes: tuple | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    decision: str = "proba"

    def __post_init__(self) -> None:
        if self.decision not in DECISIONS:
            raise ValueError(f"Model.decision must be one of {DECISIONS}, got {self.decision!r}")
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "metadata", dict(self.metadata))
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(c.item() if isinstance(c, np.generic) else c for c in self.classes))
        if self.task not in TASKS:
            raise ValueError(f"Model.task must be one of {TASKS}, got {self.task!r}")
        if self.task == "classification" and not self.classes:
            raise ValueError("a classification Model needs its class labels")
        if self.decision not in DECISIONS:
            raise ValueError(f"Model.decision must be one of {DECISIONS}, got {self.decision!r}")
        width = len(self.signature)
        for fmap in self.features:
            if fmap.n_inputs != width:
                raise ValueError(f"FeatureMap expects {fmap.n_inputs} inputs, previous stage gives {width}")
            width = fmap.n_outputs
        if width != self.estimator.n_features:
            raise ValueError(f"estimator takes {self.estimator.n_features} features, preprocessing gives {width}")
        try:
            json.dumps(self.metadata, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"Model.metadata must be JSON-serialisable: {exc}") from None

    # ------------------------------------------------------------------ properties
    @property
    def kind(self) -> str:
        """``linear``, ``trees`` or ``ensemble`` (:mod:`sparkscore.ir.ensemble`)."""
        if isinstance(self.estimator, LinearModel):
            return "linear"
        return "trees" if isinstance(self.estimator, TreeEnsemble) else "ensemble"

    @property
    def is_classifier(self) -> bool:
        return self.task == "classification"

    @property
    def n_classes(self) -> int:
        return len(self.classes) if self.classes else 0

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", "model"))

    @cached_property
    def sha256(self) -> str:
        doc, arrays = self.to_payload()
        from sparkscore.ir.serialize import FORMAT_VERSION

        return content_sha256(dict(doc, format_version=FORMAT_VERSION), arrays)

    # ------------------------------------------------------------------ scoring
    def bind_columns(self, available) -> list:
        """For each input of the signature, the name in ``available`` that binds to it (None: none does):
        the same name, or the one the native library renamed to it (``metadata["feature_name_rule"]``)."""
        return bind_names(self.signature.names, available, self.metadata.get("feature_name_rule"), self.name)

    def to_matrix(self, X) -> np.ndarray:
        """The float64 input matrix (signature order, NULL -> NaN, categories -> codes)."""
        return as_matrix(self.signature, X, self.name, self.metadata.get("feature_name_rule"))

    def scores(self, X, backend: str = "auto", device: str = "cpu") -> np.ndarray:
        """Transformed model outputs (n, k): regression values or class probabilities/scores."""
        from sparkscore import compiler  # lazy: see module docstring

        return compiler.scores(self, self.to_matrix(X), backend=backend, device=device)

    def predict(self, X, backend: str = "auto", device: str = "cpu") -> np.ndarray:
        """Regression values, or class labels for classifiers (by :attr:`decision`)."""
        if self.labels_from_margins:
            return self.margins_to_predictions(self.margin_model.scores(X, backend, device))
        return self.outputs_to_predictions(self.scores(X, backend, device))

    @property
    def labels_from_margins(self) -> bool:
        """Labels come from :attr:`margin_model`'s outputs (see :data:`DECISIONS`)."""
        return self.is_classifier and self.decision != "proba"

    @cached_property
    def margin_model(self) -> "Model":
        """The same model with an identity output: its scores are the untransformed margins."""
        import dataclasses

        if self.kind == "ensemble":
            from sparkscore.ir.ensemble import margin_version

            return margin_version(self)
        est = self.estimator
        field_name = "link" if isinstance(est, LinearModel) else "post_transform"
        return dataclasses.replace(self, estimator=dataclasses.replace(est, **{field_name: "identity"}))

    def predict_proba(self, X, backend: str = "auto", device: str = "cpu") -> np.ndarray:
        """Class probabilities (n, n_classes); binary models give ``[1 - p, p]``, one-class models ``[1]``."""
        if not self.is_classifier:
            raise SparkscoreError(f"{self.name}: predict_proba needs a classifier; this model is a regressor, use predict")
        return self.outputs_to_proba(self.scores(X, backend, device))

    def outputs_to_proba(self, scores: np.ndarray) -> np.ndarray:
        if scores.shape[1] == 1 and self.n_classes != 1:
            p = scores[:, 0]
            if (getattr(self.estimator, "accumulate_dtype", None) == "float32"  # XGBoost: 1 - p in float32
                    or getattr(self.estimator, "accumulate", None) == "float32_sequential"):
                return np.column_stack([np.float32(1.0) - p.astype(np.float32), p]).astype(np.float64)
            return np.column_stack([1.0 - p, p])
        return scores

    def outputs_to_predictions(self, scores: np.ndarray) -> np.ndarray:
        """Regression values, or labels from transformed outputs (:attr:`decision` ``proba``)."""
        if not self.is_classifier:
            return scores[:, 0] if scores.shape[1] == 1 else scores
        if self.n_classes == 1:
            return self._labels(np.zeros(scores.shape[0], dtype=np.int64))
        return self._labels(np.argmax(self.outputs_to_proba(scores), axis=1))

    def margins_to_predictions(self, margins: np.ndarray) -> np.ndarray:
        """Labels from :attr:`margin_model` outputs by the model's margin rule (:data:`DECISIONS`)."""
        n, k = margins.shape
        if self.n_classes == 1:
            idx = np.zeros(n, dtype=np.int64)
        elif k == 1:
            m = margins[:, 0]
            with np.errstate(invalid="ignore"):
                idx = (m >= 0 if self.decision == "margin_ge" else m > 0).astype(np.int64)
        else:
            idx = np.argmax(margins, axis=1)
        return self._labels(idx)

    def _labels(self, idx: np.ndarray) -> np.ndarray:
        return np.asarray(self.classes, dtype=object if isinstance(self.classes[0], str) else None)[idx]

    # ------------------------------------------------------------------ format
    def to_payload(self) -> tuple[dict, dict[str, np.ndarray]]:
        if self.kind == "ensemble":  # members by ref + sha256 (their files are saved beside it)
            from sparkscore.ir.ensemble import to_doc

            est_fields, est_arrays = to_doc(self.estimator)
        else:
            est_fields, est_arrays = to_payload(self.estimator)
        if isinstance(self.estimator, LinearModel):  # defaults left out: float64 GLMs keep their sha256
            for name in ("dtype", "intercept_dtype"):
                if est_fields.get(name) == "float64":
                    del est_fields[name]
            if est_fields.get("accumulate") == "blas":
                del est_fields["accumulate"]
            if not self.estimator.has_missing_value:
                del est_arrays["missing_value"]
        arrays = {f"estimator.{k}": v for k, v in est_arrays.items()}
        feature_docs = []
        for i, fmap in enumerate(self.features):
            fdoc, farrays = to_payload(fmap)
            feature_docs.append(fdoc)
            arrays.update({f"features.{i}.{k}": v for k, v in farrays.items()})
        doc = {
            "kind": self.kind,
            "estimator": est_fields,
            "features": feature_docs,
            "signature": self.signature.to_json(),
            "task": self.task,
            "classes": list(self.classes) if self.classes is not None else None,
            "metadata": self.metadata,
        }
        if self.decision != "proba":  # absent for the default: older models keep their sha256
            doc["decision"] = self.decision
        return doc, arrays

    @classmethod
    def from_payload(cls, doc: dict, arrays: dict[str, np.ndarray], members: tuple = ()) -> "Model":
        """The model of a document; an ensemble's ``members`` are its already loaded, verified member models."""
        try:
            est_arrays = {k.split(".", 1)[1]: v for k, v in arrays.items() if k.startswith("estimator.")}
            if doc["kind"] == "ensemble":
                from sparkscore.ir.ensemble import from_doc

                est = from_doc(doc["estimator"], est_arrays, members, Signature.from_json(doc["signature"]))
            else:
                est = _KINDS[doc["kind"]](**doc["estimator"], **est_arrays)
            features = tuple(
                FeatureMap(**fdoc, **{k.rsplit(".", 1)[1]: v for k, v in arrays.items()
                                      if k.startswith(f"features.{i}.")})
                for i, fdoc in enumerate(doc["features"])
            )
            classes = doc.get("classes")
            return cls(est, Signature.from_json(doc["signature"]), features, doc["task"],
                       tuple(classes) if classes is not None else None, doc.get("metadata") or {},
                       doc.get("decision", "proba"))
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"model document is malformed ({type(exc).__name__}: {exc}); re-register the model") from None

    def save(self, path) -> str:
        """Write the model directory; returns its sha256.  An ensemble also writes each member's
        directory under ``members/<i>`` (its sha256 is in the ensemble's document, so covered)."""
        from pathlib import Path

        if self.kind == "ensemble":
            for i, member in enumerate(self.estimator.members):
                member.save(Path(path) / ENSEMBLE_MEMBERS / str(i))
        doc, arrays = self.to_payload()
        return write_dir(path, doc, arrays)

    @classmethod
    def load(cls, path) -> "Model":
        """Load and verify a model directory (never unpickles); an ensemble's members are loaded from
        ``members/<i>`` and each must match the sha256 the ensemble pinned."""
        from pathlib import Path

        doc, arrays, digest = read_dir(path)
        members: tuple = ()
        if isinstance(doc, dict) and doc.get("kind") == "ensemble":
            from sparkscore.ir.ensemble import MemberRef, check_member

            loaded = []
            for i, ref in enumerate(doc.get("estimator", {}).get("members", [])):
                member = cls.load(Path(path) / ENSEMBLE_MEMBERS / str(i))
                check_member(MemberRef(ref["name"], int(ref["version"]), ref["sha256"]), member, str(path))
                loaded.append(member)
            members = tuple(loaded)
        model = cls.from_payload(doc, arrays, members)
        model.__dict__["sha256"] = digest
        return model

    def __repr__(self) -> str:
        est = self.estimator
        if self.kind == "ensemble":
            size = f"{est.combiner} of {est.n_members} members"
        else:
            size = f"{est.n_trees} trees" if isinstance(est, TreeEnsemble) else f"{est.n_features}x{est.n_outputs} GLM"
        return (f"Model({self.name!r}, {self.kind}: {size}, task={self.task}, "
                f"inputs={len(self.signature)}, source={self.metadata.get('source', '?')})")
