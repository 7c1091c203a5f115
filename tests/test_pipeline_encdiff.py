"""EncDiffPipeline behaviour with tiny real components: inputs, generation, swap, traverse, attention."""
import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import VQModel

from encdiff_pipeline import ConceptEncoderModel, EncDiffPipeline
from encdiff_pipeline.models import unet_from_preset
from encdiff_pipeline.visualization import attention_grid, heatmap_overlay, image_grid

NUM_CONCEPTS, TOKEN_DIM, STEPS = 4, 8, 4


def make_tiny_pipeline(vq: bool = False, seed: int = 0) -> EncDiffPipeline:
    """A pixel-space 8x8 pipeline, or (vq=True) a 16x16 one over a tiny VQModel (f=2, 8x8x3 latents)."""
    torch.manual_seed(seed)
    image_size = 16 if vq else 8
    encoder = ConceptEncoderModel(sample_size=image_size, num_concepts=NUM_CONCEPTS, token_dim=TOKEN_DIM, width=8)
    unet = unet_from_preset("tiny", sample_size=8, cross_attention_dim=TOKEN_DIM)
    vae = None
    if vq:
        vae = VQModel(
            in_channels=3, out_channels=3, latent_channels=3, vq_embed_dim=3, num_vq_embeddings=16,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(8, 8), layers_per_block=1, norm_num_groups=4, sample_size=16,
        )
    pipe = EncDiffPipeline(encoder=encoder, unet=unet, vae=vae, latent_scale=0.7 if vq else 1.0)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def tiny_images(batch: int = 3, size: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def pipe():
    return make_tiny_pipeline()


def test_call_output_types_and_seeding(pipe):
    images = tiny_images()
    out_np = pipe(images=images, num_inference_steps=STEPS, generator=seeded(), output_type="np").images
    out_pt = pipe(images=images, num_inference_steps=STEPS, generator=seeded(), output_type="pt").images
    out_pil = pipe(images=images, num_inference_steps=STEPS, generator=seeded(), output_type="pil").images
    assert out_np.shape == (3, 8, 8, 3) and out_np.min() >= 0 and out_np.max() <= 1
    assert out_pt.shape == (3, 3, 8, 8)
    np.testing.assert_array_equal(out_pt.permute(0, 2, 3, 1).numpy(), out_np)
    assert len(out_pil) == 3 and out_pil[0].size == (8, 8) and out_pil[0].mode == "RGB"
    np.testing.assert_array_equal(np.asarray(out_pil[0]), (out_np[0] * 255).round().astype(np.uint8))
    other = pipe(images=images, num_inference_steps=STEPS, generator=seeded(1), output_type="np").images
    assert np.abs(other - out_np).max() > 1e-3  # a different seed gives different samples
    (as_tuple,) = pipe(images=images, num_inference_steps=STEPS, generator=seeded(), output_type="np", return_dict=False)
    np.testing.assert_array_equal(as_tuple, out_np)


def test_concepts_path_equals_images_path(pipe):
    images = tiny_images()
    concepts = pipe.encode(images)
    assert concepts.shape == (3, NUM_CONCEPTS)
    from_images = pipe(images=images, num_inference_steps=STEPS, generator=seeded(), output_type="pt").images
    from_concepts = pipe(concepts=concepts, num_inference_steps=STEPS, generator=seeded(), output_type="pt").images
    torch.testing.assert_close(from_images, from_concepts, rtol=0, atol=0)
    edited = concepts.clone()
    edited[:, 0] += 3.0
    changed = pipe(concepts=edited, num_inference_steps=STEPS, generator=seeded(), output_type="pt").images
    assert (changed - from_images).abs().max() > 1e-4  # the concepts drive the generation


def test_input_forms_give_the_same_concepts(pipe):
    uint8 = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    reference = pipe.encode(torch.from_numpy(uint8).permute(0, 3, 1, 2).float() / 255 * 2 - 1)
    forms = {
        "numpy uint8 NHWC": uint8,
        "numpy float NHWC": uint8.astype(np.float32) / 255,
        "list of PIL": [PIL.Image.fromarray(image) for image in uint8],
        "list of numpy HWC": list(uint8),
    }
    for name, images in forms.items():
        torch.testing.assert_close(pipe.encode(images), reference, rtol=0, atol=1e-5, msg=name)
    single = pipe.encode(PIL.Image.fromarray(uint8[1]))
    torch.testing.assert_close(single, reference[1:], rtol=0, atol=1e-5)


def test_encode_uses_running_statistics_and_restores_train_mode(pipe):
    pipe.encoder.train()
    images = tiny_images(4)
    running_mean = pipe.encoder.trunk[1].running_mean.clone()
    batch = pipe.encode(images)
    one = pipe.encode(images[2:3])
    torch.testing.assert_close(one, batch[2:3], rtol=0, atol=1e-5)  # eval-mode BatchNorm: no batch effect
    assert pipe.encoder.training and pipe.encoder.trunk[1].training
    torch.testing.assert_close(pipe.encoder.trunk[1].running_mean, running_mean, rtol=0, atol=0)
    pipe.encoder.eval()


@pytest.mark.parametrize(
    "images, message",
    [
        (torch.zeros(1, 1, 8, 8), r"3 channel\(s\).*got images of 1 channel"),
        (torch.zeros(1, 3, 16, 16), r"8x8 images.*size 16x16"),
        (torch.full((1, 3, 8, 8), float("nan")), "NaN"),
        (torch.full((1, 3, 8, 8), 2.0), r"must be in \[-1, 1\]"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "float tensor"),
        (np.full((8, 8, 3), 2.0, dtype=np.float32), r"must be in \[0, 1\].*uint8"),
        (np.full((8, 8, 3), np.nan, dtype=np.float32), "NaN"),
        (np.zeros((8, 8, 3), dtype=np.int32), "uint8"),
        (np.zeros((3, 8, 8), dtype=np.uint8), r"3 channel\(s\)"),
        (PIL.Image.new("RGBA", (8, 8)), "mode 'RGBA'"),
        ("image.png", "PIL, numpy or torch"),
        ([], "empty"),
    ],
    ids=["channels", "size", "nan", "range", "int-tensor", "np-range", "np-nan", "np-int32", "np-chw", "rgba", "str", "empty"],
)
def test_bad_images_raise_clear_errors(pipe, images, message):
    with pytest.raises(ValueError, match=message):
        pipe.encode(images)


def test_bad_concepts_and_arguments_raise_clear_errors(pipe):
    with pytest.raises(ValueError, match=r"N=4"):
        pipe(concepts=torch.zeros(2, 5), num_inference_steps=STEPS)
    with pytest.raises(ValueError, match="NaN"):
        pipe(concepts=torch.full((2, 4), float("nan")), num_inference_steps=STEPS)
    with pytest.raises(ValueError, match="exactly one"):
        pipe(num_inference_steps=STEPS)
    with pytest.raises(ValueError, match="output_type"):
        pipe(concepts=torch.zeros(1, 4), output_type="latent")


def test_token_dim_mismatch_fails_at_construction():
    encoder = ConceptEncoderModel(sample_size=8, num_concepts=4, token_dim=8, width=8)
    unet = unet_from_preset("tiny", sample_size=8, cross_attention_dim=16)
    with pytest.raises(ValueError, match=r"token_dim \(8\) must equal the U-Net's cross_attention_dim \(16\)"):
        EncDiffPipeline(encoder=encoder, unet=unet)
    with pytest.raises(ValueError, match="pixel space"):
        EncDiffPipeline(encoder=ConceptEncoderModel(sample_size=16, num_concepts=4, token_dim=8, width=8),
                        unet=unet_from_preset("tiny", sample_size=8, cross_attention_dim=8))


@pytest.mark.parametrize("source", [0, 2])
def test_swap_grid_semantics(pipe, source):
    images = tiny_images(3)
    concepts = pipe.encode(images)
    out = pipe.swap(images, concept_indices=[1, 3], source=source, num_inference_steps=STEPS,
                    generator=seeded(), output_type="pt")
    assert out.images.shape == (2, 3, 3, 8, 8) and out.concepts.shape == (2, 3, NUM_CONCEPTS)
    assert out.concept_indices == [1, 3]
    for row, index in enumerate([1, 3]):
        expected = concepts.clone()
        expected[:, index] = concepts[source, index]  # every image takes the source's concept `index`
        torch.testing.assert_close(out.concepts[row], expected, rtol=0, atol=0)
    # the images are generated from exactly these concepts, each cell with its own noise
    direct = pipe(concepts=out.concepts.flatten(0, 1), num_inference_steps=STEPS, generator=seeded(),
                  output_type="pt").images
    torch.testing.assert_close(out.images.flatten(0, 1), direct, rtol=0, atol=1e-6)
    pil_rows = pipe.swap(images, num_inference_steps=2, generator=seeded()).images
    assert len(pil_rows) == NUM_CONCEPTS and all(len(row) == 3 for row in pil_rows)
    with pytest.raises(ValueError, match="concept_indices"):
        pipe.swap(images, concept_indices=[4])
    with pytest.raises(ValueError, match="source"):
        pipe.swap(images, source=3)


def test_traverse_row(pipe):
    image = tiny_images(1)
    value = pipe.encode(image)[0, 2].item()
    out = pipe.traverse(image, concept_index=2, num_values=5, num_inference_steps=STEPS, generator=seeded(),
                        output_type="pt")
    torch.testing.assert_close(out.concept_values, torch.linspace(value - 2, value + 2, 5))
    assert out.images.shape == (5, 3, 8, 8)
    others = [i for i in range(NUM_CONCEPTS) if i != 2]
    torch.testing.assert_close(out.concepts[:, others], pipe.encode(image)[:, others].expand(5, -1), rtol=0, atol=0)
    torch.testing.assert_close(out.concepts[:, 2], out.concept_values)
    # the whole row shares one initial noise: equal values give equal images, different values differ
    same = pipe.traverse(image, 2, values=[0.5, 0.5, -3.0], num_inference_steps=STEPS, generator=seeded(),
                         output_type="pt").images
    torch.testing.assert_close(same[0], same[1], rtol=0, atol=0)
    assert (same[0] - same[2]).abs().max() > 1e-4
    ranged = pipe.traverse(image, 0, value_range=(-1.0, 1.0), num_values=3, num_inference_steps=2)
    torch.testing.assert_close(ranged.concept_values, torch.tensor([-1.0, 0.0, 1.0]))
    assert len(ranged.images) == 3
    with pytest.raises(ValueError, match="one image"):
        pipe.traverse(tiny_images(2), 0)
    with pytest.raises(ValueError, match="concept_index"):
        pipe.traverse(image, NUM_CONCEPTS)


def test_attention_maps_are_distributions_over_tokens(pipe):
    images = tiny_images(2)
    maps = pipe.attention_maps(images, timestep=300, generator=seeded())
    assert maps.shape == (2, NUM_CONCEPTS, 8, 8)
    assert maps.min() >= 0
    torch.testing.assert_close(maps.sum(dim=1), torch.ones(2, 8, 8), rtol=0, atol=1e-5)
    again = pipe.attention_maps(images, timestep=300, generator=seeded())
    torch.testing.assert_close(maps, again, rtol=0, atol=0)
    assert (maps - maps.mean(dim=(2, 3), keepdim=True)).abs().max() > 1e-4  # not uniform: depends on position
    averaged = pipe.attention_maps(images, timestep=[100, 900], generator=seeded())
    torch.testing.assert_close(averaged.sum(dim=1), torch.ones(2, 8, 8), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="timestep"):
        pipe.attention_maps(images, timestep=1000)


def test_vq_pipeline_generates_and_maps_at_image_size():
    pipe = make_tiny_pipeline(vq=True)
    images = tiny_images(2, size=16)
    out = pipe(images=images, num_inference_steps=STEPS, generator=seeded(), output_type="np").images
    assert out.shape == (2, 16, 16, 3) and np.isfinite(out).all()
    maps = pipe.attention_maps(images)
    assert maps.shape == (2, NUM_CONCEPTS, 16, 16)
    torch.testing.assert_close(maps.sum(dim=1), torch.ones(2, 16, 16), rtol=0, atol=1e-5)


def test_visualization_renders_grids_and_heatmaps(pipe):
    images = tiny_images(3)
    rows = pipe.swap(images, concept_indices=[0, 1], num_inference_steps=2, generator=seeded()).images
    grid = image_grid(rows, padding=2)
    assert grid.size == (3 * 8 + 2 * 2, 2 * 8 + 2)
    np.testing.assert_array_equal(np.asarray(grid)[10:18, 10:18], np.asarray(rows[1][1]))
    assert image_grid(torch.rand(4, 3, 8, 8), cols=2, padding=0).size == (16, 16)
    rows_np = np.random.default_rng(0).random((2, 3, 8, 8, 1))  # (rows, cols, H, W, 1) grey in [0, 1]
    grey = image_grid(rows_np, padding=0)
    assert grey.size == (24, 16)
    np.testing.assert_array_equal(np.asarray(grey)[8:, 16:, 0], (rows_np[1, 2, ..., 0] * 255).round().astype(np.uint8))
    maps = pipe.attention_maps(images)
    overview = attention_grid(images, maps, padding=0)
    assert overview.size == ((1 + NUM_CONCEPTS) * 8, 3 * 8)
    first = ((images[0].permute(1, 2, 0) + 1) / 2 * 255).round().byte().numpy()
    np.testing.assert_array_equal(np.asarray(overview)[:8, :8], first)
    hot = torch.zeros(4, 4)
    hot[0, 0] = 1.0
    overlay = np.asarray(heatmap_overlay(PIL.Image.new("RGB", (8, 8)), hot, colormap="gray", alpha=1.0))
    assert overlay[0, 0].mean() > overlay[7, 7].mean()  # the hot corner is brighter
    with pytest.raises(ValueError, match="B=3"):
        attention_grid(images, maps[:2])


def test_adagn_unet_gets_the_tokens_as_class_labels(tmp_path):
    """An AdaGN U-Net (no cross-attention; flattened tokens projected into the timestep embedding)
    generates, is steered by the concepts, and survives save/load."""
    torch.manual_seed(0)
    encoder = ConceptEncoderModel(sample_size=8, num_concepts=NUM_CONCEPTS, token_dim=TOKEN_DIM, width=8)
    unet = unet_from_preset("tiny", sample_size=8, cross_attention_dim=TOKEN_DIM, down_block_types=("DownBlock2D",) * 2,
                            up_block_types=("UpBlock2D",) * 2, mid_block_type="UNetMidBlock2D",
                            class_embed_type="projection", projection_class_embeddings_input_dim=NUM_CONCEPTS * TOKEN_DIM)
    pipe = EncDiffPipeline(encoder=encoder, unet=unet)
    pipe.set_progress_bar_config(disable=True)
    concepts = pipe.encode(tiny_images(2))
    out = pipe(concepts=concepts, num_inference_steps=STEPS, generator=seeded(), output_type="np").images
    edited = concepts.clone()
    edited[:, 0] += 3.0
    moved = pipe(concepts=edited, num_inference_steps=STEPS, generator=seeded(), output_type="np").images
    assert out.shape == (2, 8, 8, 3) and np.isfinite(out).all()
    assert np.abs(moved - out).max() > 1e-4  # the concepts reach the U-Net through class_labels
    with pytest.raises(ValueError, match="class_labels"):  # which it cannot do without
        unet(torch.zeros(1, 3, 8, 8), 0, encoder_hidden_states=torch.zeros(1, NUM_CONCEPTS, TOKEN_DIM))
    pipe.save_pretrained(str(tmp_path / "adagn"))
    loaded = EncDiffPipeline.from_pretrained(str(tmp_path / "adagn"))
    loaded.set_progress_bar_config(disable=True)
    again = loaded(concepts=concepts, num_inference_steps=STEPS, generator=seeded(), output_type="np").images
    np.testing.assert_allclose(again, out, atol=1e-6)
