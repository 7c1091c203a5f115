"""The diffusion objective's levers (prediction type, noise-level sampling, edge loss) and Skip Dropout,
against values computed independently here."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from encdiff_pipeline.models import unet_from_preset
from encdiff_pipeline.noise_schedules import make_noise_scheduler
from encdiff_pipeline.training import DiffusionObjective, SkipDropout, finite_differences


@pytest.fixture(scope="module")
def scheduler():
    return DDPMScheduler(beta_schedule="squaredcos_cap_v2", clip_sample=False)


def _batch(seed=0, shape=(4, 3, 8, 8)):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) * 2 - 1, torch.randn(shape, generator=g), torch.tensor([0, 250, 600, 999])


@pytest.mark.parametrize("prediction_type", ["epsilon", "sample", "v_prediction"])
def test_target_and_implied_clean_image_invert_each_other(scheduler, prediction_type):
    clean, noise, t = _batch()
    objective = DiffusionObjective(scheduler, prediction_type)
    noisy = scheduler.add_noise(clean, noise, t)
    a = scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    expected = {"epsilon": noise, "sample": clean, "v_prediction": a.sqrt() * noise - (1 - a).sqrt() * clean}
    target = objective.target(clean, noise, t)
    torch.testing.assert_close(target, expected[prediction_type], rtol=0, atol=1e-6)
    if prediction_type == "v_prediction":  # diffusers' own definition of v
        torch.testing.assert_close(target, scheduler.get_velocity(clean, noise, t), rtol=0, atol=1e-6)
    recovered = objective.predicted_clean(target, noisy, t)
    keep = slice(0, 3) if prediction_type == "epsilon" else slice(None)  # eps -> x0 divides by ~0 at t=999
    torch.testing.assert_close(recovered[keep], clean[keep], rtol=0, atol=1e-4)


def test_uniform_sampling_is_the_paper_draw(scheduler):
    """Default: the same noise and timesteps as `randn` then `randint` on the step's generator."""
    clean = torch.zeros(6, 3, 4, 4)
    noisy, t, noise = DiffusionObjective(scheduler).noise(clean, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    expected_noise = torch.randn(clean.shape, generator=g)
    expected_t = torch.randint(0, 1000, (6,), generator=g)
    assert torch.equal(noise, expected_noise) and torch.equal(t, expected_t)
    torch.testing.assert_close(noisy, scheduler.add_noise(clean, expected_noise, expected_t))


def test_logsnr_normal_sampling_hits_the_requested_noise_levels(scheduler):
    objective = DiffusionObjective(scheduler, "sample", timestep_sampling="logsnr_normal", logsnr_mean=-1.5, logsnr_std=1.0)
    t = objective.sample_timesteps(20000, torch.Generator().manual_seed(0))
    a = scheduler.alphas_cumprod.double()[t]
    logsnr = torch.log(a / (1 - a)).numpy()
    assert abs(logsnr.mean() + 1.5) < 0.03 and abs(logsnr.std() - 1.0) < 0.03
    # nearest step: every drawn level lies within half a step's log-SNR gap of the one asked for
    assert t.min() > 0 and t.max() < 999
    uniform = DiffusionObjective(scheduler).sample_timesteps(20000, torch.Generator().manual_seed(0))
    assert abs(uniform.float().mean().item() - 499.5) < 6


def test_edge_loss_is_the_l1_of_neighbour_differences(scheduler):
    clean, noise, t = _batch(1)
    noisy = scheduler.add_noise(clean, noise, t)
    prediction = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))
    plain = DiffusionObjective(scheduler, "sample").loss(clean, noisy, t, noise, prediction)
    edged = DiffusionObjective(scheduler, "sample", edge_loss_weight=2.0).loss(clean, noisy, t, noise, prediction)
    p, c = prediction.numpy(), clean.numpy()
    by_hand = np.mean(np.abs(np.diff(p, axis=3) - np.diff(c, axis=3))) + np.mean(np.abs(np.diff(p, axis=2) - np.diff(c, axis=2)))
    assert abs(plain.item() - np.mean(np.abs(p - c))) < 1e-6
    assert abs(edged.item() - plain.item() - 2.0 * by_hand / 2) < 1e-5
    dx, dy = finite_differences(clean)
    assert dx.shape == (4, 3, 8, 7) and dy.shape == (4, 3, 7, 8)
    # a perfect prediction costs nothing under every prediction type
    for kind in ("sample", "v_prediction"):
        objective = DiffusionObjective(scheduler, kind, edge_loss_weight=1.0)
        assert objective.loss(clean, noisy, t, noise, objective.target(clean, noise, t)).item() < 1e-5


