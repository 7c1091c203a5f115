"""The four noise schedules EncDiff ablates, as diffusers `DDPMScheduler`s.

Names follow the release (latent-diffusion's `make_beta_schedule`), with beta_start=0.0015 and
beta_end=0.0155 over T=1000 steps:

| name          | betas                                   | diffusers                              |
|---------------|-----------------------------------------|----------------------------------------|
| `linear`      | linspace(sqrt(b0), sqrt(b1))**2 (default)| `beta_schedule="scaled_linear"`        |
| `sqrt_linear` | linspace(b0, b1)                        | `beta_schedule="linear"`               |
| `sqrt`        | linspace(b0, b1)**0.5                   | `trained_betas=` (an explicit array)   |
| `cosine`      | Nichol & Dhariwal, s=0.008, max 0.999   | `beta_schedule="squaredcos_cap_v2"`    |

Note that the release's "linear" is diffusers' "scaled_linear", and its "sqrt_linear" diffusers'
"linear".

Example:
    >>> scheduler = make_noise_scheduler("cosine")
    >>> scheduler.config.beta_schedule
    'squaredcos_cap_v2'
    >>> DDIMScheduler(**schedule_config("linear"))  # the pipeline's default sampler  # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np
from diffusers import DDPMScheduler

NOISE_SCHEDULES = ("linear", "sqrt_linear", "sqrt", "cosine")


RELEASE_BETA_START, RELEASE_BETA_END, RELEASE_TIMESTEPS = 0.0015, 0.0155, 1000


def schedule_config(
    name: str = "linear", beta_start: float = RELEASE_BETA_START, beta_end: float = RELEASE_BETA_END,
    num_train_timesteps: int = RELEASE_TIMESTEPS,
) -> dict:
    """The diffusers scheduler keyword arguments (eps prediction) of one of the release's named schedules."""
    common = dict(num_train_timesteps=num_train_timesteps, prediction_type="epsilon", clip_sample=False)
    if name == "linear":
        return dict(beta_schedule="scaled_linear", beta_start=beta_start, beta_end=beta_end, **common)
    if name == "sqrt_linear":
        return dict(beta_schedule="linear", beta_start=beta_start, beta_end=beta_end, **common)
    if name == "sqrt":
        betas = np.linspace(beta_start, beta_end, num_train_timesteps, dtype=np.float64) ** 0.5
        return dict(trained_betas=betas.tolist(), beta_start=beta_start, beta_end=beta_end, **common)
    if name == "cosine":
        return dict(beta_schedule="squaredcos_cap_v2", **common)
    raise ValueError(f"unknown noise schedule {name!r}; expected one of {NOISE_SCHEDULES}")


def make_noise_scheduler(
    name: str = "linear", beta_start: float = RELEASE_BETA_START, beta_end: float = RELEASE_BETA_END,
    num_train_timesteps: int = RELEASE_TIMESTEPS,
) -> DDPMScheduler:
    """A `DDPMScheduler` (eps prediction) with one of the release's named schedules."""
    return DDPMScheduler(**schedule_config(name, beta_start, beta_end, num_train_timesteps))


def check_noise_schedule(scheduler, where: str = "the scheduler") -> None:
    """ValueError (naming `where`) for a schedule diffusion cannot run on: no timesteps, or betas that
    are not finite, not in (0, 1) (alphas would be <= 0), or that shrink with t (an inverted schedule:
    the noise would fall as t grows). Schedulers without `betas` are only checked for their steps."""
    steps = scheduler.config.get("num_train_timesteps")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"{where}: num_train_timesteps must be an integer >= 1, got {steps!r}")
    betas = getattr(scheduler, "betas", None)
    if betas is None:
        return
    betas = np.asarray(betas, dtype=np.float64)
    if not np.isfinite(betas).all():
        raise ValueError(f"{where}: its betas hold NaN or infinite values")
    if betas.min() <= 0 or betas.max() >= 1:
        raise ValueError(f"{where}: its betas must lie in (0, 1) (beta_start, beta_end or trained_betas), got values in "
                         f"[{betas.min():.4g}, {betas.max():.4g}]")
    if len(betas) > 1 and (np.diff(betas) < -1e-12).any():
        raise ValueError(f"{where}: its betas decrease with t ({betas[0]:.4g} at t=0, {betas[-1]:.4g} at the end); a "
                         "noise schedule's betas must grow (is beta_start > beta_end?)")
