"""The VAE baselines: shapes, objectives, the TC estimator, FactorVAE's permutation, save/load."""
import math

import pytest
import torch

from encdiff_pipeline.baselines import (
    BASELINES,
    BetaTCVAEModel,
    BetaVAEModel,
    FactorVAEModel,
    gaussian_kl,
    load_baseline,
    permute_dims,
    reconstruction_loss,
    total_correlation,
)
from encdiff_pipeline.models.concept_encoder import ConceptEncoderModel

TINY = dict(sample_size=16, num_latents=4, width=8)


def tiny_images(num=8, size=16, seed=0):
    """Smooth random images in [-1, 1]: a coloured blob on a coloured background."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    centres = torch.rand(num, 2, generator=g) - 0.5
    mask = (((xx - centres[:, 0, None, None]) ** 2 + (yy - centres[:, 1, None, None]) ** 2) < 0.15).float()
    fg, bg = torch.rand(num, 3, 1, 1, generator=g), torch.rand(num, 3, 1, 1, generator=g)
    return (mask[:, None] * fg + (1 - mask[:, None]) * bg) * 2 - 1


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_shapes_and_representation_is_posterior_mean(name):
    torch.manual_seed(0)
    model = BASELINES[name](**TINY).eval()
    images = tiny_images(5)
    out = model(images)
    assert out.latent_mean.shape == out.latent_logvar.shape == out.latent_sample.shape == (5, 4)
    assert out.logits.shape == (5, 3, 16, 16)
    torch.testing.assert_close(model.encode(images), out.latent_mean)
    assert not torch.equal(out.latent_sample, out.latent_mean)  # sampled
    assert torch.equal(model(images, sample_posterior=False).latent_sample, out.latent_mean)


def test_trunk_is_the_concept_encoders():
    model = BetaVAEModel(sample_size=64, num_latents=10)  # width 128, the paper trunk
    encoder = ConceptEncoderModel(sample_size=64)
    trunk_shapes = [tuple(p.shape) for p in model.trunk.parameters()]
    assert trunk_shapes == [tuple(p.shape) for p in encoder.trunk.parameters()]
    assert model.posterior_head.in_features == encoder.concept_head.in_features == 2048
    assert model.posterior_head.out_features == 20  # 2N: mean and log-variance
    assert model(torch.zeros(2, 3, 64, 64)).logits.shape == (2, 3, 64, 64)


def test_loss_terms_have_reference_values():
    # Bernoulli likelihood with logits 0: ln 2 per pixel; KL of the prior to itself: 0.
    logits, target = torch.zeros(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    assert reconstruction_loss(logits, target).item() == pytest.approx(48 * math.log(2), rel=1e-6)
    assert reconstruction_loss(logits, torch.full_like(target, 0.5), "gaussian").item() == pytest.approx(0.0)
    assert gaussian_kl(torch.zeros(3, 5), torch.zeros(3, 5)).item() == 0.0
    # KL(N(1, e) || N(0, 1)) per dim = 0.5 * (1 + e - 1 - 1)
    assert gaussian_kl(torch.ones(1, 2), torch.ones(1, 2)).item() == pytest.approx(math.e - 1, rel=1e-6)
    with pytest.raises(ValueError, match="likelihood"):
        reconstruction_loss(logits, target, "poisson")


def test_objectives_combine_terms_as_published():
    images = tiny_images(6)
    for model, expected in [
        (BetaVAEModel(**TINY, beta=4.0), lambda o: o.reconstruction + 4.0 * o.kl),
        (BetaTCVAEModel(**TINY, beta=6.0), lambda o: o.reconstruction + o.kl + 5.0 * o.total_correlation),
        (FactorVAEModel(**TINY, gamma=10.0), lambda o: o.reconstruction + o.kl + 10.0 * o.total_correlation),
    ]:
        out = model.compute_loss(images, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(out.loss, expected(out))


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_loss_is_finite_and_decreases(name):
    torch.manual_seed(0)
    model = BASELINES[name](**TINY)
    images = tiny_images(8)
    # the Bernoulli NLL cannot go below the entropy of the target pixels: measure the excess over it
    target = (images + 1) / 2
    floor = reconstruction_loss(torch.logit(target.clamp(1e-6, 1 - 1e-6)), target).item()
    params = model.vae_parameters() if name == "factor_vae" else model.parameters()
    optimizer = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for step in range(30):
        out = model.compute_loss(images, generator=torch.Generator().manual_seed(step))
        assert torch.isfinite(out.loss)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.loss.item() - floor)
        assert out.reconstruction.item() > floor
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


def _gaussian_batch(rho, num=1024, posterior_std=0.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    chol = torch.linalg.cholesky(torch.tensor([[1.0, rho], [rho, 1.0]]))
    mean = torch.randn(num, 2, generator=g) @ chol.T
    logvar = torch.full((num, 2), 2 * math.log(posterior_std))
    z = mean + posterior_std * torch.randn(num, 2, generator=g)
    return z, mean, logvar


def test_total_correlation_is_zero_for_independent_and_positive_for_correlated_latents():
    assert total_correlation(*_gaussian_batch(0.0)).item() == pytest.approx(0.0, abs=0.03)
    # q(z) is close to N(0, Sigma + 0.25 I): TC = -1/2 log(1 - r^2), r = 0.9 / 1.25
    analytic = -0.5 * math.log(1 - (0.9 / 1.25) ** 2)
    tc = total_correlation(*_gaussian_batch(0.9)).item()
    assert tc == pytest.approx(analytic, abs=0.08)
    assert tc > 0.25
    # posteriors all equal to the prior: q(z) = prod_j q(z_j) exactly
    z = torch.randn(64, 5, generator=torch.Generator().manual_seed(1))
    assert total_correlation(z, torch.zeros(64, 5), torch.zeros(64, 5)).item() == pytest.approx(0.0, abs=1e-5)
    with pytest.raises(ValueError, match="batch, latents"):
        total_correlation(z, torch.zeros(64, 4), torch.zeros(64, 5))


def test_permute_dims_keeps_marginals_and_breaks_dependence():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 1, generator=g)
    z = torch.cat([x, x, -x, torch.arange(256.0)[:, None]], dim=1)  # fully dependent columns
    permuted = permute_dims(z, torch.Generator().manual_seed(1))
    for j in range(4):  # every column keeps exactly its values
        torch.testing.assert_close(permuted[:, j].sort().values, z[:, j].sort().values)
    assert abs(torch.corrcoef(permuted[:, :2].T)[0, 1]) < 0.2  # was 1
    assert not torch.equal(permuted[:, 0], permuted[:, 1])


def test_factor_vae_discriminator_is_trained_apart():
    torch.manual_seed(0)
    model = FactorVAEModel(**TINY, discriminator_hidden_dim=32, discriminator_layers=2)
    vae_names = {id(p) for p in model.vae_parameters()}
    assert not vae_names & {id(p) for p in model.discriminator.parameters()}
    assert len(vae_names) + len(list(model.discriminator.parameters())) == len(list(model.parameters()))
    # the discriminator learns to tell correlated latents from their permutation
    optimizer = torch.optim.Adam(model.discriminator.parameters(), lr=1e-2, betas=(0.5, 0.9))
    z = torch.randn(256, 1).repeat(1, 4)
    first = model.discriminator_loss(z, torch.Generator().manual_seed(0)).item()
    for step in range(60):
        optimizer.zero_grad()
        loss = model.discriminator_loss(z, torch.Generator().manual_seed(step))
        loss.backward()
        optimizer.step()
    assert first == pytest.approx(math.log(2), abs=0.1)
    assert loss.item() < 0.4
    # ... and its logit difference (the TC estimate) is then large on the joint samples
    logits = model.discriminator(z)
    assert (logits[:, 0] - logits[:, 1]).mean() > 1.0


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_save_load_round_trip(name, tmp_path):
    torch.manual_seed(0)
    model = BASELINES[name](**TINY, likelihood="gaussian")
    images = tiny_images(4)
    model.compute_loss(images)  # move the BatchNorm running statistics off their defaults
    model.eval()
    model.save_pretrained(tmp_path / name)
    loaded = load_baseline(tmp_path / name).eval()
    assert type(loaded) is type(model)
    public = lambda config: {k: v for k, v in config.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(model.config)
    torch.testing.assert_close(loaded.encode(images), model.encode(images), rtol=0, atol=0)
    torch.testing.assert_close(loaded.decode(torch.ones(2, 4)), model.decode(torch.ones(2, 4)), rtol=0, atol=0)


def test_load_baseline_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_baseline(tmp_path)
    (tmp_path / "config.json").write_text('{"_class_name": "UNet2DModel"}')
    with pytest.raises(ValueError, match="UNet2DModel"):
        load_baseline(tmp_path)


def test_bad_inputs_raise_clear_errors():
    model = BetaVAEModel(**TINY)
    with pytest.raises(ValueError, match=r"\(B, 3, 16, 16\)"):
        model.encode_posterior(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        model.encode_posterior(torch.full((2, 3, 16, 16), 255.0))
    with pytest.raises(ValueError, match="finite"):
        model.encode_posterior(torch.full((2, 3, 16, 16), float("nan")))
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        model.decode(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="likelihood"):
        BetaVAEModel(likelihood="laplace")
    with pytest.raises(ValueError, match="sample_size"):
        BetaVAEModel(sample_size=50)


def test_swap_and_traverse():
    torch.manual_seed(0)
    model = BetaTCVAEModel(**TINY).eval()
    images = tiny_images(3)
    rows = model.swap(images)
    assert rows.shape == (5, 3, 3, 16, 16) and rows.min() >= 0 and rows.max() <= 1
    recon = torch.sigmoid(model.decode(model.encode(images)))
    torch.testing.assert_close(rows[0], recon)
    for i in range(1, 5):  # the source image keeps its own value, so its column is unchanged
        torch.testing.assert_close(rows[i, 0], recon[0])
    row = model.traverse(images[:1], 2, [-2.0, 0.0, 2.0])
    assert row.shape == (3, 3, 16, 16)
    assert not torch.allclose(row[0], row[2])
