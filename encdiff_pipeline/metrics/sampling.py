"""Draw (codes, factors) pairs from a factor dataset, consuming a `RandomState` like disentanglement_lib.

A *representation* is either

- a callable `observations -> codes (num, N)`, called on what the dataset's
  `sample_observations_from_factors` returns (images, or grid indices for a `FactorGrid`), or
- a precomputed table `(len(dataset), N)`: row `i` is the code of grid point `i`, looked up with
  `dataset.factors_to_index(factors)` (how EncDiff evaluates: every image is encoded once).

Sampling draws `dataset.sample_factors(batch, random_state)` batch by batch with the batch sizes of
the published protocol, so the stream of random numbers, hence the sampled points, are those of
disentanglement_lib v1.5. With a table, observations are not rendered: this is exact for every
dataset whose observations are a function of the factors (all datasets of this package and the
standard Shapes3D / dSprites / MPI3D / Cars3D loaders; dSprites' constant-colour draw, `randint(1)`,
consumes no random numbers). Codes are returned as rows `(num, N)`
(disentanglement_lib works on the transpose).

Example:
    >>> import numpy as np
    >>> from encdiff_pipeline.data import FactorGrid
    >>> grid = FactorGrid([4, 5])
    >>> table = grid.index_to_factors(np.arange(len(grid))).astype(float)
    >>> codes, factors = sample_codes_and_factors(grid, table, 32, np.random.RandomState(0))
    >>> bool((codes == factors).all())
    True
"""
from __future__ import annotations

from typing import Any, Callable, Union

import numpy as np

Representation = Union[Callable[[Any], Any], np.ndarray]

# The callable is fed this many observations at a time (the draws stay in the reference's batches).
ENCODE_CHUNK = 1024
# Codes beyond this magnitude overflow the float64 variances and distances the metrics compute
# (and make the SVM of SAP run without end): refused instead of scored.
MAX_CODE_MAGNITUDE = 1e100
# At most this many points are drawn by one sampling call (the published protocols draw up to 640,000):
# beyond it a metric would run for hours in the drawing loop (or exhaust memory) on any dataset.
MAX_SAMPLED_POINTS = 10**7


def check_count(name: str, value, minimum: int = 1) -> int:
    """A sample count argument as an int, or a ValueError naming it (bools, floats, NaN refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_sample_budget(name: str, points: int) -> None:
    """ValueError naming `name` when a metric would draw more than `MAX_SAMPLED_POINTS` points."""
    if points > MAX_SAMPLED_POINTS:
        raise ValueError(f"{name} asks for {points:,} sampled points, more than the {MAX_SAMPLED_POINTS:,} a metric draws "
                         "at most (the published protocols use 10,000 samples); pass a smaller count")


def warn_small_codes(metric: str, codes: np.ndarray, what: str) -> None:
    """The metrics keep disentanglement_lib's absolute thresholds (FactorVAE's pruning, SAP's SVM
    regularisation): a representation that is merely small then scores 0. Say so, with its scale."""
    import warnings

    spread = float(np.std(codes, axis=0).max()) if codes.size else 0.0
    warnings.warn(f"{metric}: {what} (largest code std {spread:.3g}); the score is disentanglement_lib's value for these "
                  "codes, but it reflects their scale, not their structure: standardise the codes (e.g. divide by their "
                  "std) to score the structure", UserWarning, stacklevel=3)


def check_some_factor_varies(metric: str, factors: np.ndarray) -> None:
    """ValueError when every factor takes a single value in the sample: the metric is undefined."""
    if factors.size and (factors == factors[:1]).all():
        raise ValueError(f"{metric} is undefined: every factor takes a single value in the sample")


def _check_magnitude(values: np.ndarray, what: str) -> None:
    peak = float(np.abs(values).max()) if values.size else 0.0
    if peak > MAX_CODE_MAGNITUDE:
        raise ValueError(
            f"{what} reach {peak:.3g} in magnitude (limit {MAX_CODE_MAGNITUDE:.0e}): variances overflow; "
            "rescale the codes before scoring"
        )


def check_random_state(random_state) -> np.random.RandomState:
    """The metrics draw from a `np.random.RandomState` (disentanglement_lib's stream); anything else is a ValueError."""
    if not isinstance(random_state, np.random.RandomState):
        raise ValueError(f"random_state must be a np.random.RandomState (e.g. np.random.RandomState(0)), "
                         f"got {type(random_state).__name__} {random_state!r}")
    return random_state


def check_representation(dataset, representation: Representation) -> Representation:
    """Validate a representation; return it (a table as a float64 array).

    Raises:
        ValueError: a table of the wrong shape, or with NaN / infinite entries.
    """
    if callable(representation) and not isinstance(representation, np.ndarray):
        return representation
    if np.iscomplexobj(representation):
        raise ValueError("a representation table must hold real numbers; got complex values (take .real or .abs() "
                         "of the codes yourself if that is meant)")
    try:
        table = np.asarray(representation, dtype=np.float64)
    except (ValueError, TypeError) as error:
        raise ValueError(f"a representation table must hold numbers (codes as floats); {error}") from None
    if table.ndim != 2 or table.shape[0] != len(dataset):
        raise ValueError(
            f"a representation table must have shape (len(dataset), N) = ({len(dataset)}, N), "
            f"got {table.shape}"
        )
    if table.shape[1] == 0:
        raise ValueError("the representation has no dimension (N = 0)")
    finite = np.isfinite(table)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=1))
        raise ValueError(
            f"the representation table has NaN or infinite values in {bad.size} rows "
            f"(first: row {bad[0]}); fix the encoder output before scoring"
        )
    _check_magnitude(table, "the representation table's values")
    return table


