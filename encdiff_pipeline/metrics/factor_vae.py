"""FactorVAE score ("Disentangling by Factorising", Kim & Mnih 2018), disentanglement_lib's protocol.

Global variances (ddof=1) of `num_variance_estimate` codes; dims whose std is below
`prune_threshold` are pruned; each vote fixes one random factor across a batch of `batch_size`
points and votes (factor, dim with the smallest local/global variance); a majority-vote classifier
is fit on `num_train` votes and scored on `num_eval` votes. The random draws are those of
disentanglement_lib v1.5; the votes are computed on all batches at once with numpy.

Example:
    >>> import numpy as np
    >>> from encdiff_pipeline.data import FactorGrid
    >>> from encdiff_pipeline.metrics import factor_vae
    >>> grid = FactorGrid([4, 5, 3])
    >>> table = grid.index_to_factors(np.arange(len(grid))).astype(float)
    >>> factor_vae(grid, table, np.random.RandomState(0), num_train=500, num_eval=200)["eval_accuracy"]
    1.0
"""
from __future__ import annotations

import numpy as np

from .sampling import (CodeCollector, Representation, check_count, check_random_state, check_representation,
                       check_sample_budget, codes_of, warn_small_codes)

# Votes are reduced this many at a time (bounds memory on a 480,000 x 20 table).
_VOTE_CHUNK = 2048


def _draw_votes(dataset, representation, batch_size: int, num_votes: int, random_state, global_variances, active):
    """Factor index and argmin dim of `num_votes` votes, same draws as the reference's loop."""
    num_factors = dataset.num_factors
    factor_index = np.empty(num_votes, dtype=np.int64)
    argmin = np.empty(num_votes, dtype=np.int64)
    ratio_scale = global_variances[active]
    for start in range(0, num_votes, _VOTE_CHUNK):
        stop = min(start + _VOTE_CHUNK, num_votes)
        collector = CodeCollector(dataset, representation)
        for v in range(start, stop):
            k = random_state.randint(num_factors)
            factors = dataset.sample_factors(batch_size, random_state)
            factors[:, k] = factors[0, k]
            factor_index[v] = k
            collector.add(factors, random_state)
        codes = collector.result().reshape(stop - start, batch_size, -1)
        local_variances = np.var(codes, axis=1, ddof=1)
        argmin[start:stop] = np.argmin(local_variances[:, active] / ratio_scale, axis=1)
    return factor_index, argmin


def _vote_matrix(factor_index: np.ndarray, argmin: np.ndarray, num_factors: int, num_dims: int) -> np.ndarray:
    votes = np.zeros((num_factors, num_dims), dtype=np.int64)
    np.add.at(votes, (factor_index, argmin), 1)
    return votes


def compute_factor_vae(
    dataset,
    representation_function: Representation,
    random_state: np.random.RandomState,
    batch_size: int = 64,
    num_train: int = 10000,
    num_eval: int = 5000,
    num_variance_estimate: int = 10000,
    prune_threshold: float = 0.05,
) -> dict:
    """FactorVAE score of a representation on a factor dataset.

    Args:
        dataset: a `FactorDataset`.
        representation_function: callable observations -> codes (num, N), or a table (len(dataset), N).
        random_state: `np.random.RandomState`, consumed like disentanglement_lib.
        batch_size, num_train, num_eval, num_variance_estimate, prune_threshold: the published
            protocol (64, 10,000, 5,000, 10,000, 0.05).

    Returns:
        `train_accuracy`, `eval_accuracy`, `num_active_dims` (as disentanglement_lib v1.5 reports it:
        the number of dims, pruned or not) and `num_kept_dims` (dims that survived pruning).
    """
    num_train = check_count("num_train", num_train)
    num_eval = check_count("num_eval", num_eval)
    if num_variance_estimate < 2 or batch_size < 2:
        raise ValueError("num_variance_estimate and batch_size must be at least 2 (variances use ddof=1)")
    num_variance_estimate = check_count("num_variance_estimate", num_variance_estimate, 2)
    batch_size = check_count("batch_size", batch_size, 2)
    check_sample_budget("num_variance_estimate", num_variance_estimate)
    check_sample_budget("num_train x batch_size", num_train * batch_size)
    check_sample_budget("num_eval x batch_size", num_eval * batch_size)
    check_random_state(random_state)
    representation = check_representation(dataset, representation_function)
    factors = dataset.sample_factors(num_variance_estimate, random_state)
    codes = codes_of(dataset, representation, factors, random_state)
    if all(size == 1 for size in dataset.factor_sizes):
        raise ValueError("FactorVAE is undefined: every factor takes a single value (factor sizes "
                         f"{list(dataset.factor_sizes)}), so no vote can fix one")
    global_variances = np.var(codes, axis=0, ddof=1)
    active = np.sqrt(global_variances) >= prune_threshold
    if not active.any():
        if global_variances.max() > 0:
            warn_small_codes("FactorVAE", codes, f"every dimension's std is below prune_threshold {prune_threshold}, so "
                             "all are pruned and the score is 0")
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0, "num_kept_dims": 0}

    num_active = int(active.sum())
    train_votes = _vote_matrix(
        *_draw_votes(dataset, representation, batch_size, num_train, random_state, global_variances, active),
        dataset.num_factors,
        num_active,
    )
    classifier = np.argmax(train_votes, axis=0)
    columns = np.arange(num_active)
    train_accuracy = np.sum(train_votes[classifier, columns]) / np.sum(train_votes)
    eval_votes = _vote_matrix(
        *_draw_votes(dataset, representation, batch_size, num_eval, random_state, global_variances, active),
        dataset.num_factors,
        num_active,
    )
    eval_accuracy = np.sum(eval_votes[classifier, columns]) / np.sum(eval_votes)
    return {
        "train_accuracy": float(train_accuracy),
        "eval_accuracy": float(eval_accuracy),
        "num_active_dims": int(codes.shape[1]),
        "num_kept_dims": num_active,
    }
