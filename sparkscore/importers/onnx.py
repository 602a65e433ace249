"""ONNX classical-ML graphs (``ai.onnx.ml``) -> IR, read with the ``onnx`` package only.

The oracle is ONNX Runtime (its CPU kernels in ``onnxruntime/core/providers/cpu/ml``); nothing
here imports it.  What a converted model reproduces, and how exactly:

* **Inputs** are ``tensor(float)`` (one ``[N, F]`` input, or several ``[N, k]`` inputs joined by
  ``Concat``).  The signature takes DOUBLE columns; they are rounded to float32 first, as a caller
  must round them to feed the graph.  Double / integer inputs are refused.
* **Trees** (``TreeEnsembleClassifier`` / ``TreeEnsembleRegressor``): ONNX Runtime compares the
  float32 input with the float32 node value (``BRANCH_LEQ/LT/GTE/GT``; ``EQ/NEQ`` are refused) and
  sends NaN to the false branch unless ``nodes_missing_value_tracks_true``.  Elementwise
  preprocessing in front of the trees (``Scaler``: float32 ``(x - offset) * scale``; ``Imputer`` of
  NaN) is monotone per feature, so every node is re-expressed *exactly* on the raw float32 input:
  its true-set over the ordered float32 line is found by bisection on the preprocessing's own
  float32 arithmetic, and NaN's branch by evaluating the preprocessing on NaN.  The IR then holds
  float32 thresholds, one ``<=`` comparison and NaN default sides (modes mixed freely).
  Leaves are summed in float32 in tree order from 0 and ``base_values`` added last (as ONNX
  Runtime's ``TreeAggregatorSum``: they become a trailing one-leaf tree), then the post-transform
  runs in float32 on ``expf`` (``onnx_logistic`` / ``onnx_softmax`` / ``onnx_softmax_zero``).
  Scores are **bit-equal** to ONNX Runtime run with one intra-op thread
  (``SessionOptions.intra_op_num_threads = 1``).  With more threads ONNX Runtime splits the trees
  into one contiguous chunk per thread and adds the chunk sums (measured on onnxruntime 1.32: with
  2 threads, 150 GBM trees, 400 rows, the sum of the two halves reproduces it on every row; 342
  rows differ from the sequential sum in the last bits): thread-count noise, as sklearn forests
  with ``n_jobs > 1``, well within rtol = atol = 1e-6.  ``AVERAGE`` (divides in float32 after the sum), ``MIN``,
  ``MAX`` and ``PROBIT`` have no IR form and are refused.
* **Labels** follow ONNX Runtime's ``TreeAggregatorClassifier``: with more than two classes the
  first class of highest *raw* score (``Model.decision = "margin"``); with two classes and weights
  for class id 0 only (what skl2onnx and onnxmltools write) the positive label when the raw score
  is ``> 0.5`` (all weights positive, no post-transform: probabilities ``[1 - s, s]``) or ``> 0``
  (mixed weights with ``LOGISTIC``: ``[logistic(-s), logistic(s)]``).  Checked against onnxruntime
  1.32, which differs from older releases here.  Weights for class id 1 only (mixed signs): scores
  ``[0, s]`` post-transformed (a single ``base_values`` entry is ignored), label ``s > 0``.  Refused: weights for both
  classes (ONNX Runtime then returns the literal labels 0/1), all-positive weights with
  ``LOGISTIC`` or for class id 1 (labels on raw ``s > 0.5`` while the probabilities are not
  ``[1 - s, s]``), class-id-0 mixed weights without ``LOGISTIC`` (``[-s, s]``).
* **Linear models** (``LinearClassifier`` / ``LinearRegressor``) are float32 GLMs
  (``LinearModel(dtype="float32")``): ONNX Runtime's float32 GEMM sums in its own blocked order
  and its ``LOGISTIC`` / ``SOFTMAX`` are MLAS's vectorised approximations, so values agree within
  a few float32 ulps (rtol 1e-6), not bit for bit.  Labels: raw score ``> 0`` (one score) or the
  first argmax of raw scores.  ``Scaler`` / ``Imputer`` in front become (float64) feature maps,
  so a row whose float32 scaling overflows in ONNX Runtime (``|x|`` within the scale factor of
  FLT_MAX) gets ``+-inf`` there and a finite value here; a trailing ``Normalizer`` of probabilities
  (skl2onnx's multinomial LogisticRegression) is a no-op within the tolerance.
* **Not converted**: ``tensor(double)`` inputs (skl2onnx's double-input classifiers do not even
  load in onnxruntime 1.32: their probability outputs are typed double) and the ai.onnx.ml opset-5
  ``TreeEnsemble`` (skl2onnx 1.20 and onnxmltools 1.16 still write the opset-3 operators).
* Glue: ``Identity``, ``Cast`` (to float for features, to the label type for labels), ``Reshape`` /
  ``Flatten`` that keep ``[N, F]``, ``Concat`` of inputs on axis 1, ``ZipMap``, ``ArgMax`` of
  probabilities (then labels are the first argmax of the probabilities), and ``Sigmoid`` /
  ``Softmax`` after a linear model's scores.  Anything else is refused naming the op and the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from sparkscore.errors import IntegrityError, UnsupportedModelError
from sparkscore.importers.common import make_signature, resolve_names
from sparkscore.ir.features import FeatureMap
from sparkscore.ir.linear import LinearModel
from sparkscore.ir.model import Model
from sparkscore.ir.trees import MISSING_NAN, TreeBuilder

_FLOAT = 1    # onnx.TensorProto.FLOAT
_INT64 = 7
_STRING = 8
_ML = "ai.onnx.ml"
_MODES = ("BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT")
_TREE_TRANSFORMS = {"NONE": "identity", "LOGISTIC": "onnx_logistic", "SOFTMAX": "onnx_softmax",
                    "SOFTMAX_ZERO": "onnx_softmax_zero"}
_LINEAR_TRANSFORMS = {"NONE": "identity", "LOGISTIC": "logistic", "SOFTMAX": "softmax"}


def _onnx():
    try:
        import onnx
    except ImportError:  # pragma: no cover - the onnx extra
        raise UnsupportedModelError("reading ONNX models needs the onnx package: "
                                    "pip install 'sparkscore[onnx]'") from None
    return onnx


def is_onnx_file(path) -> bool:
    """A ``.onnx`` file (dispatch of ``ss.convert(path)`` / ``reg.register(name, path)``)."""
    p = Path(path)
    return p.suffix.lower() == ".onnx" and p.is_file()


def load_file(path, feature_names: Sequence[str] | None = None) -> Model:
    """Convert a ``.onnx`` file (protobuf; no pickle, no external data)."""
    onnx = _onnx()
    try:
        proto = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends: say which file, not the class
        raise IntegrityError(f"{path}: not a readable ONNX model ({exc}); re-export it") from None
    return convert(proto, feature_names, label=str(path))


# ---------------------------------------------------------------------------- graph values
@dataclass(frozen=True)
class _Col:
    """One feature column: signature input ``source`` after elementwise ``ops`` (in order):
    ``("scale", offset, scale)`` (float32 ``(x - offset) * scale``) or ``("impute", value)``."""

    source: int
    ops: tuple = ()


@dataclass(frozen=True)
class _Features:
    cols: tuple[_Col, ...]


@dataclass(frozen=True)
class _Output:
    """An output of the estimator: ``"label"``, ``"scores"`` (probabilities / regression values)."""

    what: str
    argmax: bool = False  # a label computed by ArgMax over the probabilities


@dataclass
class _Graph:
    """What the walk over the graph's nodes (in their topological order) has learnt so far."""

    label: str
    names: list[str] = field(default_factory=list)       # signature input names
    values: dict = field(default_factory=dict)           # value name -> _Features | _Output
    estimator: object = None                             # the estimator NodeProto
    est_features: _Features | None = None
    score_link: str | None = None                        # Sigmoid / Softmax after a linear model
    producer: str = ""                                   # e.g. "skl2onnx 1.20.0" (provenance)
    opsets: dict = field(default_factory=dict)           # domain -> opset version
    label_casts: list = field(default_factory=list)      # Cast targets applied to the label output


