"""Our metrics against the published disentanglement_lib v1.5 scores (tests/fixtures)."""
import json
import os

import numpy as np
import pytest

from encdiff_pipeline import metrics
from encdiff_pipeline.data import FactorGrid

FIXTURE_DIR = os.path.join(os.path.dirname(__file__), "fixtures", "disentanglement_lib")
NPZ = os.path.join(FIXTURE_DIR, "grid_4_5_3_6.npz")
JSON = os.path.join(FIXTURE_DIR, "grid_4_5_3_6.json")


def _fixtures():
    with open(JSON) as f:
        reference = json.load(f)
    tables = np.load(NPZ, allow_pickle=False)
    return reference, tables


REFERENCE, TABLES = _fixtures()  # a missing fixture is an error, never a skip
CASES = sorted(REFERENCE["cases"])
EXACT = {"factor_vae": metrics.factor_vae, "mig": metrics.mig, "sap": metrics.sap,
         "modularity": metrics.modularity_explicitness}


def _grid():
    return FactorGrid(REFERENCE["factor_sizes"])


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("metric", sorted(EXACT))
def test_exact_parity(case, metric):
    result = EXACT[metric](_grid(), TABLES[case], np.random.RandomState(0))
    for key, expected in REFERENCE["cases"][case][metric].items():
        assert result[key] == pytest.approx(expected, abs=1e-6), (case, metric, key)


def test_callable_gives_the_table_result():
    """A callable on observations (grid indices) and the table give identical scores."""
    table = TABLES["partially_mixed"]
    expected = REFERENCE["cases"]["partially_mixed"]
    by_call = metrics.factor_vae(_grid(), lambda idx: table[idx], np.random.RandomState(0))
    assert by_call["eval_accuracy"] == pytest.approx(expected["factor_vae"]["eval_accuracy"], abs=1e-12)
    by_call = metrics.mig(_grid(), lambda idx: table[idx], np.random.RandomState(0))
    assert by_call["discrete_mig"] == pytest.approx(expected["mig"]["discrete_mig"], abs=1e-12)


def _check_dci(case, **options):
    result = metrics.dci(_grid(), TABLES[case], np.random.RandomState(0), **options)
    for key, expected in REFERENCE["cases"][case]["dci"].items():
        assert result[key] == pytest.approx(expected, abs=0.01), (case, key)


@pytest.mark.parametrize("case", CASES)
def test_dci_parity(case):
    """The default (presorted numpy) gradient boosting, on every fixture case."""
    _check_dci(case)


def test_dci_parity_sklearn_backend():
    """sklearn's GradientBoostingClassifier itself, as disentanglement_lib uses it."""
    _check_dci("rotated_entangled", backend="sklearn")


def test_fixture_holds_every_case():
    """The parity tests above are parametrised by the fixture: check that it holds all five cases."""
    assert CASES == ["factors_plus_noise", "partially_mixed", "permuted_scaled_with_collapsed", "random",
                     "rotated_entangled"]
    assert REFERENCE["factor_sizes"] == [4, 5, 3, 6]
    assert all(TABLES[case].shape[0] == 360 for case in CASES)
