"""FID, the Frechet distance between Inception-v3 pool3 (2048-d) feature statistics of two image sets.

The distance is computed as pytorch-fid does: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)), with
`scipy.linalg.sqrtm`, `eps` added to the diagonals when the product is singular, and a small
imaginary part (numerical noise) dropped. The feature extractor is the user's: a torch module or
callable mapping images (B, 3, H, W) float in [0, 1] to features (B, 2048) (pytorch-fid's
`InceptionV3([3])` qualifies), or a path to a TorchScript file of one. A TorchScript file is a
program: `torch.jit.load` reads it without unpickling, but the code it holds runs when the extractor
is called, so only pass a file you would run as code. With none given,
pytorch-fid's `InceptionV3` is used if that package is installed (it downloads its weights when
online). This module imports torch only to run the extractor.

Example:
    >>> import numpy as np
    >>> rng = np.random.RandomState(0)
    >>> a, b = rng.randn(500, 4), rng.randn(500, 4) + 1.0
    >>> mu1, s1 = feature_statistics(a); mu2, s2 = feature_statistics(b)
    >>> round(frechet_distance(mu1, s1, mu2, s2), 1)  # doctest: +SKIP
    4.0
"""
from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Optional, Union

import numpy as np
from scipy import linalg

NO_EXTRACTOR_MESSAGE = (
    "FID needs an Inception-v3 pool3 feature extractor and none is available offline. Pass "
    "feature_extractor=<a torch module mapping images (B, 3, H, W) in [0, 1] to (B, 2048) features>, "
    "e.g. pytorch_fid.inception.InceptionV3([3]) with its weights file, or feature_extractor="
    "'<path to a TorchScript Inception-v3 feature extractor>.pt'; or `pip install pytorch-fid` "
    "on a machine that can download its weights (pt_inception-2015-12-05)."
)


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (num, D)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"expected at least 2 feature vectors (num, D), got shape {features.shape}")
    if not np.isfinite(features).all():
        raise ValueError("the features contain NaN or infinite values")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    root = linalg.sqrtm(matrix)
    return root[0] if isinstance(root, tuple) else root


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Frechet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"mismatched statistics: mu {mu1.shape} / {mu2.shape}, sigma {sigma1.shape} / {sigma2.shape}")
    for name, value in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(value).all():
            raise ValueError(f"{name} holds NaN or infinite values; the Frechet distance of such statistics is undefined "
                             "(were the features of an empty or diverged image set?)")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has a large imaginary component ({np.abs(covmean.imag).max():.3g}); "
                             "the covariances are ill-conditioned (too few images?)")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def load_feature_extractor(feature_extractor: Union[None, str, os.PathLike, Callable] = None) -> Callable:
    """A callable images (B, 3, H, W) float tensor in [0, 1] -> features (B, D).

    A path is loaded with `torch.jit.load`: the TorchScript program in it runs when the extractor is
    called, so treat the file as code and only pass one from a source you trust.

    Raises:
        FileNotFoundError: a path that does not exist.
        RuntimeError: no extractor given and pytorch-fid unavailable (message says how to supply one).
    """
    import torch

    if feature_extractor is None:
        try:
            from pytorch_fid.inception import InceptionV3  # optional dependency
        except ImportError:
            raise RuntimeError(NO_EXTRACTOR_MESSAGE) from None
        try:
            feature_extractor = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
        except Exception as error:  # weights download failed (offline)
            raise RuntimeError(f"{NO_EXTRACTOR_MESSAGE} (pytorch-fid failed: {error})") from error
    elif isinstance(feature_extractor, (str, os.PathLike)):
        path = os.fspath(feature_extractor)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no feature extractor file at {path!r}. {NO_EXTRACTOR_MESSAGE}")
        try:
            feature_extractor = torch.jit.load(path, map_location="cpu")
        except Exception as error:
            raise ValueError(f"{path!r} is not a TorchScript feature extractor: {error}") from error
    if not callable(feature_extractor):
        raise TypeError(f"feature_extractor must be a torch module, a callable or a path, got {type(feature_extractor)}")
    if isinstance(feature_extractor, torch.nn.Module):
        feature_extractor.eval()
    return feature_extractor


def _to_unit_nchw(images) -> "Any":
    """Images -> float tensor (B, 3, H, W) in [0, 1]. Accepts numpy NHWC uint8 / [0, 1] floats or torch NCHW in [-1, 1]."""
    import torch

    from ..image_range import to_unit_range

    if isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"expected image tensors (B, C, H, W), got {tuple(images.shape)}")
        x = to_unit_range(images.float())  # diffusers convention: [-1, 1]
    else:
        array = np.asarray(images)
        if array.ndim != 4:
            raise ValueError(f"expected images (B, H, W, C), got {array.shape}")
        x = torch.from_numpy(array.astype(np.float32) / (255.0 if array.dtype == np.uint8 else 1.0)).permute(0, 3, 1, 2)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.clamp(0.0, 1.0)


def compute_features(images: Union[np.ndarray, Iterable], feature_extractor: Callable, batch_size: int = 50) -> np.ndarray:
    """Features (num, D) of images (an array, or an iterable of batches) through the extractor."""
    import torch

    def batches():
        if isinstance(images, (np.ndarray, torch.Tensor)):
            for start in range(0, len(images), batch_size):
                yield images[start:start + batch_size]
        else:
            yield from images

    features = []
    with torch.no_grad():
        for batch in batches():
            out = feature_extractor(_to_unit_nchw(batch))
            if isinstance(out, (list, tuple)):
                out = out[0]
            features.append(out.reshape(out.shape[0], -1).double().cpu().numpy())
    if not features:
        raise ValueError("no images given")
    return np.concatenate(features, axis=0)


def compute_fid(
    real_images,
    generated_images,
    feature_extractor: Union[None, str, os.PathLike, Callable] = None,
    batch_size: int = 50,
    real_statistics: Optional[tuple[np.ndarray, np.ndarray]] = None,
) -> dict:
    """FID between real and generated images.

    Args:
        real_images: numpy (N, H, W, C) uint8 or float in [0, 1], torch (N, C, H, W) in [-1, 1], or an
            iterable of such batches. Ignored when `real_statistics` is given.
        generated_images: same formats.
        feature_extractor: torch module / callable, TorchScript path, or None (pytorch-fid if installed).
            A TorchScript file is code: it runs when called, so pass only a file you trust.
        real_statistics: precomputed (mu, sigma) of the real set.

    Returns:
        `fid`, `num_generated`, `num_real`, `feature_dim`.
    """
    extractor = load_feature_extractor(feature_extractor)
    generated = compute_features(generated_images, extractor, batch_size)
    if real_statistics is None:
        real = compute_features(real_images, extractor, batch_size)
        mu_real, sigma_real = feature_statistics(real)
        num_real = len(real)
    else:
        mu_real, sigma_real = real_statistics
        num_real = None
    mu_gen, sigma_gen = feature_statistics(generated)
    return {
        "fid": frechet_distance(mu_gen, sigma_gen, mu_real, sigma_real),
        "num_generated": int(len(generated)),
        "num_real": num_real,
        "feature_dim": int(generated.shape[1]),
    }