def convert(proto, feature_names: Sequence[str] | None = None, label: str | None = None) -> Model:
    """Convert an ``onnx.ModelProto`` of a classical-ML graph (see the module docstring)."""
    onnx = _onnx()
    graph = proto.graph
    label = label or (f"ONNX model (graph {graph.name!r})" if graph.name else "ONNX model")
    g = _Graph(label, producer=f"{proto.producer_name} {proto.producer_version}".strip(),
               opsets={(o.domain or "ai.onnx"): int(o.version) for o in proto.opset_import})
    init = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    _inputs(g, graph, init, feature_names)
    for node in graph.node:
        _node(g, node, init, onnx)
    if g.estimator is None:
        raise UnsupportedModelError(f"{label}: the graph has no TreeEnsemble*/Linear* estimator node; "
                                    "supported are ONNX classical-ML models (skl2onnx, onnxmltools)")
    outputs = [g.values.get(o.name) for o in graph.output]
    for o, v in zip(graph.output, outputs):
        if not isinstance(v, _Output):
            raise UnsupportedModelError(f"{label}: graph output {o.name!r} is not the estimator's label or "
                                        "scores; only those can be converted")
    argmax_label = any(v.what == "label" and v.argmax for v in outputs)
    model = _estimator(g, onnx, argmax_label)
    return model


