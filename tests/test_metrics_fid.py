"""Frechet distance on known Gaussian statistics, and FID through a tiny feature extractor."""
import sys

import numpy as np
import pytest
import torch

from encdiff_pipeline.metrics import compute_fid, frechet_distance
from encdiff_pipeline.metrics.fid import feature_statistics


def test_known_isotropic_gaussians():
    # ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2) = 3 + 3 * (1 + 4 - 2 * 2)
    assert frechet_distance(np.zeros(3), np.eye(3), np.ones(3), 4 * np.eye(3)) == pytest.approx(6.0, abs=1e-9)


def test_same_covariance_leaves_the_mean_term():
    a = np.random.RandomState(0).randn(5, 5)
    sigma = a @ a.T + np.eye(5)
    mu = np.arange(5.0)
    assert frechet_distance(mu, sigma, mu + 2.0, sigma) == pytest.approx(20.0, abs=1e-6)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-6)


def test_singular_covariances_give_a_finite_value():
    sigma = np.zeros((4, 4))
    sigma[0, 0] = 1.0
    value = frechet_distance(np.zeros(4), sigma, np.zeros(4), sigma)
    assert np.isfinite(value) and abs(value) < 1e-3


def test_mismatched_statistics_raise():
    with pytest.raises(ValueError, match="mismatched"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


class TinyExtractor(torch.nn.Module):
    """(B, 3, H, W) in [0, 1] -> (B, 6): channel means and channel maxima."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)


def _images(seed, num=64, shift=0.0):
    rng = np.random.RandomState(seed)
    return np.clip(rng.rand(num, 8, 8, 3) * 0.5 + shift, 0, 1).astype(np.float32)


def test_fid_through_tiny_extractor():
    real, fake = _images(0), _images(1, shift=0.3)
    result = compute_fid(real, fake, TinyExtractor(), batch_size=16)
    features = lambda im: TinyExtractor()(torch.from_numpy(im).permute(0, 3, 1, 2)).double().numpy()
    expected = frechet_distance(*feature_statistics(features(fake)), *feature_statistics(features(real)))
    assert result["fid"] == pytest.approx(expected, rel=1e-6)
    assert result["fid"] > 0.1 and result["feature_dim"] == 6 and result["num_generated"] == 64
    assert compute_fid(real, real, TinyExtractor())["fid"] == pytest.approx(0.0, abs=1e-6)


def test_image_formats_agree():
    real = _images(0)
    as_uint8 = (real * 255).round().astype(np.uint8)
    as_torch = torch.from_numpy(as_uint8.astype(np.float32) / 255.0).permute(0, 3, 1, 2) * 2 - 1
    a = compute_fid(as_uint8, _images(2), TinyExtractor())["fid"]
    b = compute_fid(as_torch, _images(2), TinyExtractor())["fid"]
    assert a == pytest.approx(b, rel=1e-5)


def test_torchscript_path(tmp_path):
    path = tmp_path / "extractor.pt"
    torch.jit.script(TinyExtractor()).save(str(path))
    real, fake = _images(0), _images(1, shift=0.3)
    assert compute_fid(real, fake, str(path))["fid"] == pytest.approx(compute_fid(real, fake, TinyExtractor())["fid"], rel=1e-6)


def test_missing_extractor_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pytorch_fid", None)  # as if not installed
    with pytest.raises(RuntimeError, match="feature_extractor="):
        compute_fid(_images(0), _images(1))
    with pytest.raises(FileNotFoundError, match="no feature extractor file"):
        compute_fid(_images(0), _images(1), str(tmp_path / "missing.pt"))
