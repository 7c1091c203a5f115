"""EncDiffPipeline sampling against known answers computed by hand in the test.

DDIM is written out here from its definition (Song et al. 2021, eq. 12 and 16) on the paper's
schedule (scaled_linear betas 0.0015..0.0155, T=1000), the U-Net is called by the test itself at
the timesteps it expects, and the first stage decodes `latents / latent_scale`. The pipeline must
give the same numbers, element by element.
"""
import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, VQModel

from encdiff_pipeline import ConceptEncoderModel, EncDiffPipeline
from encdiff_pipeline.models import aggregate_attention_maps, capture_cross_attention, unet_from_preset

N, D, STEPS = 3, 8, 2


def make_pipeline(vae_type=None, latent_scale=1.0, seed=0):
    """8x8 pixel space, or (vae_type) 16x16 images over a tiny VQModel / AutoencoderKL with 8x8x3 latents."""
    torch.manual_seed(seed)
    size = 8 if vae_type is None else 16
    encoder = ConceptEncoderModel(sample_size=size, num_concepts=N, token_dim=D, width=8, mlp_hidden_dims=(8, 8))
    unet = unet_from_preset("tiny", sample_size=8, cross_attention_dim=D)
    blocks = dict(in_channels=3, out_channels=3, latent_channels=3, block_out_channels=(8, 8), layers_per_block=1,
                  norm_num_groups=4, sample_size=16, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2)
    vae = {None: lambda: None,
           "vq": lambda: VQModel(vq_embed_dim=3, num_vq_embeddings=16, **blocks),
           "kl": lambda: AutoencoderKL(**blocks)}[vae_type]()
    pipe = EncDiffPipeline(encoder=encoder, unet=unet, vae=vae, latent_scale=latent_scale)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.encoder, pipe.unet, pipe.vae):
        if module is not None:
            module.eval()
    return pipe


def images(batch=2, size=8, seed=1):
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def alphas_cumprod():
    """The paper's schedule, float32 like the scheduler's tables."""
    betas = np.linspace(0.0015**0.5, 0.0155**0.5, 1000, dtype=np.float64) ** 2
    return torch.from_numpy(np.cumprod(1.0 - betas)).float()


def ddim_by_hand(unet, tokens, noise, steps, eta=0.0, generator=None):
    """DDIM (eq. 12, with sigma_t(eta) of eq. 16) from `noise`; `generator` draws the step noise after
    the initial noise, as the pipeline's scheduler does. Also returns the timesteps it used."""
    acp = alphas_cumprod()
    ratio = 1000 // steps
    timesteps = [ratio * i for i in reversed(range(steps))]  # "leading" spacing: 500, 0 for 2 steps
    x = noise.clone()
    for t in timesteps:
        with torch.no_grad():
            eps = unet(x, torch.tensor(t), encoder_hidden_states=tokens).sample
        a_t = acp[t]
        a_prev = acp[t - ratio] if t - ratio >= 0 else torch.tensor(1.0)
        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        sigma = eta * ((1 - a_prev) / (1 - a_t)).sqrt() * (1 - a_t / a_prev).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).sqrt() * eps
        if eta > 0:
            x = x + sigma * torch.randn(x.shape, generator=generator)
    return x, timesteps


def to_unit(pixels):
    return (pixels / 2 + 0.5).clamp(0, 1)


def test_ddim_steps_match_a_hand_computation_at_the_right_timesteps():
    pipe = make_pipeline()
    x = images()
    with torch.no_grad():
        tokens = pipe.encoder(x).tokens
    generator = torch.Generator().manual_seed(7)
    noise = torch.randn(2, 3, 8, 8, generator=generator)
    expected, timesteps = ddim_by_hand(pipe.unet, tokens, noise, STEPS)
    out = pipe(images=x, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(7), output_type="pt").images
    assert pipe.scheduler.timesteps.tolist() == timesteps == [500, 0]
    inside = (to_unit(expected) > 0) & (to_unit(expected) < 1)
    assert inside.float().mean() > 0.3  # most values are not clamped away by the [0, 1] postprocessing
    torch.testing.assert_close(out, to_unit(expected), rtol=0, atol=1e-5)
    # the unclamped samples too
    raw = pipe._sample(tokens, STEPS, torch.Generator().manual_seed(7), 0.0)
    torch.testing.assert_close(raw, expected, rtol=1e-5, atol=1e-5)


