"""torch kernels (CPU and CUDA): GLM as GEMM; tree ensembles as Hummingbird-style tensor programs.

Three tree strategies, all built from :class:`~sparkscore.compiler.layout.TreeLayout` and so
routing exactly like the reference:

* ``gemm``: per tree, (rows x internal nodes) decisions times a (+1/-1/0) path matrix; a leaf is
  reached where the product equals its number of left turns.  Decisions are 0/1 and the products
  small integers, so float32 GEMM is exact; NaN never enters a matmul (features are gathered,
  not multiplied by a one-hot matrix, which would turn ``NaN * 0`` into NaN).
* ``tt`` (tree traversal): all rows x trees descend level by level through child pointers.
* ``ptt`` (perfect tree traversal): trees padded to full depth, children found by index
  arithmetic (``2 i + 1 + went_right``).

Each declines (``StrategyDeclined``) where its tensors would not fit.  Inputs are cut into batches
under a memory budget (CUDA: a fraction of free memory, so 10M rows do not OOM); on CUDA the host
batches go through pinned memory with asynchronous copies, and TF32 is switched off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from sparkscore.compiler.layout import TreeLayout
from sparkscore.errors import SparkscoreError
from sparkscore.ir.features import INDICATOR, FeatureMap
from sparkscore.ir.linear import LinearModel
from sparkscore.ir.trees import ZERO_THRESHOLD

TREE_STRATEGIES = ("gemm", "tt", "ptt")
_CPU_BATCH_BYTES = 256 << 20
_GEMM_MAX_ELEMENTS = 1 << 24     # path-matrix entries (float32): 64 MiB
_PTT_MAX_SLOTS = 1 << 25         # padded tree slots


class StrategyDeclined(SparkscoreError, ValueError):
    """A strategy that cannot run a model exactly or within its memory limits; the chooser skips it."""


def _tensor(a, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A device tensor copied from (possibly read-only, frozen-IR) numpy data."""
    return torch.tensor(np.array(a), dtype=dtype, device=device)


def _dtype(np_dtype) -> torch.dtype:
    return torch.float32 if np_dtype is np.float32 else torch.float64


def configure(device: str) -> torch.device:
    """The torch device, with TF32 off (TF32 GEMMs round inputs to 10 mantissa bits)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise StrategyDeclined(f"device {device!r} requested but torch sees no CUDA device; use device='cpu'")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return dev


# --------------------------------------------------------------------------- preprocessing
class TorchFeatures:
    """FeatureMaps applied on the device with exactly the reference's elementwise arithmetic."""

    def __init__(self, features: tuple[FeatureMap, ...], device: torch.device) -> None:
        def t(a):
            return _tensor(a, device)

        self.maps = [(t(f.source.astype(np.int64)), t(f.fill), t(~np.isnan(f.fill)), bool((~np.isnan(f.fill)).any()),
                      t(f.center), t(f.scale), t(f.category), t(f.kind == INDICATOR)) for f in features]

    def __call__(self, X: torch.Tensor) -> torch.Tensor:
        for source, fill, fill_mask, any_fill, center, scale, category, indicator in self.maps:
            cols = X[:, source]
            if any_fill:
                cols = torch.where(torch.isnan(cols) & fill_mask, fill, cols)
            X = torch.where(indicator, (cols == category).to(torch.float64), (cols - center) / scale)
        return X