def test_edge_weighting_weighs_each_pixel_by_its_edges(scheduler):
    clean = -torch.ones(1, 3, 4, 4)
    clean[:, :, :, 2:] = 1.0  # one vertical edge between columns 1 and 2 (difference 2 in every channel)
    objective = DiffusionObjective(scheduler, edge_weighting=3.0)
    weights = objective.pixel_weights(clean)
    # edge magnitude: 2 on columns 1 and 2, 0 elsewhere; mean 1 -> weights 1 + 3 * e = 7 / 1, normalised to mean 1
    expected = torch.tensor([1.0, 7.0, 7.0, 1.0]).expand(4, 4) / 4.0
    torch.testing.assert_close(weights[0, 0], expected, rtol=0, atol=1e-6)
    noise, t = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(0)), torch.tensor([100])
    noisy = scheduler.add_noise(clean, noise, t)
    prediction = torch.zeros_like(clean)
    by_hand = (noise.abs() * expected).mean()  # eps target, L1 per element, weighted per pixel
    assert abs(objective.loss(clean, noisy, t, noise, prediction).item() - by_hand.item()) < 1e-6
    # off (the default), the loss is the plain mean, bit for bit
    plain = DiffusionObjective(scheduler).loss(clean, noisy, t, noise, prediction)
    assert plain.item() == torch.nn.functional.l1_loss(prediction, noise).item()
    # a flat image (no edges) is weighted uniformly
    torch.testing.assert_close(objective.pixel_weights(torch.zeros(2, 3, 4, 4)), torch.ones(2, 1, 4, 4))


@pytest.mark.parametrize("kwargs, message", [
    ({"prediction_type": "x"}, "prediction_type"),
    ({"edge_weighting": -0.5}, "edge_weighting"),
    ({"timestep_sampling": "beta"}, "timestep_sampling"),
    ({"logsnr_std": 0.0}, "logsnr_std"),
    ({"logsnr_mean": float("nan")}, "logsnr_mean"),
    ({"edge_loss_weight": -1.0, "prediction_type": "sample"}, "edge_loss_weight"),
    ({"edge_loss_weight": 1.0}, "needs prediction_type"),
])
def test_bad_objective_settings_are_refused(scheduler, kwargs, message):
    with pytest.raises(ValueError, match=message):
        DiffusionObjective(scheduler, **kwargs)


def test_skip_dropout_drops_only_skip_channels_in_training():
    torch.manual_seed(0)
    unet = unet_from_preset("tiny", cross_attention_dim=8)
    x, t, tokens = torch.randn(2, 3, 8, 8), torch.tensor([10, 500]), torch.randn(2, 4, 8)
    unet.train()
    with torch.no_grad():
        plain = unet(x, t, encoder_hidden_states=tokens).sample
        unet.eval()
        plain_eval = unet(x, t, encoder_hidden_states=tokens).sample
        unet.train()
        seen = []
        probe = unet.up_blocks[0].register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs["res_hidden_states_tuple"]),
                                                           with_kwargs=True)
        skip = SkipDropout(unet, p=0.5)
        skip.generator = torch.Generator().manual_seed(1)
        dropped = unet(x, t, encoder_hidden_states=tokens).sample
        skip.generator = torch.Generator().manual_seed(1)
        again = unet(x, t, encoder_hidden_states=tokens).sample
        assert not torch.allclose(plain, dropped) and torch.equal(dropped, again)  # masks come from the generator
        # each skip tensor: whole channels zeroed, the rest scaled by 1 / (1 - p)
        for residual in seen[0]:
            per_channel = residual.abs().amax(dim=(2, 3))
            assert (per_channel == 0).any() and (per_channel > 0).any()
        unet.eval()  # inference never drops
        assert torch.equal(unet(x, t, encoder_hidden_states=tokens).sample, plain_eval)
        unet.train()
        skip.remove()
        probe.remove()
        torch.testing.assert_close(unet(x, t, encoder_hidden_states=tokens).sample, plain, rtol=0, atol=0)
    with pytest.raises(ValueError, match="skip dropout"):
        SkipDropout(unet, p=1.0)