def test_eta_one_adds_the_ddim_variance_term():
    pipe = make_pipeline()
    concepts = pipe.encode(images())
    with torch.no_grad():
        tokens = pipe.encoder.concepts_to_tokens(concepts)
    run = lambda eta: pipe(concepts=concepts, num_inference_steps=STEPS, eta=eta,
                           generator=torch.Generator().manual_seed(3), output_type="pt").images
    deterministic, stochastic = run(0.0), run(1.0)
    assert (deterministic - stochastic).abs().max() > 1e-2  # same generator, different eta: different samples
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(2, 3, 8, 8, generator=generator)
    expected, _ = ddim_by_hand(pipe.unet, tokens, noise, STEPS, eta=1.0, generator=generator)
    torch.testing.assert_close(stochastic, to_unit(expected), rtol=0, atol=1e-5)
    expected_eta0, _ = ddim_by_hand(pipe.unet, tokens, noise, STEPS)
    torch.testing.assert_close(deterministic, to_unit(expected_eta0), rtol=0, atol=1e-5)


@pytest.mark.parametrize("vae_type", ["vq", "kl"])
def test_latents_are_decoded_divided_by_latent_scale(vae_type):
    pipe = make_pipeline(vae_type, latent_scale=0.25)
    x = images(size=16)
    concepts = pipe.encode(x)
    with torch.no_grad():
        tokens = pipe.encoder.concepts_to_tokens(concepts)
        noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
        latents, _ = ddim_by_hand(pipe.unet, tokens, noise, STEPS)
        expected = pipe.vae.decode(latents / 0.25).sample
        wrong = pipe.vae.decode(latents * 0.25).sample
    assert (expected - wrong).abs().max() > 1e-2  # the scale matters for this first stage
    out = pipe(concepts=concepts, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(5), output_type="pt")
    torch.testing.assert_close(out.images, to_unit(expected), rtol=0, atol=1e-5)
    # and encoding goes the other way: vae latents * latent_scale
    with torch.no_grad():
        encoded = pipe.vae.encode(x)
        raw = encoded.latents if vae_type == "vq" else encoded.latent_dist.mode()
        torch.testing.assert_close(pipe._latents_from_images(x), raw * 0.25, rtol=0, atol=0)


def test_attention_maps_are_taken_on_the_image_noised_to_t():
    pipe = make_pipeline()
    x = images(batch=3)
    acp = alphas_cumprod()
    with torch.no_grad():
        tokens = pipe.encoder(x).tokens
    maps = {}
    for t in (100, 900):
        generator = torch.Generator().manual_seed(11)
        noise = torch.randn(x.shape, generator=generator)
        noisy = acp[t].sqrt() * x + (1 - acp[t]).sqrt() * noise
        with torch.no_grad(), capture_cross_attention(pipe.unet) as store:
            pipe.unet(noisy, torch.full((3,), t), encoder_hidden_states=tokens)
        expected = aggregate_attention_maps(store, (8, 8))
        maps[t] = pipe.attention_maps(x, timestep=t, generator=torch.Generator().manual_seed(11))
        assert maps[t].shape == (3, N, 8, 8)
        torch.testing.assert_close(maps[t], expected, rtol=1e-5, atol=1e-6)
    assert (maps[100] - maps[900]).abs().max() > 1e-3  # the timestep matters, so the check above can fail
    # a list of timesteps averages the per-timestep maps (one noise draw per timestep, in order)
    generator = torch.Generator().manual_seed(11)
    both = pipe.attention_maps(x, timestep=[100, 900], generator=generator)
    first = pipe.attention_maps(x, timestep=100, generator=torch.Generator().manual_seed(11))
    assert both.shape == first.shape and not torch.allclose(both, first)