# --------------------------------------------------------------------------- routing
class NodeRouter:
    """Per-slot routing tables (a slot is a node, or a padded position mapped to one)."""

    def __init__(self, lay: TreeLayout, nodes: np.ndarray, device: torch.device) -> None:
        def t(a, dtype=None):
            return _tensor(a[nodes], device, dtype)

        self.feature = t(lay.feature, torch.int64)
        self.threshold = t(lay.threshold)
        self.nan_left = t(lay.nan_left)
        self.has_general = bool(lay.general[nodes].any())
        if self.has_general:
            self.general = t(lay.general)
            self.zero_missing = t(lay.zero_missing)
            self.default_left = t(lay.default_left)
            self.is_cat = t(lay.is_categorical)
            self.cat_index = t(lay.cat_index, torch.int64)
            self.cat_words = _tensor(lay.cat_words.astype(np.int64), device=device)
            self.n_bits = lay.n_bits
            self.neg_before = lay.negative_before_trunc

    def left(self, v: torch.Tensor, slots: torch.Tensor | None) -> torch.Tensor:
        """Go-left decisions for values ``v`` at ``slots`` (same shape; None = every slot, in order)."""
        def at(table):
            return table if slots is None else table[slots]

        isnan = torch.isnan(v)
        left = (v <= at(self.threshold)) | (isnan & at(self.nan_left))
        if not self.has_general:
            return left
        general = at(self.general) & ~isnan
        if not bool(general.any()):
            return left
        zero = general & at(self.zero_missing) & (v.abs() <= ZERO_THRESHOLD)
        left = torch.where(zero, at(self.default_left), left)
        cat = general & ~zero & at(self.is_cat)
        if bool(cat.any()):
            vc = v[cat]
            c = torch.trunc(vc)
            invalid = ((vc < 0) if self.neg_before else (c < 0)) | (c >= self.n_bits)
            ci = torch.where(invalid, torch.zeros_like(c), c).to(torch.int64)
            rows = at(self.cat_index)
            rows = rows.expand_as(v)[cat] if slots is None else rows[cat]
            word = self.cat_words[rows, ci >> 5]
            left[cat] = ~invalid & (((word >> (ci & 31)) & 1) == 1)
        return left


# --------------------------------------------------------------------------- trees
class _TreeKernel:
    """Shared parts: device tables, leaf accumulation in the reference's dtype and order."""

    def __init__(self, lay: TreeLayout, device: torch.device) -> None:
        self.lay = lay
        self.device = device
        self.compare = _dtype(lay.compare_dtype)
        self.acc = _dtype(lay.acc_dtype)
        self.tree_output = _tensor(lay.tree_output.astype(np.int64), device=device)
        self.base = _tensor(lay.base, device=device)
        self._outputs = lay.tree_output.tolist()

    def leaf_values(self, Xc: torch.Tensor) -> torch.Tensor:  # (n, T, V)
        raise NotImplementedError

    def accumulate(self, vals: torch.Tensor) -> torch.Tensor:
        n, lay = vals.shape[0], self.lay
        if lay.from_base:  # from base, one tree at a time, in tree order (XGBoost: in float32)
            out = self.base.expand(n, lay.n_outputs).clone()
            if vals.shape[2] == 1:
                for t, k in enumerate(self._outputs):
                    out[:, k] += vals[:, t, 0]
            else:
                for t in range(vals.shape[1]):
                    out += vals[:, t, :]
            return out.to(torch.float64)
        total = torch.zeros((n, lay.n_outputs), dtype=torch.float64, device=self.device)
        if vals.shape[2] == 1:
            for t, k in enumerate(self._outputs):
                total[:, k] += vals[:, t, 0]
        else:
            for t in range(vals.shape[1]):
                total += vals[:, t, :]
        return total / lay.mean_divisor + self.base

    def raw(self, X: torch.Tensor) -> torch.Tensor:
        return self.accumulate(self.leaf_values(X.to(self.compare)))

    def bytes_per_row(self) -> int:
        lay = self.lay
        return 96 * lay.n_trees + 24 * lay.n_features + 16 * lay.n_trees * lay.leaf_value.shape[1]