def _inputs(g: _Graph, graph, init: dict, feature_names) -> None:
    cols = []
    native = []
    real_inputs = [i for i in graph.input if i.name not in init]
    for inp in real_inputs:
        tt = inp.type.tensor_type if inp.type.HasField("tensor_type") else None
        if tt is None or tt.elem_type != _FLOAT:
            raise UnsupportedModelError(
                f"{g.label}: input {inp.name!r} is not tensor(float); sparkscore converts float32 graphs "
                "(export with FloatTensorType)")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if len(dims) != 2 or dims[1] is None:
            raise UnsupportedModelError(f"{g.label}: input {inp.name!r} has shape {dims}; expected [N, F] with a "
                                        "fixed F")
        width = int(dims[1])
        start = len(cols)
        cols.extend(_Col(start + j) for j in range(width))
        native.extend([inp.name] if width == 1 else [f"{inp.name}_{j}" for j in range(width)])
        g.values[inp.name] = _Features(tuple(cols[start:]))
    if not cols:
        raise UnsupportedModelError(f"{g.label}: the graph has no input")
    names = tuple(native) if len(real_inputs) > 1 or len(cols) == 1 else None
    g.names = list(resolve_names(len(cols), names, feature_names, g.label))


def _attrs(node, onnx) -> dict:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [x.decode() for x in v]
        elif hasattr(v, "dims"):  # TensorProto
            v = onnx.numpy_helper.to_array(v)
        out[a.name] = v
    return out


def _refuse(g: _Graph, node, why: str):
    raise UnsupportedModelError(f"{g.label}: node {node.name or node.output[0]!r} ({node.domain or 'ai.onnx'}."
                                f"{node.op_type}) {why}")


def _features_in(g: _Graph, node, i: int = 0) -> _Features:
    v = g.values.get(node.input[i]) if len(node.input) > i else None
    if not isinstance(v, _Features):
        _refuse(g, node, "does not read the model's feature columns; only a chain from the inputs is supported")
    return v


def _per_col(g: _Graph, node, values, width: int, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float32).ravel()
    if arr.size == 1:
        return np.repeat(arr, width)
    if arr.size != width:
        _refuse(g, node, f"has {arr.size} {what} for {width} columns")
    return arr


