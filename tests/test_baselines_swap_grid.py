"""The swap grid and traversal of every VAE baseline, checked element by element.

(The EncDiff pipeline's swap grid is checked the same way in test_pipeline_sampling.py.)
"""
import pytest
import torch

from encdiff_pipeline.baselines import BASELINES

TINY = dict(sample_size=16, num_latents=4, width=8)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_swap_grid_element_by_element(name):
    torch.manual_seed(0)
    model = BASELINES[name](**TINY).eval()
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    source, indices = 2, [3, 0]
    rows = model.swap(images, latent_indices=indices, source=source)
    assert rows.shape == (3, 3, 3, 16, 16)
    with torch.no_grad():
        mean = model.encode_posterior(images)[0]
        decode = lambda z: torch.sigmoid(model.decode(z))
        torch.testing.assert_close(rows[0], decode(mean), rtol=0, atol=1e-6)
        for r, index in enumerate(indices, start=1):
            edited = torch.stack([
                torch.stack([mean[source, i] if i == index else mean[b, i] for i in range(4)]) for b in range(3)
            ])
            torch.testing.assert_close(rows[r], decode(edited), rtol=0, atol=1e-6)
            # the images that did not already have the source's value changed
            for b in range(3):
                if b != source:
                    assert (rows[r, b] - rows[0, b]).abs().max() > 1e-5, (name, r, b)
            torch.testing.assert_close(rows[r, source], rows[0, source], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_traversal_element_by_element(name):
    torch.manual_seed(0)
    model = BASELINES[name](**TINY).eval()
    image = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    values = [-2.0, 0.5, 3.0]
    row = model.traverse(image, 1, values)
    with torch.no_grad():
        mean = model.encode_posterior(image)[0][0]
        expected = torch.stack([torch.sigmoid(model.decode(torch.stack([mean[0], torch.tensor(v), mean[2], mean[3]])[None]))[0]
                                for v in values])
    torch.testing.assert_close(row, expected, rtol=0, atol=1e-6)