class TreeTraversal(_TreeKernel):
    """``tt``: rows x trees descend through child pointers, one level per step."""

    def __init__(self, lay: TreeLayout, device: torch.device) -> None:
        super().__init__(lay, device)
        self.router = NodeRouter(lay, np.arange(lay.n_nodes), device)
        self.left_child = _tensor(lay.children[:, 0].astype(np.int64), device=device)
        self.right_child = _tensor(lay.children[:, 1].astype(np.int64), device=device)
        self.roots = _tensor(lay.roots.astype(np.int64), device=device)
        self.values = _tensor(lay.leaf_value, device=device)

    def leaf_values(self, Xc: torch.Tensor) -> torch.Tensor:
        idx = self.roots.expand(Xc.shape[0], -1).contiguous()
        for _ in range(self.lay.max_depth):
            v = torch.gather(Xc, 1, self.router.feature[idx])
            idx = torch.where(self.router.left(v, idx), self.left_child[idx], self.right_child[idx])
        return self.values[idx]


def perfect_slots(lay: TreeLayout) -> tuple[np.ndarray, np.ndarray]:
    """Node ids of every heap position of every tree padded to the deepest tree's depth.

    Returns ``internal (T, 2**D - 1)`` and ``leaves (T, 2**D)``; leaves point to themselves, so a
    leaf above the last level fills its whole padded subtree and carries its value down.
    """
    levels = [lay.roots[:, None].astype(np.int64)]
    for _ in range(lay.max_depth):
        cur = levels[-1]
        levels.append(np.stack([lay.children[cur, 0], lay.children[cur, 1]], axis=-1).reshape(len(cur), -1))
    internal = np.concatenate(levels[:-1], axis=1) if len(levels) > 1 else np.zeros((lay.n_trees, 0), np.int64)
    return internal, levels[-1]


class PerfectTreeTraversal(_TreeKernel):
    """``ptt``: trees padded to full depth D; the child of heap position i is 2 i + 1 + went_right."""

    def __init__(self, lay: TreeLayout, device: torch.device) -> None:
        super().__init__(lay, device)
        slots = lay.n_trees * (1 << lay.max_depth)
        if slots > _PTT_MAX_SLOTS:
            raise StrategyDeclined(f"ptt: {lay.n_trees} trees padded to depth {lay.max_depth} need {slots} slots")
        internal, leaves = perfect_slots(lay)
        self.n_internal = internal.shape[1]
        self.router = NodeRouter(lay, internal.reshape(-1), device)
        self.values = _tensor(lay.leaf_value[leaves.reshape(-1)], device=device)
        self.tree_offset = torch.arange(lay.n_trees, device=device, dtype=torch.int64)

    def leaf_values(self, Xc: torch.Tensor) -> torch.Tensor:
        n, D = Xc.shape[0], self.lay.max_depth
        pos = torch.zeros((n, self.lay.n_trees), dtype=torch.int64, device=self.device)
        internal_base = self.tree_offset * self.n_internal
        for _ in range(D):
            slot = internal_base + pos
            v = torch.gather(Xc, 1, self.router.feature[slot])
            pos = 2 * pos + 2 - self.router.left(v, slot).to(torch.int64)
        leaf = pos - self.n_internal
        return self.values[self.tree_offset * (1 << D) + leaf]


def _tree_membership(lay: TreeLayout) -> np.ndarray:
    """Tree id of every node reachable from a root (-1 elsewhere)."""
    owner = np.full(lay.n_nodes, -1, dtype=np.int64)
    nodes, trees = lay.roots.astype(np.int64), np.arange(lay.n_trees)
    while len(nodes):
        owner[nodes] = trees
        inner = ~lay.is_leaf[nodes]
        nodes, trees = nodes[inner], trees[inner]
        nodes, trees = np.concatenate([lay.children[nodes, 0], lay.children[nodes, 1]]), np.concatenate([trees, trees])
    return owner


def _local_rank(owner: np.ndarray, mask: np.ndarray, n_trees: int) -> tuple[np.ndarray, ...]:
    """For nodes where ``mask``: (node ids, their tree, their rank inside the tree, per-tree counts)."""
    nodes = np.nonzero(mask & (owner >= 0))[0]
    order = np.argsort(owner[nodes], kind="stable")
    nodes = nodes[order]
    trees = owner[nodes]
    counts = np.bincount(trees, minlength=n_trees)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return nodes, trees, np.arange(len(nodes)) - starts[trees], counts