def _node(g: _Graph, node, init: dict, onnx) -> None:
    op, domain = node.op_type, node.domain
    a = _attrs(node, onnx)
    ins = [g.values.get(n) for n in node.input]
    if domain in ("", "ai.onnx"):
        if op == "Identity":
            g.values[node.output[0]] = ins[0]
            if ins[0] is None:
                _refuse(g, node, "reads a value sparkscore does not track")
            return
        if op == "Cast":
            src = ins[0]
            if isinstance(src, _Features) and a.get("to") == _FLOAT:
                g.values[node.output[0]] = src
                return
            if isinstance(src, _Output) and src.what == "label" and a.get("to") in (_INT64, _STRING):
                g.values[node.output[0]] = src
                g.label_casts.append(a.get("to"))  # checked against the label type in _estimator
                return
            if isinstance(src, _Output) and src.what == "scores" and a.get("to") == _FLOAT:
                g.values[node.output[0]] = src
                return
            _refuse(g, node, f"casts to type {a.get('to')}; only float features and label-typed labels convert")
        if op in ("Reshape", "Flatten"):
            src = _features_in(g, node)
            if op == "Flatten" and a.get("axis", 1) != 1:
                _refuse(g, node, "flattens on an axis other than 1")
            if op == "Reshape":
                shape = init.get(node.input[1]) if len(node.input) > 1 else None
                ok = shape is not None and list(np.asarray(shape).ravel()) in (
                    [-1, len(src.cols)], [0, len(src.cols)], [0, -1])
                if not ok:
                    _refuse(g, node, f"reshapes to {None if shape is None else list(np.asarray(shape).ravel())}; "
                                     "only [N, F] -> [N, F] is supported")
            g.values[node.output[0]] = src
            return
        if op == "Concat":
            if a.get("axis") not in (1, -1):
                _refuse(g, node, f"concatenates on axis {a.get('axis')}; only axis 1 is supported")
            cols: list[_Col] = []
            for i in range(len(node.input)):
                cols.extend(_features_in(g, node, i).cols)
            g.values[node.output[0]] = _Features(tuple(cols))
            return
        if op in ("Sigmoid", "Softmax") and isinstance(ins[0], _Output) and ins[0].what == "scores":
            if g.estimator is None or g.estimator.op_type not in ("LinearClassifier", "LinearRegressor"):
                _refuse(g, node, "after a tree ensemble: ONNX Runtime's standard-op Sigmoid/Softmax are MLAS "
                                 "approximations with no exact IR form; use the ensemble's post_transform")
            if op == "Softmax" and a.get("axis", -1) not in (1, -1):
                _refuse(g, node, "is not over the class axis")
            if g.score_link is not None or _linear_post(g.estimator, onnx) != "NONE":
                _refuse(g, node, "follows a score that is already transformed")
            g.score_link = "logistic" if op == "Sigmoid" else "softmax"
            g.values[node.output[0]] = ins[0]
            return
        if op == "ArgMax" and isinstance(ins[0], _Output) and ins[0].what == "scores":
            if a.get("axis", 0) not in (1, -1) or a.get("select_last_index", 0) != 0:
                _refuse(g, node, "is not a first-index ArgMax over the class axis")
            g.values[node.output[0]] = _Output("label", argmax=True)
            return
        _refuse(g, node, "is not supported: supported are the ai.onnx.ml estimators, Scaler, Imputer, ZipMap and "
                         "Identity/Cast/Reshape/Flatten/Concat/ArgMax/Sigmoid/Softmax glue")
    if domain != _ML:
        _refuse(g, node, "is from an unknown operator domain")
    if op == "Scaler":
        src = _features_in(g, node)
        n = len(src.cols)
        offset = _per_col(g, node, a.get("offset", [0.0]), n, "offsets")
        scale = _per_col(g, node, a.get("scale", [1.0]), n, "scales")
        if not (np.isfinite(offset).all() and np.isfinite(scale).all()) or (scale == 0).any():
            _refuse(g, node, "has a non-finite offset/scale or a zero scale (not monotone per feature)")
        g.values[node.output[0]] = _Features(tuple(
            _Col(c.source, c.ops + (("scale", np.float32(o), np.float32(s)),))
            for c, o, s in zip(src.cols, offset, scale)))
        return
    if op == "Imputer":
        src = _features_in(g, node)
        if "imputed_value_floats" not in a or "imputed_value_int64s" in a:
            _refuse(g, node, "imputes integers; only float imputation converts")
        replaced = a.get("replaced_value_float", 0.0)
        if not np.isnan(replaced):
            _refuse(g, node, f"replaces the value {replaced!r}; only NaN imputation (replaced_value_float=NaN) "
                             "converts")
        fill = _per_col(g, node, a["imputed_value_floats"], len(src.cols), "imputed values")
        g.values[node.output[0]] = _Features(tuple(
            _Col(c.source, c.ops + (("impute", np.float32(v)),)) for c, v in zip(src.cols, fill)))
        return
    if op in ("TreeEnsembleClassifier", "TreeEnsembleRegressor", "LinearClassifier", "LinearRegressor"):
        if g.estimator is not None:
            _refuse(g, node, "is a second estimator; one estimator per graph converts")
        g.estimator = node
        g.est_features = _features_in(g, node)
        if op.endswith("Classifier"):
            g.values[node.output[0]] = _Output("label")
            if len(node.output) > 1:
                g.values[node.output[1]] = _Output("scores")
        else:
            g.values[node.output[0]] = _Output("scores")
        return
    if op == "ZipMap":
        if not (isinstance(ins[0], _Output) and ins[0].what == "scores"):
            _refuse(g, node, "does not read the classifier's probabilities")
        g.values[node.output[0]] = ins[0]
        return
    if op == "Normalizer":
        if isinstance(ins[0], _Output) and ins[0].what == "scores" and g.estimator.op_type == "LinearClassifier" \
                and a.get("norm") == "L1" and _linear_post(g.estimator, onnx) == "SOFTMAX":
            g.values[node.output[0]] = ins[0]  # L1 of a softmax: the same probabilities within float32 ulps
            return
        _refuse(g, node, "normalises rows (not a per-feature map the IR can fold); only the L1 Normalizer of a "
                         "LinearClassifier's softmax probabilities converts")
    if op == "TreeEnsemble":
        _refuse(g, node, "(ai.onnx.ml opset 5) is not converted yet; export with ai.onnx.ml opset 3 "
                         "(target_opset={'ai.onnx.ml': 3})")
    _refuse(g, node, "is not supported: supported are TreeEnsembleClassifier/Regressor, LinearClassifier/Regressor, "
                     "Scaler, Imputer, Normalizer (after a softmax), ZipMap")


def _linear_post(node, onnx) -> str:
    return _attrs(node, onnx).get("post_transform", "NONE")