def test_swap_grid_element_by_element():
    pipe = make_pipeline()
    x = images(batch=3)
    concepts = pipe.encode(x)
    out = pipe.swap(x, concept_indices=[2, 0], source=1, num_inference_steps=STEPS,
                    generator=torch.Generator().manual_seed(2), output_type="pt")
    assert out.concept_indices == [2, 0] and out.concepts.shape == (2, 3, N) and out.images.shape == (2, 3, 3, 8, 8)
    for row, index in enumerate([2, 0]):
        for b in range(3):
            for i in range(N):
                expected = concepts[1, i] if i == index else concepts[b, i]
                assert out.concepts[row, b, i] == expected, (row, b, i)
    assert not torch.equal(out.concepts[0], concepts.expand(2, -1, -1)[0])  # something was swapped
    # the images are generated from exactly those concepts, all rows in one batch
    flat = pipe(concepts=out.concepts.flatten(0, 1), num_inference_steps=STEPS,
                generator=torch.Generator().manual_seed(2), output_type="pt").images
    torch.testing.assert_close(out.images, flat.view(2, 3, 3, 8, 8), rtol=0, atol=0)


def test_traverse_row_shares_one_noise_and_sets_the_values():
    pipe = make_pipeline()
    x = images(batch=1)
    concepts = pipe.encode(x)
    values = [-1.0, 0.5, 2.0]
    out = pipe.traverse(x, concept_index=1, values=values, num_inference_steps=STEPS,
                        generator=torch.Generator().manual_seed(4), output_type="pt")
    expected_concepts = concepts.repeat(3, 1)
    expected_concepts[:, 1] = torch.tensor(values)
    torch.testing.assert_close(out.concepts, expected_concepts, rtol=0, atol=0)
    noise = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(4)).expand(3, -1, -1, -1)
    with torch.no_grad():
        tokens = pipe.encoder.concepts_to_tokens(expected_concepts)
    expected, _ = ddim_by_hand(pipe.unet, tokens, noise, STEPS)
    torch.testing.assert_close(out.images, to_unit(expected), rtol=0, atol=1e-5)
    # default values: the image's own value +- 2, evenly spaced
    default = pipe.traverse(x, concept_index=0, num_values=5, num_inference_steps=1, output_type="pt")
    torch.testing.assert_close(default.concept_values, concepts[0, 0] + torch.linspace(-2, 2, 5), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- guidance, starting noise, inversion
def test_guidance_scale_mixes_the_empty_and_the_token_prediction_by_hand():
    """eps = eps(0 tokens) + w (eps(tokens) - eps(0 tokens)) at every step, checked with DDIM written out."""
    pipe, x = make_pipeline(), images()
    tokens = pipe.encoder(x).tokens
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))

    class Guided(torch.nn.Module):  # what the pipeline must compute, as a U-Net the hand-written DDIM can call
        config = pipe.unet.config

        def forward(self, sample, t, encoder_hidden_states):
            empty = pipe.unet(sample, t, encoder_hidden_states=torch.zeros_like(encoder_hidden_states)).sample
            cond = pipe.unet(sample, t, encoder_hidden_states=encoder_hidden_states).sample
            return type("Out", (), {"sample": empty + 2.5 * (cond - empty)})

    expected = ddim_by_hand(Guided(), tokens, noise, STEPS)[0]
    got = pipe(images=x, latents=noise, num_inference_steps=STEPS, guidance_scale=2.5, output_type="pt").images
    assert torch.allclose(got, to_unit(expected), atol=1e-5)
    # guidance 0 is the empty condition alone; 1 is no guidance (one U-Net call per step)
    pipe.encoder.concepts_to_tokens = lambda c, check_inputs=True: torch.zeros(c.shape[0], N, D)
    empty = pipe(images=x, latents=noise, num_inference_steps=STEPS, output_type="pt").images
    del pipe.encoder.concepts_to_tokens
    assert torch.allclose(pipe(images=x, latents=noise, num_inference_steps=STEPS, guidance_scale=0.0,
                               output_type="pt").images, empty, atol=1e-6)
    plain = ddim_by_hand(pipe.unet, tokens, noise, STEPS)[0]
    assert torch.allclose(pipe(images=x, latents=noise, num_inference_steps=STEPS, output_type="pt").images,
                          to_unit(plain), atol=1e-5)