class TreeGemm(_TreeKernel):
    """``gemm``: decisions (T, n, I) @ paths (T, I, L) == left turns (T, L) picks each tree's leaf."""

    def __init__(self, lay: TreeLayout, device: torch.device) -> None:
        super().__init__(lay, device)
        owner = _tree_membership(lay)
        inodes, itree, irank, icount = _local_rank(owner, ~lay.is_leaf, lay.n_trees)
        lnodes, ltree, lrank, lcount = _local_rank(owner, lay.is_leaf, lay.n_trees)
        T, I, L = lay.n_trees, max(int(icount.max()), 1), int(lcount.max())
        if T * I * L > _GEMM_MAX_ELEMENTS:
            raise StrategyDeclined(f"gemm: path matrices of {T} trees x {I} splits x {L} leaves exceed the memory limit")
        slot_node = np.zeros((T, I), dtype=np.int64)
        slot_node[:] = lay.roots[:, None]
        slot_node[itree, irank] = inodes
        paths = np.zeros((T, I, L), dtype=np.float32)
        turns = np.full((T, L), -1.0, dtype=np.float32)  # padded leaves never match
        turns[ltree, lrank] = 0.0
        rank_of = np.zeros(lay.n_nodes, dtype=np.int64)
        rank_of[inodes] = irank
        parent = np.full(lay.n_nodes, -1, dtype=np.int64)
        parent[lay.children[inodes, 0]] = inodes
        parent[lay.children[inodes, 1]] = inodes
        child = lnodes.copy()
        alive = parent[child] >= 0
        while alive.any():
            c, p = child[alive], parent[child[alive]]
            went_left = lay.children[p, 0] == c
            paths[ltree[alive], rank_of[p], lrank[alive]] = np.where(went_left, 1.0, -1.0)
            turns[ltree[alive], lrank[alive]] += went_left
            child[alive] = p
            alive = parent[child] >= 0
        leaf_values = np.zeros((T, L, lay.leaf_value.shape[1]), dtype=lay.acc_dtype)
        leaf_values[ltree, lrank] = lay.leaf_value[lnodes]
        self.shape = (T, I, L)
        self.router = NodeRouter(lay, slot_node.reshape(-1), device)
        self.paths = _tensor(paths, device=device)
        self.turns = _tensor(turns[:, None, :], device=device)
        self.values = _tensor(leaf_values.reshape(T * L, -1), device=device)
        self.leaf_base = torch.arange(T, device=device, dtype=torch.int64)[:, None] * L

    def leaf_values(self, Xc: torch.Tensor) -> torch.Tensor:
        T, I, L = self.shape
        n = Xc.shape[0]
        decisions = self.router.left(Xc[:, self.router.feature], None).to(torch.float32)
        hits = torch.bmm(decisions.view(n, T, I).transpose(0, 1), self.paths) == self.turns  # (T, n, L)
        leaf = hits.to(torch.uint8).argmax(dim=2)
        return self.values[(leaf + self.leaf_base).transpose(0, 1)]

    def bytes_per_row(self) -> int:
        T, I, L = self.shape
        return 24 * T * I + 12 * T * L + super().bytes_per_row()


TREE_KERNELS = {"gemm": TreeGemm, "tt": TreeTraversal, "ptt": PerfectTreeTraversal}