# ---------------------------------------------------------------------------- estimators
def _estimator(g: _Graph, onnx, argmax_label: bool) -> Model:
    node = g.estimator
    a = _attrs(node, onnx)
    op = node.op_type
    n_inputs = len(g.names)
    meta = {"source": "onnx", "library_version": str(onnx.__version__), "class": f"{_ML}.{op}",
            "name": op, "onnx_node": node.name or node.output[0], "onnx_producer": g.producer,
            "onnx_opsets": g.opsets}
    classes = None
    if op.endswith("Classifier"):
        ints = a.get("classlabels_int64s", a.get("classlabels_ints"))
        strings = a.get("classlabels_strings")
        classes = tuple(strings) if strings else tuple(int(c) for c in (ints or ()))
        if not classes:
            _refuse(g, node, "has no class labels")
        want = _STRING if strings else _INT64
        if any(c != want for c in g.label_casts):
            _refuse(g, node, "has its labels cast to another type")
    if op.startswith("TreeEnsemble"):
        est, decision = _trees(g, node, a, classes)
        features: tuple[FeatureMap, ...] = ()
    else:
        est, decision = _linear(g, node, a, classes)
        features = _feature_maps(g, n_inputs)
    if argmax_label:
        if classes is None or classes != tuple(range(len(classes))):
            _refuse(g, node, "feeds an ArgMax label output but is not a classifier with labels 0..k-1")
        decision = "proba"
    task = "classification" if classes is not None else "regression"
    n_out = est.n_outputs
    sig = make_signature(g.names, task, classes, n_outputs=n_out)
    return Model(est, sig, features, task, classes, meta, decision)


def _feature_maps(g: _Graph, n_inputs: int) -> tuple[FeatureMap, ...]:
    """Scaler / Imputer chains in front of a GLM as feature maps, one map per chain position."""
    cols = g.est_features.cols
    depth = max((len(c.ops) for c in cols), default=0)
    maps = []
    current = [c.source for c in cols]  # input column each feature reads at this stage
    width = n_inputs
    for level in range(depth):
        m = len(cols)
        fill = np.full(m, np.nan)
        center = np.zeros(m)
        scale = np.ones(m)
        for j, c in enumerate(cols):
            if level < len(c.ops):
                op = c.ops[level]
                if op[0] == "scale":
                    center[j] = float(op[1])
                    scale[j] = 1.0 / float(op[2])
                else:
                    fill[j] = float(op[1])
        maps.append(FeatureMap(width, np.zeros(m), np.asarray(current), fill, center, scale, np.full(m, np.nan)))
        current = list(range(m))
        width = m
    if not maps and [c.source for c in cols] != list(range(n_inputs)):
        maps.append(FeatureMap(n_inputs, np.zeros(len(cols)), np.asarray([c.source for c in cols]),
                               np.full(len(cols), np.nan), np.zeros(len(cols)), np.ones(len(cols)),
                               np.full(len(cols), np.nan)))
    return tuple(maps)


def _linear(g: _Graph, node, a: dict, classes):
    coef = np.asarray(a.get("coefficients", []), dtype=np.float32)
    n_feat = len(g.est_features.cols)
    post = a.get("post_transform", "NONE")
    if node.op_type == "LinearRegressor":
        k = int(a.get("targets", 1))
        intercept = np.asarray(a.get("intercepts", np.zeros(k)), dtype=np.float32)
        if post != "NONE" or g.score_link is not None:
            _refuse(g, node, f"has post_transform {post}; only NONE converts for LinearRegressor")
        link = "identity"
    else:
        intercept = np.asarray(a.get("intercepts", []), dtype=np.float32)
        k = len(intercept)
        if k == 1:
            if len(classes) != 2:
                _refuse(g, node, "has one score but not two class labels")
            if post != "NONE" or g.score_link is not None:
                _refuse(g, node, f"has one score and post_transform {post}: ONNX Runtime then returns the raw "
                                 "[1 - s, s]; only NONE converts")
        elif k != len(classes):
            _refuse(g, node, f"has {k} scores for {len(classes)} class labels")
        if post not in _LINEAR_TRANSFORMS:
            _refuse(g, node, f"has post_transform {post}; supported are {sorted(_LINEAR_TRANSFORMS)}")
        link = g.score_link or _LINEAR_TRANSFORMS[post]
        if link == "softmax" and k == 1:
            _refuse(g, node, "has a softmax over one score")
    if coef.size != k * n_feat or intercept.shape != (k,):
        _refuse(g, node, f"has {coef.size} coefficients / {intercept.size} intercepts for {k} outputs x "
                         f"{n_feat} features")
    est = LinearModel(coef.reshape(k, n_feat).T.astype(np.float64), intercept.astype(np.float64), link,
                      dtype="float32", intercept_dtype="float32")
    return est, ("margin" if classes is not None else "proba")


