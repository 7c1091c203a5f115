"""Every metric on small hand-made inputs whose score is derived on paper (no fixture needed).

The parity tests (test_metrics_parity.py) need ../shared's disentanglement_lib fixtures; these do
not, so a clone alone still catches a wrong gap, a missing normalisation or an off-by-one.
"""
import math

import numpy as np
import pytest
import torch

from encdiff_pipeline.data import FactorGrid
from encdiff_pipeline.metrics import compute_fid, factor_vae, mig
from encdiff_pipeline.metrics.dci import completeness, completeness_per_factor, disentanglement, disentanglement_per_code
from encdiff_pipeline.metrics.mig import mig_from_mutual_info
from encdiff_pipeline.metrics.modularity_explicitness import modularity
from encdiff_pipeline.metrics.mutual_information import discrete_entropy, discrete_mutual_info, histogram_discretize
from encdiff_pipeline.metrics.sap import compute_score_matrix, sap_from_score_matrix

LN2, LN4 = math.log(2), math.log(4)


def grid_factors(sizes):
    grid = FactorGrid(sizes)
    return grid, grid.index_to_factors(np.arange(len(grid))).astype(np.float64)


# ---- SAP: mean over factors of (best code - second best code) --------------------------------
def test_sap_gap_is_between_the_two_best_codes():
    scores = np.array([[0.9, 0.1],
                       [0.5, 0.6],
                       [0.2, 0.3]])
    # factor 0: 0.9 - 0.5 = 0.4; factor 1: 0.6 - 0.3 = 0.3 (not 0.9 - 0.2 or 0.6 - 0.1: the worst code)
    assert sap_from_score_matrix(scores) == pytest.approx(0.35, abs=1e-12)
    # the order of the codes does not matter
    assert sap_from_score_matrix(scores[[2, 0, 1]]) == pytest.approx(0.35, abs=1e-12)


def test_sap_continuous_score_matrix_is_the_squared_correlation():
    factors = np.stack([np.repeat(np.arange(4.0), 5), np.tile(np.arange(5.0), 4)], axis=1)  # (20, 2), independent
    codes = np.stack([3 * factors[:, 0] + 1, -factors[:, 1], factors[:, 0] + factors[:, 1]], axis=1)
    matrix = compute_score_matrix(codes, factors, codes, factors, continuous_factors=True)
    # independent factors: corr^2(f0 + f1, f0) = var f0 / (var f0 + var f1); var of 0..n-1 is (n^2 - 1) / 12
    v0, v1 = (16 - 1) / 12, (25 - 1) / 12
    expected = np.array([[1, 0], [0, 1], [v0 / (v0 + v1), v1 / (v0 + v1)]])
    np.testing.assert_allclose(matrix, expected, atol=1e-12)
    assert sap_from_score_matrix(matrix) == pytest.approx(np.mean([1 - v0 / (v0 + v1), 1 - v1 / (v0 + v1)]), abs=1e-12)


# ---- MIG: mean over factors of (top1 - top2 MI) / H(that factor) ------------------------------
def test_mig_normalises_each_factor_by_its_own_entropy():
    entropy = np.array([LN2, LN4])  # a binary and a uniform 4-valued factor
    mutual_info = np.array([[0.5 * LN2, 0.0],
                            [0.0, LN4],
                            [0.0, 0.25 * LN4]])
    # factor 0: (0.5 ln2 - 0) / ln2 = 0.5; factor 1: (ln4 - 0.25 ln4) / ln4 = 0.75
    assert mig_from_mutual_info(mutual_info, entropy) == pytest.approx(0.625, abs=1e-12)


def test_mig_of_a_perfect_code_is_one_whatever_the_factor_entropies():
    grid, factors = grid_factors([2, 4])
    table = factors[:, [1, 0]] * [0.3, 10.0]  # code 0 <- factor 1, code 1 <- factor 0, different scales
    # each code is a bijection of its factor, so its MI equals the factor's entropy in any sample,
    # and the other code is independent of the factor on the full grid
    score = mig(grid, table, np.random.RandomState(0), num_train=len(grid) * 50)["discrete_mig"]
    assert 0.99 < score <= 1.0
    codes = histogram_discretize(table, 20)
    mi = discrete_mutual_info(codes, factors)
    np.testing.assert_allclose(np.diag(mi[::-1]), [LN2, LN4], atol=1e-12)  # exact on the full grid
    np.testing.assert_allclose(discrete_entropy(factors), [LN2, LN4], atol=1e-12)
    assert mig_from_mutual_info(mi, discrete_entropy(factors)) == pytest.approx(1.0, abs=1e-12)


