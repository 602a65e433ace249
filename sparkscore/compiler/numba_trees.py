"""Compiled CPU tree traversal with numba (imported lazily: numba is an optional dependency).

What makes this beat the native predictors (a naive per-row recursion was measured at ~0.5x
sklearn, and a struct-of-arrays version of this loop at ~0.45x XGBoost on 100 trees of depth 8):

* one 16-byte record per node (threshold, feature + flag bits, left child), so a visit touches one
  cache line; nodes are renumbered breadth-first per tree with both children adjacent, so the
  next node is ``left + went_right`` without a branch, and each tree's nodes are contiguous;
* leaves are records that route every value (threshold +inf, NaN left) to themselves, so a tree is
  descended a fixed number of levels with no leaf test;
* the NaN rule is folded into the comparison: ``went_right = (v > t) | (isnan(v) & nan_right)``;
  categorical / zero-as-missing nodes take a flagged slow path compiled only into models having them;
* rows are cut into blocks that stay in L1 with the tree's top levels, and all rows of a block
  descend one level at a time, two trees at once, so the row loop is a set of independent loads
  the CPU overlaps.  Descending only until every row is at a leaf, by a per-level "any row moved"
  test, was measured slower on XGBoost's trees (a leaf's self-loop is an L1 hit, while the
  bookkeeping lengthens every step); compacting the rows still inside (:func:`_traverse_compact`)
  is a separate candidate for deep lopsided trees, where the fixed trip count runs every row to
  the tree's maximum depth: the chooser keeps whichever measures cheaper for the model;
* an all-nodes kernel (:func:`_traverse_masks`, after QuickScorer: Lucchese et al., SIGIR 2015) for trees
  of at most 64 leaves: no descent at all; every node of a tree is compared against a block of rows
  (a loop over contiguous values, which LLVM vectorises) and a row going right clears the node's
  left-subtree leaves from the row's 64-bit leaf mask; the lowest surviving bit is the exit leaf.
  Its cost follows the node count, not the depth, so LightGBM's deep leaf-wise trees gain most;
* threads: the kernel releases the GIL and row chunks run on a small thread pool, so numba
  starts no OpenMP runtime to fight torch's over the same two cores.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numba as nb
import numpy as np
from numba.cpython.unsafe.numbers import trailing_zeros

from sparkscore.compiler.layout import TreeLayout
from sparkscore.ir.trees import ZERO_THRESHOLD

_ZERO = ZERO_THRESHOLD
_NAN_RIGHT = np.int32(1 << 30)
_GENERAL = np.int32(1 << 29)
_FEATURE_MASK = np.int32((1 << 29) - 1)
WIDE_TREES = 8  # trees one row descends together in the few-rows kernel
BLOCK_ROWS = 256  # rows descending together (measured best of 16..512 on depth 3..12 trees: block + tree stay in L1/L2)
_MIN_ROWS_PER_THREAD = BLOCK_ROWS  # split from two blocks on, so calibration at 1024 rows sees the threads
#: the compacting kernel is a candidate only for trees deeper than this: shallower ones leave it no
#: levels to skip that pay for its bookkeeping (measured, 1 thread, 10k rows: XGBoost 100 trees of depth 8
#: 1.3-1.5x slower than the fixed trip count; LightGBM 100 x 31 leaves, max depth 15-17: 1.4-1.5x faster)
_COMPACT_MIN_DEPTH = 8
MASK_LEAVES = 64  # leaves per tree the all-nodes kernel can route: one bit each of a uint64 mask
#: transposed inputs of one block of the all-nodes kernel (measured, LightGBM 100 x 31 leaves, 1 thread:
#: best at 512 rows x 8 features and 128 x 50, i.e. 32-51 KB; 200 KB blocks ran 1.4x slower)
_MASK_BLOCK_BYTES = 65536


def node_dtype(compare_dtype: type) -> np.dtype:
    """A 16-byte node record (12 + 4 padding bytes for float32 thresholds)."""
    thr = "f8" if compare_dtype is np.float64 else "f4"
    fields = [("thr", thr), ("feat", "i4"), ("left", "i4")]
    if compare_dtype is np.float32:
        fields.append(("pad", "i4"))
    return np.dtype(fields, align=True)


def breadth_first(lay: TreeLayout) -> np.ndarray:
    """Old node ids in the new order: per tree, level by level, the two children of a node adjacent."""
    parts = []
    for root in lay.roots:
        level = np.array([root], dtype=np.int64)
        while len(level):
            parts.append(level)
            level = lay.children[level[~lay.is_leaf[level]]].reshape(-1)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


class PackedTrees:
    """The layout renumbered into node records plus the side tables of the slow path."""

    def __init__(self, lay: TreeLayout) -> None:
        order = breadth_first(lay)
        new_of = np.full(lay.n_nodes, -1, dtype=np.int64)
        new_of[order] = np.arange(len(order))
        leaf = lay.is_leaf[order]
        nodes = np.zeros(len(order), dtype=node_dtype(lay.compare_dtype))
        nodes["thr"] = np.where(leaf, np.inf, lay.threshold[order])
        # a NaN threshold (a split nothing passes) needs ``not v <= t``, which ``v > t`` is not: slow path
        general = lay.general[order] | (~leaf & np.isnan(lay.threshold[order]))
        flags = np.where(~leaf & ~lay.nan_left[order], _NAN_RIGHT, 0) | np.where(general, _GENERAL, 0)
        nodes["feat"] = np.where(leaf, 0, lay.feature[order]) | flags
        nodes["left"] = np.where(leaf, np.arange(len(order)), new_of[lay.children[order, 0]])
        if len(order) and not leaf.all():
            assert (new_of[lay.children[order[~leaf], 1]] == nodes["left"][~leaf] + 1).all()
        self.nodes = nodes
        self.roots = new_of[lay.roots].astype(np.int32)
        self.depth = lay.depth.astype(np.int32)
        self.tree_output = lay.tree_output.astype(np.int32)
        self.value = np.ascontiguousarray(lay.leaf_value[order])
        self.has_general = bool(general.any())
        self.general = (np.ascontiguousarray(lay.zero_missing[order]), np.ascontiguousarray(lay.default_left[order]),
                        np.ascontiguousarray(lay.is_categorical[order]), np.ascontiguousarray(lay.cat_index[order]),
                        lay.cat_words, lay.n_bits, lay.negative_before_trunc)


@nb.njit(inline="always", cache=True, nogil=True)
def _general_left(v, nd, thr, zero_missing, default_left, is_cat, cat_index, cat_words, n_bits, neg_before):
    """The full routing rule of a non-NaN value at a categorical or zero-as-missing node."""
    if zero_missing[nd] and abs(v) <= _ZERO:
        return default_left[nd]
    if is_cat[nd]:
        c = np.trunc(v)
        negative = v < 0 if neg_before else c < 0
        if negative or c >= n_bits:
            return False
        ci = np.int64(c)
        word = np.int64(cat_words[cat_index[nd], ci >> 5])
        return ((word >> (ci & 31)) & 1) == 1
    return v <= thr


@nb.njit(cache=True, nogil=True)
def _accumulate(idx, value, tree_output, t, out, lo, m):
    k = tree_output[t]
    for r in range(m):
        _add_leaf(out, lo + r, value, idx[r], k)


@nb.njit(inline="always", cache=True, nogil=True)
def _add_leaf(out, r, value, leaf, k):
    """Leaf ``leaf`` of a tree into row ``r``: to output ``k`` (one value), or a vector to every output."""
    if value.shape[1] == 1:
        out[r, k] += value[leaf, 0]
    else:
        for j in range(value.shape[1]):
            out[r, j] += value[leaf, j]


@nb.njit(inline="always", cache=True, nogil=True)
def _child(Xf, row_start, nodes, nd):
    """The child a numerical node ``nd`` sends the row at ``Xf[row_start:]`` to (a leaf: itself).

    Indices are unsigned so numba emits no negative-index wraparound on the three loads of a step
    (1.5x on this loop, measured).
    """
    node = nodes[np.uint64(nd)]
    feat = node.feat
    v = Xf[row_start + np.uint64(feat & _FEATURE_MASK)]
    return np.uint32(node.left + np.int32((v > node.thr) | ((v != v) & ((feat & _NAN_RIGHT) != 0))))


@nb.njit(cache=True, nogil=True)
def _traverse(X, nodes, roots, depth, tree_output, value, out, block):
    """Numerical nodes only: the hot loop without the slow-path test.

    Two consecutive trees descend together (an odd last tree pairs with itself), so each row step
    issues two independent node loads: 1.1-1.4x one tree at a time on XGBoost / sklearn trees of
    depth 3-8, measured.  Leaves are still added tree by tree, so sums keep the reference's order.
    """
    n, d = X.shape
    Xf = X.reshape(-1)
    last = roots.shape[0] - 1
    idx = np.empty(block, np.uint32)
    idx_next = np.empty(block, np.uint32)
    for lo in range(0, n, block):
        m = min(n, lo + block) - lo
        for t in range(0, last + 1, 2):
            u = min(t + 1, last)
            for r in range(m):
                idx[r] = roots[t]
                idx_next[r] = roots[u]
            for _ in range(max(depth[t], depth[u])):
                for r in range(m):
                    ur = np.uint64(r)
                    row_start = np.uint64(lo + r) * np.uint64(d)
                    idx[ur] = _child(Xf, row_start, nodes, idx[ur])
                    idx_next[ur] = _child(Xf, row_start, nodes, idx_next[ur])
            _accumulate(idx, value, tree_output, t, out, lo, m)
            if u != t:
                _accumulate(idx_next, value, tree_output, u, out, lo, m)


@nb.njit(cache=True, nogil=True)
def _traverse_compact(X, nodes, roots, depth, tree_output, value, out, block):
    """Numerical nodes, for deep lopsided trees (LightGBM's leaf-wise growth): only rows still inside descend.

    :func:`_traverse` runs every row of a block to the deeper tree's *maximum* depth; on a 31-leaf
    leaf-wise tree most rows reach a leaf at half of it.  Here a block keeps a list of the rows whose
    node moved at the last level (an internal node always moves: children follow their parent in
    breadth-first order, a leaf loops onto itself); a row that moved in neither tree of the pair is at
    a leaf in both and drops out, and the pair stops when the list is empty.  The list is rewritten
    branch-free (store every row, advance the end by its "moved" bit).  Leaves are still added tree by
    tree after the pair, so sums keep the reference's order, bit for bit those of :func:`_traverse`.
    """
    n, d = X.shape
    Xf = X.reshape(-1)
    last = roots.shape[0] - 1
    idx = np.empty(block, np.uint32)
    idx_next = np.empty(block, np.uint32)
    active = np.empty(block, np.uint32)
    for lo in range(0, n, block):
        m = min(n, lo + block) - lo
        for t in range(0, last + 1, 2):
            u = min(t + 1, last)
            for r in range(m):
                idx[r] = roots[t]
                idx_next[r] = roots[u]
                active[r] = r
            k = m
            for _ in range(max(depth[t], depth[u])):
                kept = 0
                for j in range(k):
                    ur = np.uint64(active[j])
                    row_start = (np.uint64(lo) + ur) * np.uint64(d)
                    a = idx[ur]
                    b = idx_next[ur]
                    na = _child(Xf, row_start, nodes, a)
                    nb_ = _child(Xf, row_start, nodes, b)
                    idx[ur] = na
                    idx_next[ur] = nb_
                    active[kept] = ur
                    kept += np.int64((na != a) | (nb_ != b))
                k = kept
                if k == 0:
                    break
            _accumulate(idx, value, tree_output, t, out, lo, m)
            if u != t:
                _accumulate(idx_next, value, tree_output, u, out, lo, m)


@nb.njit(cache=True, nogil=True)
def _traverse_general(X, nodes, roots, depth, tree_output, value, out, block,
                      zero_missing, default_left, is_cat, cat_index, cat_words, n_bits, neg_before):
    """Models with categorical or zero-as-missing nodes: flagged nodes take the full rule."""
    n = X.shape[0]
    idx = np.empty(block, np.int32)
    for lo in range(0, n, block):
        m = min(n, lo + block) - lo
        for t in range(roots.shape[0]):
            root = roots[t]
            for r in range(m):
                idx[r] = root
            for _ in range(depth[t]):
                for r in range(m):
                    nd = idx[r]
                    node = nodes[nd]
                    feat = node.feat
                    v = X[lo + r, feat & _FEATURE_MASK]
                    if (feat & _GENERAL) != 0 and v == v:
                        right = not _general_left(v, nd, node.thr, zero_missing, default_left, is_cat, cat_index,
                                                  cat_words, n_bits, neg_before)
                    else:
                        right = (v > node.thr) | ((v != v) & ((feat & _NAN_RIGHT) != 0))
                    idx[r] = node.left + np.int32(right)
            _accumulate(idx, value, tree_output, t, out, lo, m)


@nb.njit(cache=True, nogil=True)
def _traverse_wide(X, nodes, roots, depth, tree_output, value, out, t_lo, t_hi, leaves):
    """Numerical nodes, trees ``[t_lo, t_hi)``: each row descends ``WIDE_TREES`` trees together.

    For batches of a few rows, where the row loop of :func:`_traverse` is too short to hide load
    latency: eight independent chains per step (1.5-3x the pair kernel at 1 row on 10-500 trees,
    measured); the group's trees stay in L1 while every row passes through them.  Leaves are added
    to ``out`` in tree order or, when ``leaves`` has columns, their node ids are stored in
    ``leaves[r, t - t_lo]`` so that a caller splitting trees across threads adds them in tree order.
    """
    n, d = X.shape
    Xf = X.reshape(-1)
    idx = np.empty(WIDE_TREES, np.uint32)
    keep = leaves.shape[1] > 0
    for lo in range(0, n, BLOCK_ROWS):  # row blocks, as in _traverse: a block stays cached across all groups
        hi = min(n, lo + BLOCK_ROWS)
        for t0 in range(t_lo, t_hi, WIDE_TREES):
            width = min(WIDE_TREES, t_hi - t0)
            levels = 0
            for g in range(width):
                levels = max(levels, depth[t0 + g])
            for r in range(lo, hi):
                row_start = np.uint64(r) * np.uint64(d)
                for g in range(WIDE_TREES):  # a short last group repeats its last tree: fixed trip count, unrolled
                    idx[g] = roots[t0 + min(g, width - 1)]
                for _ in range(levels):
                    for g in range(WIDE_TREES):
                        idx[g] = _child(Xf, row_start, nodes, idx[g])
                for g in range(width):
                    if keep:
                        leaves[r, t0 + g - t_lo] = idx[g]
                    else:
                        _add_leaf(out, r, value, idx[g], tree_output[t0 + g])


@nb.njit(cache=True, nogil=True)
def _add_leaves(out, leaves, value, tree_output, t_lo):
    """Add stored leaves ``leaves[r, t - t_lo]`` to ``out`` in tree order."""
    for r in range(leaves.shape[0]):
        for c in range(leaves.shape[1]):
            _add_leaf(out, r, value, leaves[r, c], tree_output[t_lo + c])


@nb.njit(cache=True, nogil=True)
def _leaf_ranges(left, is_leaf):
    """Per node of a packed layout: leaves below it, and the in-order index (within its tree) of its leftmost.

    Breadth-first order puts children after parents and trees one after another, so one backward pass
    counts and one forward pass numbers.
    """
    n = left.shape[0]
    count = np.ones(n, np.int64)
    for i in range(n - 1, -1, -1):
        if not is_leaf[i]:
            count[i] = count[left[i]] + count[left[i] + 1]
    first = np.zeros(n, np.int64)
    for i in range(n):
        if not is_leaf[i]:
            first[left[i]] = first[i]
            first[left[i] + 1] = first[i] + count[left[i]]
    return count, first


class MaskTables:
    """The packed trees as the all-nodes kernel reads them: internal nodes tree by tree, leaves in order.

    ``mask[k]`` has every bit set except those of the leaves in node ``k``'s left subtree (leaves are
    numbered left to right within their tree).  A row that goes right at ``k`` cannot exit in ``k``'s
    left subtree.  Every leaf left of the row's exit leaf sits in the left subtree of a node on its path
    where it went right (their lowest common ancestor), and the exit leaf is in no left subtree of a
    node the row goes right at (such a node would be on its path, where the row went left).  So ANDing
    the masks of the nodes a row goes right at, in any order, leaves the exit leaf as the lowest bit.
    """

    def __init__(self, packed: PackedTrees) -> None:
        nodes = packed.nodes
        left = nodes["left"].astype(np.int64)
        is_leaf = left == np.arange(len(nodes))
        count, first = _leaf_ranges(left, is_leaf)
        roots = packed.roots.astype(np.int64)
        self.max_leaves = int(count[roots].max()) if len(roots) else 0
        internal = np.flatnonzero(~is_leaf)
        self.node_start = np.append(np.searchsorted(internal, roots), len(internal)).astype(np.int64)
        self.leaf_start = np.concatenate([[0], np.cumsum(count[roots])]).astype(np.int64)
        leaves = np.flatnonzero(is_leaf)
        slot = self.leaf_start[np.searchsorted(roots, leaves, side="right") - 1] + first[leaves]
        leaf_node = np.empty(len(leaves), np.int64)
        leaf_node[slot] = leaves
        self.value = np.ascontiguousarray(packed.value[leaf_node])
        feat = nodes["feat"][internal]
        self.nan_right = (feat & _NAN_RIGHT) != 0
        feature = feat & _FEATURE_MASK
        self.used = np.unique(feature).astype(np.int64)  # the columns a block transposes
        self.column = np.searchsorted(self.used, feature).astype(np.int64)
        self.thr = np.ascontiguousarray(nodes["thr"][internal])
        if self.max_leaves <= MASK_LEAVES:
            lc = left[internal]
            width, start = count[lc].astype(np.uint64), first[lc].astype(np.uint64)
            self.mask = ~(((np.uint64(1) << width) - np.uint64(1)) << start)  # width <= 63: a right leaf exists
        else:
            self.mask = np.zeros(0, np.uint64)
        itemsize = self.thr.dtype.itemsize
        rows = _MASK_BLOCK_BYTES // (max(1, len(self.used)) * itemsize)
        self.block = int(min(512, max(64, 1 << int(np.log2(max(1, rows))))))

    @property
    def fits(self) -> bool:
        return self.max_leaves <= MASK_LEAVES


@nb.njit(cache=True, nogil=True)
def _traverse_masks(X, used, column, thr, nan_right, mask, node_start, leaf_start, value, tree_output, out, block):
    """Numerical nodes, trees of <= 64 leaves: every node against a block of rows, no descent (:class:`MaskTables`).

    The block's used columns are transposed first, so each node's loop reads contiguous values and
    updates the block's masks: branch-free, vectorised.  A node's NaN side picks its comparison:
    ``v > t`` sends NaN left, ``not v <= t`` sends it right.  Leaves are added tree by tree, so sums
    keep the reference's order, bit for bit those of :func:`_traverse`.
    """
    n = X.shape[0]
    n_trees = node_start.shape[0] - 1
    xb = np.empty((used.shape[0], block), X.dtype)
    acc = np.empty(block, np.uint64)
    everything = np.uint64(0xFFFFFFFFFFFFFFFF)
    for lo in range(0, n, block):
        m = min(n, lo + block) - lo
        for r in range(m):
            for c in range(used.shape[0]):
                xb[c, r] = X[lo + r, used[c]]
        for t in range(n_trees):
            for r in range(m):
                acc[r] = everything
            for k in range(node_start[t], node_start[t + 1]):
                values = xb[column[k]]
                th = thr[k]
                clear = mask[k]
                if nan_right[k]:
                    for r in range(m):
                        acc[r] &= everything if values[r] <= th else clear
                else:
                    for r in range(m):
                        acc[r] &= clear if values[r] > th else everything
            base = leaf_start[t]
            k_out = tree_output[t]
            for r in range(m):
                _add_leaf(out, lo + r, value, base + trailing_zeros(acc[r]), k_out)


@lru_cache(maxsize=None)
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sparkscore-trees")


def default_threads() -> int:
    """Threads for the parallel kernels: NUMBA_NUM_THREADS, else OMP_NUM_THREADS, else the usable cores.

    OMP_NUM_THREADS is what Spark gives each Python worker (``spark.task.cpus``, 1 by default, unless
    ``spark.executorEnv.OMP_NUM_THREADS`` says otherwise): an executor runs cores / task.cpus tasks at
    once, so a kernel using every core in each of them would run threads x tasks > cores.
    """
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS"):
        env = os.environ.get(var, "").strip()
        if env.isdigit() and int(env) > 0:
            return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def parallel_chunks(run, X: np.ndarray, out: np.ndarray, threads: int | None) -> None:
    """``run(X[lo:hi], out[lo:hi])`` over row chunks on up to ``threads`` pool threads (None: default).

    Chunks start on multiples of ``BLOCK_ROWS`` and hold at least ``_MIN_ROWS_PER_THREAD`` rows, so
    small batches run inline without paying a thread hand-off.
    """
    threads = max(1, threads or default_threads())
    n = X.shape[0]
    chunks = min(threads, max(1, n // _MIN_ROWS_PER_THREAD))
    if chunks == 1:
        run(X, out)
        return
    bounds = np.linspace(0, n, chunks + 1).astype(int) // BLOCK_ROWS * BLOCK_ROWS
    bounds[-1] = n
    jobs = [_pool(threads).submit(run, X[lo:hi], out[lo:hi]) for lo, hi in zip(bounds[1:], bounds[2:])]
    run(X[:bounds[1]], out[:bounds[1]])  # the first chunk on the calling thread: one wake-up fewer per call
    for job in jobs:
        job.result()


class NumbaTrees:
    """``raw(X) -> (n, n_outputs)`` float64 margins of a tree layout, accumulated like the reference.

    ``wide``: the few-rows kernel (:func:`_traverse_wide`); in parallel it splits the *trees* of a
    batch too small to split by rows, each thread past the first storing its leaves for an in-order
    sum.  Which kernel runs at which batch size is the chooser's call, from measured cost.
    """

    def __init__(self, layout: TreeLayout, parallel: bool, threads: int | None = None, wide: bool = False,
                 packed: PackedTrees | None = None, compact: bool = False, masks: bool = False,
                 mask_tables: MaskTables | None = None) -> None:
        self.layout = layout
        self.packed = packed = packed or PackedTrees(layout)
        self.threads = (threads or default_threads()) if parallel else 1
        self._tables = (packed.nodes, packed.roots, packed.depth, packed.tree_output, packed.value)
        self._general = packed.general if packed.has_general else None
        if (wide or compact or masks) and self._general is not None:
            raise ValueError("the wide, compact and masks kernels route numerical nodes only")
        if wide + compact + masks > 1:
            raise ValueError("a kernel is one of wide, compact or masks")
        self._masks = None
        if masks:
            tables = mask_tables or MaskTables(packed)
            if not tables.fits:
                raise ValueError(f"the masks kernel routes trees of at most {MASK_LEAVES} leaves, "
                                 f"this model has {tables.max_leaves}")
            self._masks = (tables.used, tables.column, tables.thr, tables.nan_right, tables.mask, tables.node_start,
                           tables.leaf_start, tables.value, packed.tree_output)
            self._mask_block = tables.block
        self.wide = wide
        self.compact = compact

    @classmethod
    def variants(cls, layout: TreeLayout) -> dict[str, NumbaTrees]:
        """Every kernel variant that can run ``layout``, by strategy name, sharing one packed copy."""
        packed = PackedTrees(layout)
        kinds = {"numba": (False, False, False)}
        tables = None
        if not packed.has_general:
            kinds |= {"numba_wide": (True, False, False), "numba_compact": (False, True, False)}
            tables = MaskTables(packed)
            if tables.fits:
                kinds["numba_masks"] = (False, False, True)
        kinds |= {f"{name}_parallel": kind for name, kind in kinds.items()}
        return {name: cls(layout, name.endswith("_parallel"), wide=wide, packed=packed, compact=compact, masks=masks,
                          mask_tables=tables)
                for name, (wide, compact, masks) in kinds.items()}

    @property
    def auto_candidate(self) -> bool:
        """Whether ``auto`` should calibrate this variant (a pinned strategy runs it regardless).

        Not the compacting kernel on trees of at most ``_COMPACT_MIN_DEPTH`` levels: each extra
        candidate takes a share of the calibration budget and is one more chance for a burst of load
        elsewhere to mislead the choice.
        """
        return not self.compact or self.layout.max_depth > _COMPACT_MIN_DEPTH

    def _run(self, X: np.ndarray, out: np.ndarray) -> None:
        if self._masks is not None:
            _traverse_masks(X, *self._masks, out, self._mask_block)
        elif self.wide:
            _traverse_wide(X, *self._tables, out, 0, len(self.packed.roots), _NO_LEAVES)
        elif self.compact:
            _traverse_compact(X, *self._tables, out, BLOCK_ROWS)
        elif self._general is None:
            _traverse(X, *self._tables, out, BLOCK_ROWS)
        else:
            _traverse_general(X, *self._tables, out, BLOCK_ROWS, *self._general)

    def _run_tree_split(self, X: np.ndarray, out: np.ndarray) -> bool:
        """Trees split across threads for a batch too small to split by rows (False: not worth it)."""
        n, n_trees = X.shape[0], len(self.packed.roots)
        parts = min(self.threads, n_trees // (2 * WIDE_TREES))
        if not self.wide or parts < 2 or n >= self.threads * _MIN_ROWS_PER_THREAD:
            return False
        bounds = [-(-n_trees * i // parts) // WIDE_TREES * WIDE_TREES for i in range(parts + 1)]
        bounds[-1] = n_trees
        stored = [np.empty((n, hi - lo), np.uint32) for lo, hi in zip(bounds[1:-1], bounds[2:])]
        pool = _pool(self.threads)
        jobs = [pool.submit(_traverse_wide, X, *self._tables, out, lo, hi, leaves)
                for lo, hi, leaves in zip(bounds[1:-1], bounds[2:], stored)]
        _traverse_wide(X, *self._tables, out, bounds[0], bounds[1], _NO_LEAVES)
        for job, lo, leaves in zip(jobs, bounds[1:-1], stored):
            job.result()
            _add_leaves(out, leaves, self.packed.value, self.packed.tree_output, lo)
        return True

    def __call__(self, X: np.ndarray) -> np.ndarray:
        lay = self.layout
        with np.errstate(over="ignore"):
            Xc = np.ascontiguousarray(X, dtype=lay.compare_dtype)
        out = np.zeros((Xc.shape[0], lay.n_outputs), dtype=lay.acc_dtype)
        if lay.from_base:  # sums start from base_score and add trees in order, as the reference does
            out[:] = lay.base
        if not self._run_tree_split(Xc, out):
            parallel_chunks(self._run, Xc, out, self.threads)
        if lay.acc_dtype is np.float32:
            return out.astype(np.float64)
        if lay.from_base:
            return out
        return out / lay.mean_divisor + lay.base


_NO_LEAVES = np.empty((0, 0), np.uint32)