# ---------------------------------------------------------------------------- trees
def _trees(g: _Graph, node, a: dict, classes):
    is_clf = node.op_type == "TreeEnsembleClassifier"
    for key in ("nodes_values_as_tensor", "base_values_as_tensor", "class_weights_as_tensor",
                "target_weights_as_tensor"):
        if key in a:
            _refuse(g, node, f"has double attributes ({key}); sparkscore converts float32 ensembles")
    agg = a.get("aggregate_function", "SUM")
    if agg != "SUM":
        _refuse(g, node, f"has aggregate_function {agg}; only SUM converts (AVERAGE divides the float32 sum, "
                         "MIN/MAX select: no IR form)")
    post = a.get("post_transform", "NONE")
    if post not in _TREE_TRANSFORMS:
        _refuse(g, node, f"has post_transform {post}; supported are {sorted(_TREE_TRANSFORMS)}")
    prefix = "class_" if is_clf else "target_"
    tree_ids = np.asarray(a.get("nodes_treeids", []), dtype=np.int64)
    node_ids = np.asarray(a.get("nodes_nodeids", []), dtype=np.int64)
    feat = np.asarray(a.get("nodes_featureids", []), dtype=np.int64)
    modes = list(a.get("nodes_modes", []))
    values = np.asarray(a.get("nodes_values", np.zeros(len(modes))), dtype=np.float32)
    true_ids = np.asarray(a.get("nodes_truenodeids", []), dtype=np.int64)
    false_ids = np.asarray(a.get("nodes_falsenodeids", []), dtype=np.int64)
    tracks = np.asarray(a.get("nodes_missing_value_tracks_true", np.zeros(len(modes))), dtype=np.int64)
    n = len(modes)
    if not n or any(len(x) != n for x in (tree_ids, node_ids, feat, values, true_ids, false_ids, tracks)):
        _refuse(g, node, "has node attributes of different lengths")
    w_tree = np.asarray(a.get(prefix + "treeids", []), dtype=np.int64)
    w_node = np.asarray(a.get(prefix + "nodeids", []), dtype=np.int64)
    w_id = np.asarray(a.get(prefix + "ids", []), dtype=np.int64)
    w_val = np.asarray(a.get(prefix + "weights", []), dtype=np.float32)
    if not (len(w_tree) == len(w_node) == len(w_id) == len(w_val)):
        _refuse(g, node, f"has {prefix}* attributes of different lengths")
    base = np.asarray(a.get("base_values", []), dtype=np.float32)
    bad = sorted({m for m in modes if m not in _MODES and m != "LEAF"})
    if bad:
        _refuse(g, node, f"has node modes {bad}; supported are {list(_MODES)} (EQ/NEQ/MEMBER splits are not "
                         "monotone in the input; converters write them for categorical splits: convert the native "
                         "LightGBM/XGBoost model with ss.convert instead)")
    n_cols = len(g.est_features.cols)
    internal = np.asarray([m != "LEAF" for m in modes])
    if internal.any() and (feat[internal].min() < 0 or feat[internal].max() >= n_cols):
        _refuse(g, node, "splits on a feature beyond its input width")

    # --- outputs: which score slots exist, and how labels are decided
    used = sorted(set(int(c) for c in w_id))
    decision = "proba"
    if is_clf:
        k = len(classes)
        if used and (used[0] < 0 or used[-1] >= k):
            _refuse(g, node, "has class ids outside its class labels")
        if k == 2:
            if len(used) != 1:
                _refuse(g, node, "weights both classes of a binary problem: ONNX Runtime then labels rows 0/1 "
                                 "whatever the class labels; export with weights for one class")
            if len(base) not in (0, 1):
                _refuse(g, node, f"has {len(base)} base_values for a one-score binary ensemble (ambiguous in ONNX)")
            positive = bool((w_val >= 0).all())
            if used[0] == 1:  # ONNX Runtime scores [0, s], post-transformed, label s > 0
                if positive:
                    _refuse(g, node, "weights only class id 1 with all-positive weights: ONNX Runtime labels by "
                                     "s > 0.5 but returns [0, s] (no IR label rule)")
                transform, decision = _TREE_TRANSFORMS[post], "margin"
                slot, n_out = {1: 1}, 2
                base = base[:0]  # measured: ONNX Runtime 1.32 ignores a single base value here
            else:
                if positive and post == "LOGISTIC":
                    _refuse(g, node, "is a one-score binary ensemble with all-positive weights and LOGISTIC: ONNX "
                                     "Runtime labels by the raw score > 0.5 but returns logistic probabilities "
                                     "(no IR label rule)")
                if positive:
                    transform = "identity"  # ONNX Runtime writes [1 - s, s], labels s > 0.5
                elif post == "LOGISTIC":
                    transform, decision = "onnx_logistic", "margin"
                else:
                    _refuse(g, node, f"is a one-score binary ensemble with mixed-sign weights and post_transform "
                                     f"{post}: ONNX Runtime returns [-s, s]; only LOGISTIC converts")
                slot, n_out = {0: 0}, 1
        else:
            if len(base) not in (0, k):
                _refuse(g, node, f"has {len(base)} base_values for {k} classes")
            transform, decision = _TREE_TRANSFORMS[post], "margin"
            slot = {c: c for c in range(k)}
            n_out = k
    else:
        n_out = int(a.get("n_targets", 1))
        if used and (used[0] < 0 or used[-1] >= n_out):
            _refuse(g, node, "has target ids outside n_targets")
        if n_out == 1:
            if len(base) not in (0, 1):
                _refuse(g, node, f"has {len(base)} base_values for one target")
            transform = "identity"  # ONNX Runtime applies only PROBIT to a single target
        else:
            if len(base) not in (0, n_out):
                _refuse(g, node, f"has {len(base)} base_values for {n_out} targets (ONNX Runtime would ignore them)")
            transform = _TREE_TRANSFORMS[post]
        slot = {c: c for c in range(n_out)}

    # --- per tree: local numbering, weights per leaf
    order = sorted(set(int(t) for t in tree_ids))
    by_tree: dict[int, list[int]] = {t: [] for t in order}
    for i, t in enumerate(tree_ids):
        by_tree[int(t)].append(i)
    leaf_w: dict[tuple[int, int], list[tuple[int, float]]] = {}
    for t, nd, c, w in zip(w_tree, w_node, w_id, w_val):
        entries = leaf_w.setdefault((int(t), int(nd)), [])
        if any(e[0] == int(c) for e in entries):
            _refuse(g, node, f"gives leaf {int(nd)} of tree {int(t)} two weights for one class (summed in an order "
                             "the IR does not keep)")
        entries.append((int(c), float(w)))

    thr, left_true, default_true = _fold(g, node, feat, values, modes, tracks, internal)
    scored = set(range(len(base))) if len(base) else set()
    per_tree = []
    for t in order:
        idx = by_tree[t]
        local = {int(node_ids[i]): j for j, i in enumerate(idx)}
        if len(local) != len(idx):
            _refuse(g, node, f"has duplicate node ids in tree {t}")
        m = len(idx)
        f_arr = np.full(m, -1, dtype=np.int64)
        th = np.zeros(m)
        lf = np.full(m, -1, dtype=np.int64)
        rt = np.full(m, -1, dtype=np.int64)
        dl = np.zeros(m, dtype=bool)
        vals = np.zeros((m, n_out))
        leaf_classes: list[set] = []
        for j, i in enumerate(idx):
            if modes[i] == "LEAF":
                ws = leaf_w.get((t, int(node_ids[i])), [])
                for c, w in ws:
                    vals[j, slot[c]] = w
                leaf_classes.append({c for c, _ in ws})
                continue
            try:
                tj, fj = local[int(true_ids[i])], local[int(false_ids[i])]
            except KeyError:
                _refuse(g, node, f"has a child id outside tree {t}")
            f_arr[j] = g.est_features.cols[int(feat[i])].source
            th[j] = thr[i]
            lf[j], rt[j] = (tj, fj) if left_true[i] else (fj, tj)
            dl[j] = default_true[i] == left_true[i]
        for c in set.intersection(*leaf_classes) if leaf_classes else set():
            scored.add(c)  # every row reaching this tree gets a score for class c
        per_tree.append((f_arr, th, lf, rt, dl, vals, leaf_classes))
    if is_clf and not set(slot) <= scored:
        _refuse(g, node, f"leaves classes {sorted(set(slot) - scored)} without a score on some rows (ONNX Runtime "
                         "then skips them in its argmax)")

    # one output per tree when every leaf of a tree weights the same single slot
    single = all(len(set().union(*lc)) <= 1 and all(len(s) <= 1 for s in lc) for *_, lc in per_tree)
    width = 1 if single or n_out == 1 else n_out
    builder = TreeBuilder(len(g.names), n_out, width)
    for f_arr, th, lf, rt, dl, vals, lc in per_tree:
        used_slots = set().union(*lc)
        if width == 1:
            out = slot[next(iter(used_slots))] if used_slots else 0
            v = vals[:, out:out + 1]
        else:
            out, v = 0, vals
        builder.add_tree(feature=f_arr, threshold=th, left=lf, right=rt, value=v, default_left=dl,
                         missing=MISSING_NAN, output=out)
    # base_values: added after the float32 sum of all trees, as ONNX Runtime does (a last one-leaf tree)
    if len(base) and (base != 0).any():
        if width == 1:
            for s, b in enumerate(base):
                if b != 0:
                    builder.add_tree(feature=[-1], threshold=[0.0], left=[-1], right=[-1], value=[[float(b)]],
                                     output=s)
        else:
            builder.add_tree(feature=[-1], threshold=[0.0], left=[-1], right=[-1],
                             value=base.astype(np.float64)[None, :], output=0)
    # decision "proba" on one score: argmax of [float32(1 - s), s] is (s > 0.5), ONNX Runtime's rule
    est = builder.build(cmp="<=", threshold_dtype="float32", accumulate_dtype="float32", post_transform=transform)
    return est, decision