def _as_codes(codes, num: int) -> np.ndarray:
    if np.iscomplexobj(codes):
        raise ValueError("the representation function returned complex codes; expected real numbers")
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim == 1:
        codes = codes[:, None]
    if codes.ndim != 2 or codes.shape[0] != num:
        raise ValueError(f"the representation function must return codes (num={num}, N), got {codes.shape}")
    if not np.isfinite(codes).all():
        raise ValueError("the representation function returned NaN or infinite codes")
    _check_magnitude(codes, "the representation function's codes")
    return codes


def codes_of(dataset, representation: Representation, factors: np.ndarray, random_state) -> np.ndarray:
    """Codes (num, N) of the given factor vectors (num, K)."""
    if isinstance(representation, np.ndarray):
        return representation[dataset.factors_to_index(factors)]
    observations = dataset.sample_observations_from_factors(factors, random_state)
    return _as_codes(representation(observations), len(factors))


class CodeCollector:
    """Collects factor batches in drawing order and returns their codes in one go.

    A table is looked up once at the end; for a callable the observations are rendered as each
    batch is drawn (in case rendering consumes the random state) and encoded `ENCODE_CHUNK` at a time.
    """

    def __init__(self, dataset, representation: Representation):
        self.dataset = dataset
        self.representation = representation
        self.table = isinstance(representation, np.ndarray)
        self.factors: list[np.ndarray] = []
        self.pending: list = []
        self.pending_num = 0
        self.codes: list[np.ndarray] = []

    def add(self, factors: np.ndarray, random_state) -> None:
        if self.table:
            self.factors.append(factors)
            return
        self.pending.append(self.dataset.sample_observations_from_factors(factors, random_state))
        self.pending_num += len(factors)
        if self.pending_num >= ENCODE_CHUNK:
            self._encode_pending()

    def _encode_pending(self) -> None:
        if not self.pending:
            return
        observations = np.concatenate([np.asarray(o) for o in self.pending], axis=0)
        self.codes.append(_as_codes(self.representation(observations), self.pending_num))
        self.pending, self.pending_num = [], 0

    def result(self) -> np.ndarray:
        """Codes (total, N) of every batch added, in order."""
        if self.table:
            if not self.factors:
                return np.zeros((0, self.representation.shape[1]))
            factors = np.concatenate(self.factors, axis=0)
            self.factors = []
            return self.representation[self.dataset.factors_to_index(factors)]
        self._encode_pending()
        codes, self.codes = np.concatenate(self.codes, axis=0), []
        return codes


def sample_codes_and_factors(
    dataset, representation: Representation, num_points: int, random_state, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """`num_points` codes (num, N) and their factors (num, K), drawn in batches of `batch_size`.

    Same random stream as disentanglement_lib's `utils.generate_batch_factor_code`.
    """
    num_points = check_count("num_points (num_train / num_test)", num_points)
    batch_size = check_count("batch_size", batch_size)
    check_sample_budget("num_points (num_train / num_test)", num_points)
    check_random_state(random_state)
    representation = check_representation(dataset, representation)
    collector = CodeCollector(dataset, representation)
    factors = []
    done = 0
    while done < num_points:
        num = min(num_points - done, batch_size)
        batch = dataset.sample_factors(num, random_state)
        factors.append(batch)
        collector.add(batch, random_state)
        done += num
    return collector.result(), np.concatenate(factors, axis=0)