class LinearGemm:
    """GLM margins ``X @ coef + intercept`` in float64 (float32 models: the reference's float32 rule,
    :func:`sparkscore.compiler.reference.linear_from_dot`)."""

    def __init__(self, est: LinearModel, device: torch.device) -> None:
        if est.accumulate != "blas":  # a matmul has no per-feature float32 rounding order
            raise StrategyDeclined(f"linear models summed {est.accumulate!r} (XGBoost gblinear) run on numba or "
                                   "the reference, not 'gemm'")
        self.coef = _tensor(est.coef, device=device)
        self.intercept = _tensor(est.intercept, device=device)
        self.n_features = est.n_features
        self.float32 = est.dtype == "float32"
        self.intercept32 = est.intercept_dtype == "float32"

    def raw(self, X: torch.Tensor) -> torch.Tensor:
        if not self.float32:
            return torch.addmm(self.intercept, X, self.coef)
        dot32 = (X.to(torch.float32).to(torch.float64) @ self.coef).to(torch.float32)
        if self.intercept32:
            return (dot32 + self.intercept.to(torch.float32)).to(torch.float64)
        return dot32.to(torch.float64) + self.intercept

    def bytes_per_row(self) -> int:
        return 24 * (self.n_features + self.coef.shape[1])


# --------------------------------------------------------------------------- driver
@dataclass(frozen=True, eq=False)
class TorchProgram:
    """Features then estimator on one device, run batch by batch under a memory budget."""

    features: TorchFeatures
    kernel: object
    device: torch.device
    n_inputs: int

    def batch_rows(self) -> int:
        per_row = self.kernel.bytes_per_row() + 24 * self.n_inputs
        if self.device.type == "cuda":
            free, _total = torch.cuda.mem_get_info(self.device)
            budget = min(free // 4, 4 << 30)
        else:
            budget = _CPU_BATCH_BYTES
        return max(1, int(budget // per_row))

    def _run(self, X: torch.Tensor) -> torch.Tensor:
        return self.kernel.raw(self.features(X))

    def __call__(self, X: np.ndarray) -> np.ndarray:
        n = X.shape[0]
        step = self.batch_rows()
        with torch.inference_mode():
            if self.device.type != "cuda":
                parts = [self._run(torch.from_numpy(X[lo:lo + step])).numpy() for lo in range(0, n, step)]
            else:
                parts = self._run_cuda(X, step)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _run_cuda(self, X: np.ndarray, step: int) -> list[np.ndarray]:
        """Pinned host buffers, async copies: batch i+1 is copied while batch i computes."""
        n = X.shape[0]
        rows = min(step, n)
        pinned = [torch.empty((rows, X.shape[1]), dtype=torch.float64, pin_memory=True) for _ in range(2)]
        copy_stream = torch.cuda.Stream(self.device)
        compute = torch.cuda.current_stream(self.device)
        starts = list(range(0, n, step))
        staged = []

        def stage(i: int) -> tuple[torch.Tensor, torch.cuda.Event]:
            lo = starts[i]
            hi = min(n, lo + step)
            buf = pinned[i % 2][: hi - lo]
            buf.copy_(torch.from_numpy(X[lo:hi]))
            with torch.cuda.stream(copy_stream):
                dev = buf.to(self.device, non_blocking=True)
                done = torch.cuda.Event()
                done.record(copy_stream)
            return dev, done

        staged.append(stage(0))
        parts = []
        for i in range(len(starts)):
            dev, done = staged[i]
            compute.wait_event(done)
            dev.record_stream(compute)
            out = self._run(dev)
            if i + 1 < len(starts):
                staged.append(stage(i + 1))  # pinned[(i+1) % 2] was last read by batch i-1: done
            parts.append(out.cpu().numpy())
        return parts


def build(model, strategy: str, device: str, layout: Callable[[], TreeLayout]) -> Callable[[np.ndarray], np.ndarray]:
    """A ``raw(X) -> (n, k)`` float64 function for ``model`` with one torch strategy on ``device``."""
    dev = configure(device)
    est = model.estimator
    if isinstance(est, LinearModel):
        if strategy != "gemm":
            raise StrategyDeclined(f"{model.name}: linear models run as 'gemm', not {strategy!r}")
        kernel = LinearGemm(est, dev)
    else:
        kernel = TREE_KERNELS[strategy](layout(), dev)
    return TorchProgram(TorchFeatures(model.features, dev), kernel, dev, len(model.signature))