# ---------------------------------------------------------------------------- threshold folding
def _ordered_key(x: np.ndarray) -> np.ndarray:
    """float32 -> int64 keys in value order (-0.0 and +0.0 adjacent)."""
    b = np.asarray(x, dtype=np.float32).view(np.int32).astype(np.int64)
    return np.where(b >= 0, b, -(b & 0x7FFFFFFF) - 1)


def _from_key(k: np.ndarray) -> np.ndarray:
    k = np.asarray(k, dtype=np.int64)
    b = np.where(k >= 0, k, (-(k + 1)) | 0x80000000).astype(np.uint32)
    return b.view(np.float32)


def _chain(ops: tuple, x: np.ndarray) -> np.ndarray:
    """The preprocessing's float32 arithmetic (ONNX Runtime's Scaler and Imputer kernels)."""
    y = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for op in ops:
            if op[0] == "scale":
                y = ((y - op[1]).astype(np.float32) * op[2]).astype(np.float32)
            else:
                y = np.where(np.isnan(y), op[1], y).astype(np.float32)
    return y


def _holds(mode: np.ndarray, y: np.ndarray, t: np.ndarray, tracks: np.ndarray) -> np.ndarray:
    """ONNX Runtime's branch test: ``y CMP t || (missing_value_tracks_true && isnan(y))``."""
    with np.errstate(invalid="ignore"):
        res = np.select([mode == 0, mode == 1, mode == 2], [y <= t, y < t, y >= t], y > t)
    return res | (tracks.astype(bool) & np.isnan(y))