def test_config_guidance_scale_is_the_default_and_survives_a_save(tmp_path):
    pipe, x = make_pipeline(), images()
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    guided = pipe(images=x, latents=noise, num_inference_steps=STEPS, guidance_scale=3.0, output_type="pt").images
    pipe.register_to_config(guidance_scale=3.0)
    pipe.save_pretrained(tmp_path / "p")
    loaded = EncDiffPipeline.from_pretrained(tmp_path / "p")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.guidance_scale == 3.0
    assert torch.allclose(loaded(images=x, latents=noise, num_inference_steps=STEPS, output_type="pt").images, guided, atol=1e-6)
    for bad in (-1.0, float("nan"), "2", True):
        with pytest.raises(ValueError, match="guidance_scale"):
            pipe(images=x, num_inference_steps=STEPS, guidance_scale=bad)
        with pytest.raises(ValueError, match="guidance_scale"):
            EncDiffPipeline(encoder=pipe.encoder, unet=pipe.unet, guidance_scale=bad)


def test_latents_are_the_starting_noise_of_call_swap_and_traverse():
    pipe, x = make_pipeline(), images()
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    tokens = pipe.encoder(x).tokens
    expected = to_unit(ddim_by_hand(pipe.unet, tokens, noise, STEPS)[0])
    got = pipe(images=x, latents=noise, num_inference_steps=STEPS, output_type="pt").images
    assert torch.allclose(got, expected, atol=1e-5)
    # swap with the image's own noise: the row of a concept swapped in from the image itself is the reconstruction
    rows = pipe.swap(x, concept_indices=[0, 1], source=0, latents=noise, num_inference_steps=STEPS, output_type="pt").images
    assert torch.allclose(rows[0, 0], expected[0], atol=1e-5) and torch.allclose(rows[1, 0], expected[0], atol=1e-5)
    value = pipe.encode(x[:1])[0, 2].item()
    row = pipe.traverse(x[:1], concept_index=2, values=[value], latents=noise[:1], num_inference_steps=STEPS,
                        output_type="pt").images
    assert torch.allclose(row[0], expected[0], atol=1e-5)
    with pytest.raises(ValueError, match=r"latents must be a tensor of shape \(2, 3, 8, 8\)"):
        pipe(images=x, latents=noise[:1], num_inference_steps=STEPS)
    with pytest.raises(ValueError, match="NaN"):
        pipe(images=x, latents=noise * float("nan"), num_inference_steps=STEPS)


def test_invert_runs_deterministic_ddim_backwards():
    """With a U-Net that predicts zero noise, DDIM from x_T returns x_T / sqrt(alpha_bar(first timestep)):
    inversion must give x * sqrt(alpha_bar(first timestep)), and DDIM from there x exactly."""
    pipe, x = make_pipeline(), images()
    with torch.no_grad():
        for p in pipe.unet.conv_out.parameters():
            p.zero_()
    first = int(pipe.scheduler.config.num_train_timesteps // STEPS * (STEPS - 1))
    noise = pipe.invert(x, num_inference_steps=STEPS)
    assert torch.allclose(noise, x * alphas_cumprod()[first].sqrt(), atol=1e-5)
    recon = pipe(images=x, latents=noise, num_inference_steps=STEPS, output_type="pt").images * 2 - 1
    assert torch.allclose(recon, x, atol=1e-5)


@pytest.mark.parametrize("prediction_type", ["sample", "v_prediction"])
def test_invert_of_clean_image_and_v_predictions_is_finite(prediction_type):
    """At alpha_bar = 1 these predictions imply no noise (0 / 0): inversion starts at alpha_bar(0) instead."""
    from diffusers import DDIMScheduler

    pipe, x = make_pipeline(), images()
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type=prediction_type)
    noise = pipe.invert(x, num_inference_steps=STEPS)
    assert noise.shape == x.shape and torch.isfinite(noise).all()


