"""sklearn's default `GradientBoostingClassifier`, re-implemented in numpy for DCI (same model, faster).

DCI fits `sklearn.ensemble.GradientBoostingClassifier()` with its defaults (log-loss, 100 stages,
learning rate 0.1, depth-3 squared-error regression trees, every feature, no subsampling). This
module computes the same model for dense float inputs, faster:

- X is cast to float32 like sklearn's trees; identical (row, label) pairs are merged into one
  weighted row (exact: every tree statistic is a weighted sum), which makes tables of a few hundred
  distinct codes (a factor grid) nearly free;
- every feature is sorted once; a node's rows stay sorted per feature as they are partitioned, so a
  split search is one cumulative sum per feature over the node (the K class-trees of a stage are
  grown one after the other, depth first, like sklearn's DepthFirstTreeBuilder);
- splits, thresholds, leaves and importances follow sklearn 1.9: the proxy
  `S_l^2/W_l + S_r^2/W_r` (sums from the node's first row, as sklearn's criterion) is maximised over
  positions between consecutive node values that differ by more than float32 1e-7 (sklearn's
  FEATURE_THRESHOLD); the threshold is `a/2 + b/2` in float64; a node is a leaf at depth 3, with
  fewer than 2 samples, impurity <= float64 eps or no valid split; leaf values are the Newton step
  of `_update_terminal_regions` (multinomial: times (K-1)/K); the init is the log prior
  (geometric-mean centred for K > 2); `feature_importances_` is the normalised sum of the trees'
  weighted impurity decreases.

Ties. sklearn evaluates a node's features in an order drawn from the tree's seed (one
`randint(0, 2**31 - 1)` per tree from `RandomState(random_state)`, then its xorshift `rand_r`) and
keeps the first strictly best split. `_FeatureDraws` replays that stream (and its constant-feature
bookkeeping) exactly, so exactly tied features (say identical code columns) resolve as in sklearn
with the same `random_state`. What cannot be replayed is the last bit of sklearn's sums, which run in
the order its unstable introsort and in-place partition leave the samples: two candidate splits
that are equal in exact arithmetic (in nodes of a few samples, or a factor grid's repeated codes)
may then go either way, and the models part from there. On the fixture grid this moves DCI by about
0.001-0.003 (as re-running the reference with another seed does); see tests/test_metrics_gradient_boosting.py.
A node that is pure up to rounding may be split by one and not the other: its leaves predict the same.

Example:
    >>> import numpy as np
    >>> x = np.random.RandomState(0).randn(200, 3)
    >>> y = (x[:, 0] > 0).astype(int)
    >>> model = PresortedGradientBoostingClassifier().fit(x, y)
    >>> bool(np.mean(model.predict(x) == y) == 1.0), int(np.argmax(model.feature_importances_))
    (True, 0)
"""
from __future__ import annotations

from typing import Optional

import numpy as np

FEATURE_THRESHOLD = np.float32(1e-7)  # sklearn/tree/_partitioner.pxd
EPSILON = np.finfo(np.float64).eps  # sklearn/tree/_tree.pyx: a node this pure is a leaf