def _fold(g: _Graph, node, feat, values, modes, tracks, internal):
    """Per node: an IR threshold ``T`` on the raw float32 input (``x <= T`` goes left), whether the
    left child is the ONNX true branch, and whether NaN takes the true branch."""
    n = len(modes)
    thr = np.zeros(n)
    left_true = np.ones(n, dtype=bool)
    nan_true = np.zeros(n, dtype=bool)
    code = np.asarray([_MODES.index(m) if m in _MODES else -1 for m in modes])
    cols = g.est_features.cols
    lo0, hi0 = int(_ordered_key(np.float32(-np.inf))), int(_ordered_key(np.float32(np.inf)))
    for f in np.unique(feat[internal]):
        sel = np.nonzero(internal & (feat == f))[0]
        ops = cols[int(f)].ops
        t, mode, tr = values[sel], code[sel], tracks[sel]

        def pred(keys):
            return _holds(mode, _chain(ops, _from_key(keys)), t, tr)

        nan_true[sel] = _holds(mode, _chain(ops, np.full(len(sel), np.nan, np.float32)), t, tr)
        p_lo = pred(np.full(len(sel), lo0))
        p_hi = pred(np.full(len(sel), hi0))
        # bisection for the last key with pred == p_lo (a single step: the chain is monotone)
        lo = np.full(len(sel), lo0, dtype=np.int64)
        hi = np.full(len(sel), hi0, dtype=np.int64)
        step = p_lo != p_hi
        for _ in range(40):
            mid = (lo + hi) // 2
            same = pred(mid) == p_lo
            lo = np.where(step & same, mid, lo)
            hi = np.where(step & ~same, mid, hi)
            if not (step & (hi - lo > 1)).any():
                break
        boundary = _from_key(lo).astype(np.float64)
        # constant over the whole line: every non-NaN row goes to one side, x <= +inf sends it left
        thr[sel] = np.where(step, boundary, np.inf)
        left_true[sel] = p_lo  # prefix true: left = true branch; suffix true: left = false branch
        if (step & (_ordered_key(_from_key(lo)) != lo)).any():  # pragma: no cover - key round trip
            raise IntegrityError(f"{g.label}: threshold folding failed; this is a sparkscore bug")
        # monotone check at a sample of keys: the step must explain every probe (no preprocessing:
        # the comparison itself is the step)
        probes = np.linspace(lo0, hi0, 257).astype(np.int64) if ops else ()
        for k in probes:
            expect = np.where(step & (k > lo), ~p_lo, p_lo)
            if (pred(np.full(len(sel), k)) != expect).any():
                _refuse(g, node, f"has preprocessing on input {g.names[cols[int(f)].source]!r} that is not monotone")
    return thr, left_true, nan_true