# ---- modularity: 1 - sum_{j != max} MI^2 / (MI_max^2 (K - 1)), mean over codes ------------------
def test_modularity_by_hand():
    mutual_info = np.array([[1.0, 0.0, 0.0],    # one factor only: 1
                            [0.5, 0.5, 0.5],    # spread evenly: 1 - 0.75 / (0.25 * 2) = 0
                            [0.4, 0.2, 0.0],    # 1 - 0.04 / (0.16 * 2) = 0.875
                            [0.0, 0.0, 0.0]])   # no information: 0
    assert modularity(mutual_info) == pytest.approx((1 + 0 + 0.875 + 0) / 4, abs=1e-12)
    # two factors: K - 1 = 1; 1 - 0.09 / 0.36 = 0.75
    assert modularity(np.array([[0.6, 0.3]])) == pytest.approx(0.75, abs=1e-12)


# ---- DCI: importance-weighted 1 - entropies, base K for codes and base N for factors ----------
def test_dci_by_hand():
    r = np.array([[0.6, 0.0],
                  [0.2, 0.2],
                  [0.0, 0.4]])   # 3 codes, 2 factors; total importance 1.4
    h2 = lambda *p: -sum(x * math.log(x) for x in p if x > 0) / math.log(2)
    h3 = lambda *p: -sum(x * math.log(x) for x in p if x > 0) / math.log(3)
    per_code = [1 - h2(1.0), 1 - h2(0.5, 0.5), 1 - h2(1.0)]                # [1, 0, 1]
    per_factor = [1 - h3(0.75, 0.25), 1 - h3(1 / 3, 2 / 3)]
    np.testing.assert_allclose(disentanglement_per_code(r), per_code, atol=1e-9)
    np.testing.assert_allclose(completeness_per_factor(r), per_factor, atol=1e-9)
    # weighted by each code's / factor's share of the total importance (not a plain mean: 2/3 here)
    assert disentanglement(r) == pytest.approx((0.6 / 1.4) * 1 + (0.4 / 1.4) * 0 + (0.4 / 1.4) * 1, abs=1e-9)
    assert completeness(r) == pytest.approx((0.8 / 1.4) * per_factor[0] + (0.6 / 1.4) * per_factor[1], abs=1e-9)


# ---- FactorVAE: argmin of local variance / global variance ------------------------------------
def test_factor_vae_normalises_by_the_global_variance():
    grid, factors = grid_factors([5, 5])
    noise, noise2 = np.random.RandomState(1).randn(2, len(grid))
    # code 0 encodes factor 0 at scale 100 with noise of std 5; code 1 is factor 1 (variance 2);
    # code 2 is constant (pruned)
    table = np.stack([100 * factors[:, 0] + 5 * noise, factors[:, 1], np.full(len(grid), 0.01)], axis=1)
    scores = factor_vae(grid, table, np.random.RandomState(0), batch_size=32, num_train=200, num_eval=100,
                        num_variance_estimate=1000)
    # with factor 0 fixed, code 0 keeps a local variance of ~25, far above code 1's ~2, but only
    # ~25 / 20,000 of its global variance: normalised, every vote is right (unnormalised: half)
    assert scores["train_accuracy"] == 1.0 and scores["eval_accuracy"] == 1.0
    assert scores["num_kept_dims"] == 2 and scores["num_active_dims"] == 3  # the constant code is pruned
    # the pruning threshold 0.05 is on the std: noise of std ~0.1 (variance ~0.01) is kept, std ~0.03 is not
    table = np.stack([factors[:, 0], factors[:, 1], 0.1 * noise2, 0.03 * noise2], axis=1)
    scores = factor_vae(grid, table, np.random.RandomState(0), batch_size=8, num_train=10, num_eval=10,
                        num_variance_estimate=1000)
    assert scores["num_kept_dims"] == 3 and scores["num_active_dims"] == 4


# ---- FID from its definition, independent numpy code -------------------------------------------
def test_fid_equals_the_frechet_distance_written_from_its_definition():
    class Features(torch.nn.Module):
        def forward(self, x):
            return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3)), x[:, :, 0, 0]], dim=1)  # (B, 9)

    rng = np.random.RandomState(0)
    real = rng.rand(40, 6, 6, 3).astype(np.float32)
    fake = (rng.rand(30, 6, 6, 3) ** 2).astype(np.float32)
    feats = lambda im: np.concatenate([im.mean(axis=(1, 2)), im.max(axis=(1, 2)), im[:, 0, 0, :]], axis=1).astype(np.float64)

    def stats(f):
        mu = f.sum(axis=0) / len(f)
        centred = f - mu
        return mu, centred.T @ centred / (len(f) - 1)  # the unbiased sample covariance

    (m1, s1), (m2, s2) = stats(feats(fake)), stats(feats(real))
    # Tr sqrt(S1 S2) = sum of the square roots of the eigenvalues of S1 S2 (real, >= 0 for SPD S1, S2)
    eigenvalues = np.linalg.eigvals(s1 @ s2).real.clip(min=0)
    expected = np.sum((m1 - m2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(eigenvalues))
    result = compute_fid(real, fake, Features(), batch_size=7)
    assert result["num_real"] == 40 and result["num_generated"] == 30 and result["feature_dim"] == 9
    assert result["fid"] == pytest.approx(expected, rel=1e-6)