def _softmax(raw: np.ndarray) -> np.ndarray:
    e = np.exp(raw - raw.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _expit(raw: np.ndarray) -> np.ndarray:
    return np.where(raw >= 0, 1.0 / (1.0 + np.exp(-np.abs(raw))), np.exp(-np.abs(raw)) / (1.0 + np.exp(-np.abs(raw))))


class PresortedGradientBoostingClassifier:
    """`sklearn.ensemble.GradientBoostingClassifier()` with default settings, for dense inputs.

    Attributes after `fit`: `classes_`, `n_classes_`, `feature_importances_`.

    Example:
        >>> import numpy as np
        >>> x = np.random.RandomState(0).rand(300, 4)
        >>> y = np.digitize(x[:, 2], [0.3, 0.6])
        >>> PresortedGradientBoostingClassifier().fit(x, y).score(x, y)
        1.0
    """

    def __init__(self, n_estimators: int = 100, learning_rate: float = 0.1, max_depth: int = 3,
                 random_state: Optional[int] = None):
        if n_estimators < 1 or max_depth < 1 or not learning_rate > 0:
            raise ValueError("n_estimators and max_depth must be >= 1 and learning_rate > 0")
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.max_depth = max_depth
        self.random_state = random_state

    # ------------------------------------------------------------------ fit
    def fit(self, x: np.ndarray, y: np.ndarray) -> "PresortedGradientBoostingClassifier":
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
            raise ValueError(f"x must be 2-D (samples, features), got shape {x.shape}")
        x32 = x.astype(np.float32)
        if not np.isfinite(x32).all():
            raise ValueError("x has NaN or infinite values (after the cast to float32)")
        y = np.asarray(y).ravel()
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]} labels")
        self.classes_, labels = np.unique(y, return_inverse=True)
        self.n_classes_ = k = len(self.classes_)
        if k < 2:
            raise ValueError("y must hold at least two classes")
        self.n_features_in_ = x.shape[1]
        n_trees = 1 if k == 2 else k

        # Merge identical (row, label) pairs into weighted rows.
        rows = np.concatenate([x32.view(np.int32), labels[:, None].astype(np.int32)], axis=1)
        _, first, counts = np.unique(rows, axis=0, return_index=True, return_counts=True)
        first_sorted = np.sort(first)  # keep the original row order of the distinct rows
        weight = counts[np.argsort(first)].astype(np.float64)
        x32, labels = x32[first_sorted], labels[first_sorted]
        n_total = float(x.shape[0])

        prior = np.bincount(labels, weights=weight, minlength=k) / n_total
        prior = np.clip(prior, np.finfo(np.float64).eps, 1 - np.finfo(np.float64).eps)
        if k == 2:
            self.init_raw_ = np.log(prior[1:] / (1 - prior[1:]))
            target = labels[:, None].astype(np.float64)
        else:
            self.init_raw_ = np.log(prior / np.exp(np.mean(np.log(prior))))
            target = (labels[:, None] == np.arange(k)[None, :]).astype(np.float64)
        raw = np.tile(self.init_raw_, (len(labels), 1))

        grower = _TreeGrower(x32, weight, self.max_depth, np.random.RandomState(self.random_state))
        self.features_, self.thresholds_, self.values_ = [], [], []
        importance = np.zeros(self.n_features_in_)
        relevant = 0
        factor = (k - 1) / k if k > 2 else 1.0
        for _ in range(self.n_estimators):
            prob = _softmax(raw) if k > 2 else _expit(raw)
            neg_gradient = target - prob
            features, thresholds, leaves, decrease = grower.grow(neg_gradient)
            importance += decrease.sum(axis=0)
            relevant += int(np.sum((features[0] >= 0)))
            # Newton step per leaf, as sklearn's _update_terminal_regions.
            p = target - neg_gradient
            ids = (np.arange(n_trees)[None, :] * (2 ** self.max_depth) + leaves.T).ravel()
            size = n_trees * 2 ** self.max_depth
            num = np.bincount(ids, weights=(neg_gradient * weight[:, None]).ravel(), minlength=size)
            den = np.bincount(ids, weights=(p * (1 - p) * weight[:, None]).ravel(), minlength=size)
            cnt = np.bincount(ids, weights=np.broadcast_to(weight[:, None], p.shape).ravel(), minlength=size)
            with np.errstate(divide="ignore", invalid="ignore"):
                values = np.where(np.abs(den / np.maximum(cnt, 1)) < 1e-150, 0.0, factor * num / den)
            values = values.reshape(n_trees, -1)
            raw += self.learning_rate * np.take_along_axis(values, leaves, axis=1).T
            self.features_.append(features)
            self.thresholds_.append(thresholds)
            self.values_.append(values)

        importance /= n_total
        if relevant == 0 or importance.sum() <= 0:  # only single-node trees: sklearn gives zeros too
            self.feature_importances_ = np.zeros(self.n_features_in_)
        else:
            self.feature_importances_ = importance / importance.sum()
        return self

    # -------------------------------------------------------------- predict
    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Raw scores (samples, K) for K > 2 classes, (samples,) for two."""
        if not hasattr(self, "values_"):
            raise RuntimeError("call fit before predicting")
        x32 = np.asarray(x).astype(np.float32)
        if x32.ndim != 2 or x32.shape[1] != self.n_features_in_:
            raise ValueError(f"x must have shape (samples, {self.n_features_in_}), got {x32.shape}")
        # every distinct row once (a factor grid's codes repeat)
        x32, inverse = np.unique(x32, axis=0, return_inverse=True)
        n_trees = self.values_[0].shape[0]
        raw = np.tile(self.init_raw_, (x32.shape[0], 1))
        rows = np.arange(x32.shape[0])[None, :]
        for features, thresholds, values in zip(self.features_, self.thresholds_, self.values_):
            node = np.zeros((n_trees, x32.shape[0]), dtype=np.intp)
            for level in range(self.max_depth):
                f = np.take_along_axis(features[level], node, axis=1)
                t = np.take_along_axis(thresholds[level], node, axis=1)
                right = (f >= 0) & (x32[rows, np.maximum(f, 0)] > t)
                node = 2 * node + right
            raw += self.learning_rate * np.take_along_axis(values, node, axis=1).T
        raw = raw[inverse.ravel()]
        return raw[:, 0] if n_trees == 1 else raw

    def predict(self, x: np.ndarray) -> np.ndarray:
        raw = self.decision_function(x)
        encoded = (raw >= 0).astype(int) if raw.ndim == 1 else np.argmax(raw, axis=1)
        return self.classes_[encoded]

    def score(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(self.predict(x) == np.asarray(y).ravel()))


RAND_R_MAX = 0x7FFFFFFF  # sklearn/tree/_utils.pxd


class _FeatureDraws:
    """sklearn's BestSplitter feature sampling for one tree: its rand_r stream and feature arrays.

    `visit(n_known_constants, constant)` replays `node_split_best`'s loop over features (all of them,
    max_features = n_features) and returns the non-constant features in the order they are
    evaluated, and the number of constant features handed to the children.
    """

    def __init__(self, seed: int, n_features: int):
        self.state = seed
        self.features = list(range(n_features))
        self.constant_features = [0] * n_features

    def _rand_int(self, low: int, high: int) -> int:
        s = self.state or 1  # DEFAULT_SEED
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.state = s
        return low + (s % (RAND_R_MAX + 1)) % (high - low)

    def visit(self, n_known: int, constant: np.ndarray) -> tuple[list, int]:
        features = self.features
        f_i = len(features)
        n_visited = n_found = n_drawn = 0
        n_total = n_known
        order = []
        while f_i > n_total and (n_visited < len(features) or n_visited <= n_found + n_drawn):
            n_visited += 1
            f_j = self._rand_int(n_drawn, f_i - n_found)
            if f_j < n_known:
                features[n_drawn], features[f_j] = features[f_j], features[n_drawn]
                n_drawn += 1
                continue
            f_j += n_found
            feature = features[f_j]
            if constant[feature]:
                features[f_j], features[n_total] = features[n_total], features[f_j]
                n_found += 1
                n_total += 1
                continue
            f_i -= 1
            features[f_i], features[f_j] = features[f_j], features[f_i]
            order.append(feature)
        features[:n_known] = self.constant_features[:n_known]
        self.constant_features[n_known:n_known + n_found] = features[n_known:n_known + n_found]
        return order, n_total


class _TreeGrower:
    """Grows the depth-`max_depth` regression trees of one stage, each depth first like sklearn.

    A node is its row ids sorted per feature (d, L), with the sorted float32 values, the weighted
    gradients (and the weights) in that order; a child compresses the row ids and gathers the rest.
    """

    def __init__(self, x32: np.ndarray, weight: np.ndarray, max_depth: int, rng: np.random.RandomState):
        self.x32, self.weight, self.max_depth, self.rng = x32, weight, max_depth, rng
        self.n, self.d = x32.shape
        self.order = np.argsort(x32, axis=0, kind="stable").T.copy()  # (d, n)
        self.x_sorted = np.take_along_axis(x32, self.order.T, axis=0).T.copy()  # (d, n) float32
        self.unit = bool(np.all(weight == 1.0))
        self.w_sorted = None if self.unit else weight[self.order]
        self.root_invalid = np.ones((self.d, self.n), dtype=bool)
        np.less_equal(self.x_sorted[:, 1:], self.x_sorted[:, :-1] + FEATURE_THRESHOLD, out=self.root_invalid[:, :-1])
        self.weight_total = float(weight.sum())
        self.feature_index = np.arange(self.d)
        # float64, as sklearn compares float32 features with its float64 thresholds (under NumPy 2 a
        # float32 array compared with a Python float would round the threshold to float32)
        self.columns = [x32[:, f].astype(np.float64) for f in range(self.d)]
        self.x_by_feature = np.ascontiguousarray(x32.T).ravel()  # value of (f, row) at f * n + row
        self.feature_offset = (np.arange(self.d) * self.n)[:, None]

    def grow(self, g: np.ndarray):
        """Trees on targets g (n, T). Returns per level features/thresholds (T, 2^level), the leaf of
        every row (T, n) and the impurity decreases weighted by node weight (T, d)."""
        n_trees = g.shape[1]
        self.features = [np.full((n_trees, 2 ** level), -1, dtype=np.intp) for level in range(self.max_depth)]
        self.thresholds = [np.zeros((n_trees, 2 ** level)) for level in range(self.max_depth)]
        self.leaves = np.zeros((n_trees, self.n), dtype=np.intp)
        self.decrease = np.zeros((n_trees, self.d))
        wg = g * self.weight[:, None]
        weight = self.weight_total
        for t in range(n_trees):
            # sklearn draws one seed per tree from the ensemble's RandomState
            draws = _FeatureDraws(int(self.rng.randint(0, RAND_R_MAX)), self.d)
            wg_t = np.ascontiguousarray(wg[:, t])
            wgg_t = wg_t * g[:, t]
            total, square = float(np.cumsum(wg_t)[-1]), float(np.cumsum(wgg_t)[-1])  # sequential, row order
            impurity = square / weight - (total / weight) ** 2
            self._node(t, draws, self.order, self.x_sorted, wg_t[self.order], self.w_sorted, wg_t, wgg_t,
                       0, 0, 0, total, square, weight, impurity)
        return self.features, self.thresholds, self.leaves, self.decrease

    def _node(self, t, draws, layout, xs, gs, ws, wg_t, wgg_t, depth, index, n_known, total, square, weight,
              impurity):
        """Split (or not) the node whose rows, sorted per feature, are `layout` (d, L)."""
        if depth >= self.max_depth or weight < 2 or impurity <= EPSILON:
            self.leaves[t, layout[0]] = index << (self.max_depth - depth)
            return
        length = layout.shape[1]
        constant = xs[:, -1] <= xs[:, 0] + FEATURE_THRESHOLD
        visit, n_constant = draws.visit(n_known, constant.tolist())
        best_feature = -1
        if visit:
            s_left = np.cumsum(gs, axis=1)  # sums from the node's first row, as sklearn's criterion
            w_left = np.arange(1.0, length + 1) if ws is None else np.cumsum(ws, axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                s_right = total - s_left
                proxy = s_left * s_left
                proxy /= w_left
                s_right *= s_right
                s_right /= weight - w_left
                proxy += s_right
            # a split after position j needs a next row whose value exceeds x_j + 1e-7 (float32)
            if depth == 0:
                invalid = self.root_invalid
            else:
                invalid = np.ones(proxy.shape, dtype=bool)
                np.less_equal(xs[:, 1:], xs[:, :-1] + FEATURE_THRESHOLD, out=invalid[:, :-1])
            proxy[invalid] = -np.inf
            position = np.argmax(proxy, axis=1)  # first best position of every feature
            value = proxy[self.feature_index, position].tolist()
            best = -np.inf
            for feature in visit:  # sklearn's order; strictly better replaces
                if value[feature] > best:
                    best, best_feature = value[feature], feature
        if best_feature < 0:
            self.leaves[t, layout[0]] = index << (self.max_depth - depth)
            return
        f, j = best_feature, int(position[best_feature])
        threshold = float(xs[f, j]) / 2.0 + float(xs[f, j + 1]) / 2.0
        self.features[depth][t, index] = f
        self.thresholds[depth][t, index] = threshold
        # children, as sklearn's criterion computes them after the split
        total_left = float(s_left[f, j])
        square_left = float(np.cumsum(wgg_t[layout[f, : j + 1]])[-1])
        weight_left = float(j + 1) if ws is None else float(w_left[f, j])
        weight_right = weight - weight_left
        total_right, square_right = total - total_left, square - square_left
        impurity_left = square_left / weight_left - (total_left / weight_left) ** 2
        impurity_right = square_right / weight_right - (total_right / weight_right) ** 2
        self.decrease[t, f] += weight * impurity - weight_left * impurity_left - weight_right * impurity_right
        left = (self.columns[f] <= threshold)[layout]
        for side, mask in enumerate((left, ~left)):
            child = layout[mask].reshape(self.d, -1)
            self._node(t, draws, child, self.x_by_feature[child + self.feature_offset], wg_t[child],
                       None if ws is None else self.weight[child], wg_t, wgg_t, depth + 1, 2 * index + side,
                       n_constant, *((total_left, square_left, weight_left, impurity_left) if side == 0
                                     else (total_right, square_right, weight_right, impurity_right)))