def test_sample_prediction_from_reads_the_unet_as_the_clean_image_above_the_threshold(tmp_path):
    """With `sample_prediction_from` 300 and 2 DDIM steps (t = 500, 0), the U-Net's output at t = 500 is
    the clean image (its eps is implied from x_t) and at t = 0 the noise, checked with DDIM by hand."""
    pipe, x = make_pipeline(), images()
    tokens = pipe.encoder(x).tokens
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    acp = alphas_cumprod()
    sample = noise.clone()
    for t, t_prev in ((500, 0), (0, None)):
        with torch.no_grad():
            out = pipe.unet(sample, torch.tensor(t), encoder_hidden_states=tokens).sample
        a_t = acp[t]
        if t >= 300:
            x0, eps = out, (sample - a_t.sqrt() * out) / (1 - a_t).sqrt()
        else:
            x0, eps = (sample - (1 - a_t).sqrt() * out) / a_t.sqrt(), out
        a_prev = acp[t_prev] if t_prev is not None else torch.tensor(1.0)
        sample = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    hybrid = EncDiffPipeline(encoder=pipe.encoder, unet=pipe.unet, scheduler=pipe.scheduler, sample_prediction_from=300)
    hybrid.set_progress_bar_config(disable=True)
    got = hybrid(images=x, latents=noise, num_inference_steps=STEPS, output_type="pt").images
    assert torch.allclose(got, to_unit(sample), atol=1e-5)
    plain = pipe(images=x, latents=noise, num_inference_steps=STEPS, output_type="pt").images
    assert (plain - got).abs().max() > 1e-2  # the switch changes the result
    hybrid.save_pretrained(tmp_path / "p")
    loaded = EncDiffPipeline.from_pretrained(tmp_path / "p")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.sample_prediction_from == 300
    assert torch.allclose(loaded(images=x, latents=noise, num_inference_steps=STEPS, output_type="pt").images, got, atol=1e-6)
    for bad in (-1, 1000, 2.5, True, "700"):
        with pytest.raises(ValueError, match="sample_prediction_from"):
            EncDiffPipeline(encoder=pipe.encoder, unet=pipe.unet, sample_prediction_from=bad)


def test_sample_prediction_from_converts_to_the_scheduler_prediction_type():
    """An oracle U-Net that knows the clean image C returns C above the threshold and, below it, what
    the scheduler's prediction type implies for C (eps or v): DDIM must then generate C exactly, with an
    eps or a v scheduler alike."""
    from diffusers import DDIMScheduler

    pipe, x = make_pipeline(), images()
    clean = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    acp = alphas_cumprod().double()
    unet = pipe.unet

    for kind in ("epsilon", "v_prediction"):
        def oracle(sample, t, encoder_hidden_states, kind=kind):
            a = acp[int(t)]
            eps = (sample.double() - a.sqrt() * clean.double()) / (1 - a).sqrt()
            out = clean.double() if int(t) >= 300 else eps if kind == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * clean
            return type("Out", (), {"sample": out.float()})

        scheduler = DDIMScheduler.from_config(pipe.scheduler.config, prediction_type=kind)
        hybrid = EncDiffPipeline(encoder=pipe.encoder, unet=unet, scheduler=scheduler, sample_prediction_from=300)
        hybrid.set_progress_bar_config(disable=True)
        unet.forward = oracle
        try:
            noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
            got = hybrid(images=x, latents=noise, num_inference_steps=4, output_type="pt").images
        finally:
            del unet.forward
        assert torch.allclose(got, to_unit(clean), atol=1e-5), kind
