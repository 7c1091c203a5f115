"""The denoising objective EncDiff trains with, and the levers that move what it pays for.

The paper's objective: t uniform over the T training steps, the U-Net predicts the noise (eps), loss
= mean L1 between prediction and target. Three levers change *which* information the loss rewards,
and so what the concept tokens must carry:

- `prediction_type`: "epsilon" (paper), "sample" (the clean image x0) or "v_prediction"
  (v = sqrt(a) eps - sqrt(1 - a) x0). An error of the implied x0 costs sqrt(SNR) times more under
  eps than under x0, so eps puts the weight on low noise, where x_t itself shows the image and exact
  colours dominate; x0 weighs every noise level alike.
- `timestep_sampling`: "uniform" (paper) or "logsnr_normal": log-SNR drawn from a normal
  N(logsnr_mean, logsnr_std), mapped to the nearest training step. Small image details (object
  scale and shape) drown in the noise at moderate noise levels (log-SNR about -2.5 to 0 at 16 px),
  where the coarse colours are still readable from x_t: training there makes the tokens carry them.
- `edge_loss_weight`: an extra L1 loss between the finite differences (horizontal and vertical) of
  the implied clean image and of the true one. Edges carry the object's outline: its share of the
  loss is several times its share of the pixel variance.
- `edge_weighting`: the loss itself (any prediction type) weighted per pixel by
  `1 + edge_weighting * e / mean(e)`, with `e` the clean image's edge magnitude, then normalised to
  a mean weight of 1 per image: flat regions (floor, walls) count less, outlines (the object's
  scale and shape) more, without changing the target.

- `loss_weighting` "truncated_snr" (with "sample" prediction): each image's clean-image loss
  weighted by max(1, SNR) (its square root for L1), i.e. the eps loss where SNR > 1 and the x0
  loss where the noise dominates: eps's emphasis on low noise with a U-Net that predicts the clean
  image (stable at high noise, where sampling from noise starts).

- `sample_prediction_from` (with "epsilon"): the U-Net predicts the clean image at the training
  steps t >= this and the noise below it. eps's loss is what the concept encoder disentangles best
  from, but at high noise the clean image it implies divides by sqrt(alpha_bar): an eps error there
  is amplified 13-32x, and sampling from noise loses the hues. The switch keeps eps where it is
  stable and predicts x0 where sampling starts; the pipeline reads the same threshold
  (`EncDiffPipeline(sample_prediction_from=...)`) and converts each prediction for its scheduler.
  `token_gradient` "eps" then scales the concept tokens' gradient of those x0 images to what the eps
  loss would give them (sqrt(SNR) for L1, SNR for L2): the encoder learns from the eps objective
  alone, the U-Net also learns to render the tokens at high noise.

One lever changes what the U-Net can do with the tokens at sampling time: `token_dropout`, the
probability that an image's tokens are replaced by zeros (the empty condition), so that the U-Net
also learns to denoise without them and the pipeline can guide towards them (classifier-free
guidance, `EncDiffPipeline(guidance_scale=...)`).

Example:
    >>> from diffusers import DDPMScheduler
    >>> objective = DiffusionObjective(DDPMScheduler(), prediction_type="sample",
    ...                                timestep_sampling="logsnr_normal", logsnr_mean=-1.0)
    >>> g = torch.Generator().manual_seed(0)
    >>> clean = torch.zeros(4, 3, 16, 16)
    >>> noisy, timesteps, noise = objective.noise(clean, g)
    >>> loss = objective.loss(clean, noisy, timesteps, noise, prediction=torch.zeros_like(clean))
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TIMESTEP_SAMPLINGS = ("uniform", "logsnr_normal")
LOSS_WEIGHTINGS = ("uniform", "truncated_snr")
LOSS_TYPES = ("l1", "l2")
TOKEN_GRADIENTS = ("full", "eps")


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the gradient times `scale` (broadcast) backward."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scale)
        return tensor.view_as(tensor)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (scale,) = ctx.saved_tensors
        return grad * scale, None


def finite_differences(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal and vertical neighbour differences of (B, C, H, W) images."""
    return images[..., :, 1:] - images[..., :, :-1], images[..., 1:, :] - images[..., :-1, :]