def test_truncated_snr_weighting_is_the_eps_loss_at_low_noise_and_the_x0_loss_at_high_noise():
    scheduler = make_noise_scheduler("cosine")
    weighted = DiffusionObjective(scheduler, prediction_type="sample", loss_weighting="truncated_snr")
    eps_objective = DiffusionObjective(scheduler, prediction_type="epsilon")
    x0_objective = DiffusionObjective(scheduler, prediction_type="sample")
    g = torch.Generator().manual_seed(0)
    clean, noise = torch.rand(1, 3, 8, 8, generator=g) * 2 - 1, torch.randn(1, 3, 8, 8, generator=g)
    prediction = clean + 0.1 * torch.randn(1, 3, 8, 8, generator=g)
    for t, like in ((50, eps_objective), (300, eps_objective), (800, x0_objective), (990, x0_objective)):
        timesteps = torch.tensor([t])
        a = scheduler.alphas_cumprod[t]
        assert (a / (1 - a) >= 1) == (like is eps_objective)
        noisy = scheduler.add_noise(clean, noise, timesteps)
        implied_eps = (noisy - a.sqrt() * prediction) / (1 - a).sqrt()  # the eps the x0 prediction stands for
        expected = like.loss(clean, noisy, timesteps, noise, implied_eps if like is eps_objective else prediction)
        got = weighted.loss(clean, noisy, timesteps, noise, prediction)
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="needs prediction_type 'sample'"):
        DiffusionObjective(scheduler, loss_weighting="truncated_snr")
    with pytest.raises(ValueError, match="loss_weighting"):
        DiffusionObjective(scheduler, prediction_type="sample", loss_weighting="snr")


def test_sample_prediction_from_targets_the_clean_image_above_the_threshold(scheduler):
    clean, noise, t = _batch()  # t = 0, 250, 600, 999
    objective = DiffusionObjective(scheduler, "epsilon", sample_prediction_from=600)
    target = objective.target(clean, noise, t)
    torch.testing.assert_close(target[:2], noise[:2], rtol=0, atol=0)
    torch.testing.assert_close(target[2:], clean[2:], rtol=0, atol=0)
    noisy = scheduler.add_noise(clean, noise, t)
    torch.testing.assert_close(objective.predicted_clean(target, noisy, t), clean, rtol=0, atol=1e-4)
    # the loss is the eps loss below 600 and the clean-image loss from 600 on
    prediction = target + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    expected = (prediction - target).abs().mean()
    torch.testing.assert_close(objective.loss(clean, noisy, t, noise, prediction), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize("loss_type", ["l1", "l2"])
def test_eps_token_gradient_scales_the_clean_image_steps_to_the_eps_loss(scheduler, loss_type):
    """Forward unchanged; backward, the tokens' gradient of images at t >= threshold times sqrt(SNR)
    (L1) or SNR (L2), of the others times 1."""
    t = torch.tensor([0, 250, 600, 999])
    objective = DiffusionObjective(scheduler, "epsilon", loss_type, sample_prediction_from=600, token_gradient="eps")
    tokens = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = objective.condition_gradients(tokens, t)
    torch.testing.assert_close(out, tokens, rtol=0, atol=0)
    upstream = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(1))
    (out * upstream).sum().backward()
    a = scheduler.alphas_cumprod[t].double()
    snr = a / (1 - a)
    weight = snr.sqrt() if loss_type == "l1" else snr
    expected = torch.where(t >= 600, weight, torch.ones_like(weight)).float().view(-1, 1, 1) * upstream
    torch.testing.assert_close(tokens.grad, expected, rtol=1e-5, atol=0)
    assert tokens.grad[3].abs().max() < 1e-3 * upstream[3].abs().max()  # t = 999: the eps loss gives almost nothing
    # "full" (the default) leaves the gradient alone
    plain = DiffusionObjective(scheduler, "epsilon", sample_prediction_from=600)
    assert plain.condition_gradients(tokens, t) is tokens


@pytest.mark.parametrize("kwargs, message", [
    ({"sample_prediction_from": 1000}, "sample_prediction_from"),
    ({"sample_prediction_from": -1}, "sample_prediction_from"),
    ({"sample_prediction_from": 2.5}, "sample_prediction_from"),
    ({"sample_prediction_from": 700, "prediction_type": "sample"}, "needs prediction_type 'epsilon'"),
    ({"token_gradient": "eps"}, "needs sample_prediction_from"),
    ({"token_gradient": "half", "sample_prediction_from": 700}, "token_gradient"),
])
def test_bad_sample_prediction_settings_are_refused(scheduler, kwargs, message):
    with pytest.raises(ValueError, match=message):
        DiffusionObjective(scheduler, **kwargs)
