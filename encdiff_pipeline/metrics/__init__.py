"""Disentanglement metrics with disentanglement_lib's values and defaults, plus TAD and FID.

Naming scheme: every metric lives in its own module (`factor_vae.py`, `dci.py`, `mig.py`,
`sap.py`, `modularity_explicitness.py`) that defines `compute_<name>`. The package rebinds the
short names to those functions, so `encdiff_pipeline.metrics.dci` IS the metric:

    >>> import numpy as np
    >>> from encdiff_pipeline.data import FactorGrid
    >>> from encdiff_pipeline import metrics
    >>> grid = FactorGrid([4, 5, 3, 6])
    >>> table = np.random.RandomState(1).randn(len(grid), 4)  # or a callable on observations
    >>> scores = metrics.mig(grid, table, np.random.RandomState(0))  # -> {"discrete_mig": ...}

Each takes `(dataset, representation_function, random_state, **protocol)` and returns a dict with
disentanglement_lib's keys. To reach a module's helpers use a from-import, which resolves the
module: `from encdiff_pipeline.metrics.dci import disentanglement, completeness`
(`import encdiff_pipeline.metrics.dci as m` would give the function). TAD and FID take other
inputs and keep their `compute_*` names: `compute_tad`, `compute_fid`, `frechet_distance`.
`METRICS` maps the report names used by `encdiff_pipeline.evaluate` to the functions.
"""
from .dci import compute_dci
from .factor_vae import compute_factor_vae
from .mig import compute_mig
from .modularity_explicitness import compute_modularity_explicitness
from .sap import compute_sap
from .sampling import sample_codes_and_factors
from .representation_table import compute_representation_table
from .tad import compute_tad
from .fid import compute_fid, frechet_distance

factor_vae = compute_factor_vae
dci = compute_dci
mig = compute_mig
sap = compute_sap
modularity_explicitness = compute_modularity_explicitness

METRICS = {
    "factor_vae": compute_factor_vae,
    "dci": compute_dci,
    "mig": compute_mig,
    "sap": compute_sap,
    "modularity": compute_modularity_explicitness,
}

__all__ = [
    "factor_vae", "dci", "mig", "sap", "modularity_explicitness", "METRICS",
    "compute_factor_vae", "compute_dci", "compute_mig", "compute_sap", "compute_modularity_explicitness",
    "compute_tad", "compute_fid", "frechet_distance", "compute_representation_table", "sample_codes_and_factors",
]