class DiffusionObjective:
    """Noising, target and loss of one training step for a diffusers noise scheduler.

    Args:
        scheduler: a `DDPMScheduler` (or any scheduler with `alphas_cumprod` and `add_noise`).
        prediction_type: "epsilon", "sample" or "v_prediction".
        loss_type: "l1" (paper) or "l2", on the prediction target.
        timestep_sampling: "uniform" or "logsnr_normal".
        logsnr_mean, logsnr_std: the normal in log-SNR of "logsnr_normal".
        edge_loss_weight: weight of the L1 loss on finite differences of the implied clean image
            (0 = off; needs "sample" or "v_prediction", where the clean image is a stable function of
            the prediction).
        edge_weighting: strength of the per-pixel edge weighting of the loss (0 = off, the plain mean).
        token_dropout: probability that one image's tokens are all replaced by zeros (0 = off).
        loss_weighting: "uniform" (every sampled noise level alike) or "truncated_snr" (needs "sample").
        loss_weight_cap: the largest "truncated_snr" weight (inf: none; the eps loss at every noise level).
        sample_prediction_from: with "epsilon", the first training step (0 <= t < T) at which the U-Net
            predicts the clean image instead (None: eps at every step).
        token_gradient: "full", or "eps": the tokens' gradient from the clean-image steps of
            `sample_prediction_from` scaled to the eps loss's (needs `sample_prediction_from`).
    """

    def __init__(self, scheduler, prediction_type: str = "epsilon", loss_type: str = "l1",
                 timestep_sampling: str = "uniform", logsnr_mean: float = 0.0, logsnr_std: float = 1.0,
                 edge_loss_weight: float = 0.0, edge_weighting: float = 0.0, token_dropout: float = 0.0,
                 loss_weighting: str = "uniform", loss_weight_cap: float = math.inf,
                 sample_prediction_from: int | None = None, token_gradient: str = "full"):
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type {prediction_type!r}; expected one of {PREDICTION_TYPES}")
        if loss_type not in LOSS_TYPES:
            raise ValueError(f"loss_type {loss_type!r}; expected one of {LOSS_TYPES}")
        if timestep_sampling not in TIMESTEP_SAMPLINGS:
            raise ValueError(f"timestep_sampling {timestep_sampling!r}; expected one of {TIMESTEP_SAMPLINGS}")
        if not (math.isfinite(logsnr_mean) and math.isfinite(logsnr_std) and logsnr_std > 0):
            raise ValueError(f"logsnr_mean must be finite and logsnr_std > 0, got {logsnr_mean}, {logsnr_std}")
        if not (math.isfinite(edge_loss_weight) and edge_loss_weight >= 0):
            raise ValueError(f"edge_loss_weight must be >= 0, got {edge_loss_weight}")
        if not (math.isfinite(edge_weighting) and edge_weighting >= 0):
            raise ValueError(f"edge_weighting must be >= 0, got {edge_weighting}")
        if loss_weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss_weighting {loss_weighting!r}; expected one of {LOSS_WEIGHTINGS}")
        if loss_weighting == "truncated_snr" and prediction_type != "sample":
            raise ValueError("loss_weighting 'truncated_snr' weights a clean-image loss: it needs prediction_type 'sample'")
        if not loss_weight_cap >= 1:
            raise ValueError(f"loss_weight_cap must be >= 1 (inf: no cap), got {loss_weight_cap}")
        if not (math.isfinite(token_dropout) and 0 <= token_dropout < 1):
            raise ValueError(f"token_dropout must be in [0, 1), got {token_dropout}")
        if edge_loss_weight > 0 and prediction_type == "epsilon":
            raise ValueError("edge_loss_weight > 0 needs prediction_type 'sample' or 'v_prediction': the clean image "
                             "implied by an eps prediction divides by sqrt(alpha_bar), which vanishes at high noise")
        num_train = len(scheduler.alphas_cumprod)
        if sample_prediction_from is not None:
            if isinstance(sample_prediction_from, bool) or not isinstance(sample_prediction_from, int) \
                    or not 0 <= sample_prediction_from < num_train:
                raise ValueError(f"sample_prediction_from must be a training step in [0, {num_train}) or None, "
                                 f"got {sample_prediction_from!r}")
            if prediction_type != "epsilon":
                raise ValueError("sample_prediction_from switches an eps-predicting U-Net to the clean image at high "
                                 f"noise: it needs prediction_type 'epsilon', got {prediction_type!r}")
        if token_gradient not in TOKEN_GRADIENTS:
            raise ValueError(f"token_gradient {token_gradient!r}; expected one of {TOKEN_GRADIENTS}")
        if token_gradient == "eps" and sample_prediction_from is None:
            raise ValueError("token_gradient 'eps' scales the gradient of the clean-image steps: it needs sample_prediction_from")
        self.sample_prediction_from, self.token_gradient = sample_prediction_from, token_gradient
        self.scheduler = scheduler
        self.prediction_type, self.loss_type = prediction_type, loss_type
        self.timestep_sampling, self.logsnr_mean, self.logsnr_std = timestep_sampling, logsnr_mean, logsnr_std
        self.edge_loss_weight, self.edge_weighting, self.token_dropout = edge_loss_weight, edge_weighting, token_dropout
        self.loss_weighting, self.loss_weight_cap = loss_weighting, loss_weight_cap
        alphas_cumprod = scheduler.alphas_cumprod.double()
        self._logsnr = torch.log(alphas_cumprod / (1 - alphas_cumprod)).float()  # decreasing in t
        self._alphas_cumprod = alphas_cumprod.float()

    @property
    def num_train_timesteps(self) -> int:
        return len(self._alphas_cumprod)

    def sample_timesteps(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """Training steps (long, CPU) for one batch, drawn with `generator`."""
        if self.timestep_sampling == "uniform":
            return torch.randint(0, self.num_train_timesteps, (batch_size,), generator=generator)
        logsnr = self.logsnr_mean + self.logsnr_std * torch.randn(batch_size, generator=generator)
        # nearest step: logsnr is decreasing in t, so search its negation (increasing)
        index = torch.searchsorted(-self._logsnr, -logsnr).clamp(1, self.num_train_timesteps - 1)
        below, above = self._logsnr[index - 1], self._logsnr[index]
        nearer_below = (below - logsnr).abs() < (logsnr - above).abs()
        return torch.where(nearer_below, index - 1, index).long()

    def noise(self, clean: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(noisy x_t, timesteps, noise) for a batch of clean images; all randomness from `generator`."""
        # drawn on the CPU (resumable: a pure function of the generator); non-blocking copies: no host sync on CUDA
        noise = torch.randn(clean.shape, generator=generator).to(clean.device, clean.dtype, non_blocking=True)
        timesteps = self.sample_timesteps(clean.shape[0], generator).to(clean.device, non_blocking=True)
        return self.scheduler.add_noise(clean, noise, timesteps), timesteps, noise

    def drop_tokens(self, tokens: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """`tokens` (B, N, d) with each image's tokens zeroed with probability `token_dropout` (the
        draw comes from `generator`, on the CPU; with 0 the tokens themselves and no draw)."""
        if self.token_dropout == 0:
            return tokens
        keep = torch.rand(tokens.shape[0], generator=generator) >= self.token_dropout
        return tokens * keep.to(tokens.device, tokens.dtype, non_blocking=True).view(-1, 1, 1)

    def _coefficients(self, timesteps: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = self._alphas_cumprod.to(like.device)[timesteps].to(like.dtype).view(-1, *([1] * (like.ndim - 1)))
        return a.sqrt(), (1 - a).sqrt()

    def predicts_sample(self, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor | None:
        """(B, 1, 1, 1) bool: the images whose U-Net output is the clean image under
        `sample_prediction_from` (None when it is off)."""
        if self.sample_prediction_from is None:
            return None
        return (timesteps >= self.sample_prediction_from).to(like.device).view(-1, *([1] * (like.ndim - 1)))

    def condition_gradients(self, tokens: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """`tokens` (B, N, d), unchanged forward; with `token_gradient` "eps" their gradient from the
        clean-image steps is scaled by the eps loss's weight of a clean-image error there (sqrt(SNR)
        for L1, SNR for L2), so the encoder learns what the eps loss would teach it."""
        if self.token_gradient != "eps":
            return tokens
        weight = self._eps_loss_weights(timesteps, tokens)
        return _ScaleGradient.apply(tokens, torch.where(self.predicts_sample(timesteps, tokens), weight, 1.0))

    def target(self, clean: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the U-Net should output."""
        if self.prediction_type == "epsilon":
            sample = self.predicts_sample(timesteps, clean)
            return noise if sample is None else torch.where(sample, clean, noise)
        if self.prediction_type == "sample":
            return clean
        sqrt_a, sqrt_one_minus_a = self._coefficients(timesteps, clean)
        return sqrt_a * noise - sqrt_one_minus_a * clean

    def predicted_clean(self, prediction: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The clean image implied by a prediction of x_t."""
        if self.prediction_type == "sample":
            return prediction
        sqrt_a, sqrt_one_minus_a = self._coefficients(timesteps, noisy)
        if self.prediction_type == "v_prediction":
            return sqrt_a * noisy - sqrt_one_minus_a * prediction
        implied = (noisy - sqrt_one_minus_a * prediction) / sqrt_a
        sample = self.predicts_sample(timesteps, noisy)
        return implied if sample is None else torch.where(sample, prediction, implied)

    def snr_weights(self, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(B, 1, 1, 1) weights of "truncated_snr": max(1, SNR), its square root for L1 (an x0 error
        times sqrt(SNR) is the eps error), at most `loss_weight_cap`."""
        return self._eps_loss_weights(timesteps, like).clamp(1.0, self.loss_weight_cap)

    def _eps_loss_weights(self, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(B, 1, ...) shaped like `like`: what the eps loss pays for a clean-image error at each image's
        noise level relative to the x0 loss, sqrt(SNR) for L1 and SNR for L2."""
        snr = torch.exp(self._logsnr.to(like.device)[timesteps])
        weights = snr.sqrt() if self.loss_type == "l1" else snr
        return weights.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))

    def pixel_weights(self, clean: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) loss weights of `edge_weighting`: `1 + edge_weighting * e / mean(e)` with `e` the
        mean over channels of the |finite differences| around each pixel, normalised to mean 1 per image."""
        dx, dy = (d.abs().mean(dim=1, keepdim=True) for d in finite_differences(clean))
        edges = F.pad(dx, (0, 1)) + F.pad(dx, (1, 0)) + F.pad(dy, (0, 0, 0, 1)) + F.pad(dy, (0, 0, 1, 0))
        weights = 1 + self.edge_weighting * edges / edges.mean(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
        return weights / weights.mean(dim=(1, 2, 3), keepdim=True)

    def distance(self, prediction: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """`loss_type` distance (float32): absolute error for "l1", squared for "l2", averaged
        (`reduction="mean"`) or per element (`"none"`). Also the whole loss of the deterministic
        decoder (its target is the clean image)."""
        distance = F.l1_loss if self.loss_type == "l1" else F.mse_loss
        return distance(prediction.float(), target.float(), reduction=reduction)

    def loss(self, clean: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor,
             prediction: torch.Tensor) -> torch.Tensor:
        """Mean loss of one batch (float32): the target loss plus the weighted edge loss."""
        prediction, clean = prediction.float(), clean.float()
        target = self.target(clean, noise.float(), timesteps)
        if self.edge_weighting > 0 or self.loss_weighting != "uniform":
            loss = self.distance(prediction, target, reduction="none")
            if self.edge_weighting > 0:
                loss = loss * self.pixel_weights(clean)
            if self.loss_weighting == "truncated_snr":
                loss = loss * self.snr_weights(timesteps, loss)
            loss = loss.mean()
        else:
            loss = self.distance(prediction, target)
        if self.edge_loss_weight > 0:
            implied = self.predicted_clean(prediction, noisy.float(), timesteps)
            edges = zip(finite_differences(implied), finite_differences(clean))
            loss = loss + self.edge_loss_weight * sum(F.l1_loss(p, t) for p, t in edges) / 2
        return loss
