"""The terms the VAE baselines' objectives are made of (disentanglement_lib's definitions, in torch).

Every term is averaged over the batch and summed over pixels or latent dimensions, as in
disentanglement_lib, so the weights (beta, gamma) mean the same thing as in the published studies.

Example:
    >>> mean, logvar = torch.zeros(8, 10), torch.zeros(8, 10)
    >>> float(gaussian_kl(mean, logvar))
    0.0
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def reconstruction_loss(logits: torch.Tensor, target: torch.Tensor, likelihood: str = "bernoulli") -> torch.Tensor:
    """Negative log-likelihood of `target` pixels in [0, 1] under the decoder output `logits`.

    "bernoulli" (disentanglement_lib's default, `bernoulli_loss` with logits): per-pixel sigmoid
    cross-entropy. "gaussian" (its `l2_loss`): squared error of sigmoid(logits), a Gaussian of
    fixed variance up to constants. Summed over pixels, averaged over the batch.
    """
    if likelihood == "bernoulli":
        per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    elif likelihood == "gaussian":
        per_pixel = (torch.sigmoid(logits) - target) ** 2
    else:
        raise ValueError(f"likelihood must be 'bernoulli' or 'gaussian', got {likelihood!r}")
    return per_pixel.flatten(1).sum(dim=1).mean()


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, I)), summed over latents, averaged over the batch."""
    return 0.5 * (mean.pow(2) + logvar.exp() - logvar - 1.0).sum(dim=1).mean()


def gaussian_log_density(samples: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(samples; mean, exp(logvar)) (broadcasting)."""
    inv_var = torch.exp(-logvar)
    return -0.5 * ((samples - mean) ** 2 * inv_var + logvar + math.log(2.0 * math.pi))


def total_correlation(z: torch.Tensor, mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Minibatch estimate (Chen et al., 2018) of TC = KL(q(z) || prod_j q(z_j)), in nats.

    The aggregate posterior is estimated on the batch itself, q(z) ~ 1/M sum_m q(z | x_m), for the
    joint and for every marginal q(z_j). Chen et al.'s minibatch-weighted sampling uses 1/(N M)
    (N = dataset size) instead of 1/M; the difference is a constant (D - 1) log N that does not change
    gradients (disentanglement_lib drops all constants), while with 1/M the estimate of a factorised
    aggregate posterior is close to 0, which makes the number readable.

    Args:
        z: (M, D) samples, z[i] ~ q(z | x_i).
        mean, logvar: (M, D) posterior parameters of the same batch.
    """
    if z.ndim != 2 or z.shape != mean.shape or z.shape != logvar.shape:
        raise ValueError(f"z, mean and logvar must all be (batch, latents); got {tuple(z.shape)}, "
                         f"{tuple(mean.shape)}, {tuple(logvar.shape)}")
    batch, dims = z.shape
    # log q(z_i,j | x_m) for every pair (i, m) and dimension j: (M, M, D)
    log_qz_pairs = gaussian_log_density(z[:, None, :], mean[None, :, :], logvar[None, :, :])
    log_m = math.log(batch)
    log_qz = torch.logsumexp(log_qz_pairs.sum(dim=2), dim=1) - log_m
    log_qz_marginals = (torch.logsumexp(log_qz_pairs, dim=1) - log_m).sum(dim=1)
    return (log_qz - log_qz_marginals).mean()
