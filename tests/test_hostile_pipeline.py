"""Hostile and careless pipeline arguments: refused with a message, never NaN or black images."""
import numpy as np
import PIL.Image
import pytest
import torch

from tests.test_pipeline_encdiff import NUM_CONCEPTS, make_tiny_pipeline, seeded, tiny_images


@pytest.fixture(scope="module")
def pipe():
    return make_tiny_pipeline()


def test_huge_concepts_raise_instead_of_black_images(pipe):
    with pytest.raises(FloatingPointError, match="NaN or infinite.*far outside"):
        pipe(concepts=torch.full((1, NUM_CONCEPTS), 1e30), num_inference_steps=2, output_type="pil")


@pytest.mark.parametrize("eta", [float("nan"), float("inf"), -1.0, "1", True])
def test_bad_eta_is_refused(pipe, eta):
    with pytest.raises(ValueError, match="eta must be a finite number >= 0"):
        pipe(images=tiny_images(2), num_inference_steps=2, eta=eta)


def test_generator_list_of_wrong_length_is_refused(pipe):
    generators = [seeded(i) for i in range(3)]
    with pytest.raises(ValueError, match="list of 3 generators for a batch of 2"):
        pipe(images=tiny_images(2), num_inference_steps=2, generator=generators)
    pipe(images=tiny_images(2), num_inference_steps=2, generator=[seeded(0), seeded(1)])  # one per image is fine


@pytest.mark.parametrize("empty", [torch.zeros(0, 3, 8, 8), np.zeros((0, 8, 8, 3), np.uint8)], ids=["torch", "numpy"])
def test_empty_batch_is_refused(pipe, empty):
    with pytest.raises(ValueError, match="empty"):
        pipe(images=empty, num_inference_steps=2)
    with pytest.raises(ValueError, match="empty batch"):
        pipe(concepts=torch.zeros(0, NUM_CONCEPTS), num_inference_steps=2)


def test_mixed_pil_sizes_name_the_expected_size(pipe):
    images = [PIL.Image.new("RGB", (8, 8)), PIL.Image.new("RGB", (16, 16))]
    with pytest.raises(ValueError, match=r"Expected 8x8 images.*mixes images of 3 channel\(s\) 8x8, 3 channel\(s\) 16x16"):
        pipe.encode(images)


def test_numpy_integer_steps_accepted_and_float_indices_refused(pipe):
    pipe(images=tiny_images(1), num_inference_steps=np.int64(2), output_type="np")
    with pytest.raises(ValueError, match="concept_indices must be integers"):
        pipe.swap(tiny_images(2), concept_indices=[1.7], num_inference_steps=2)


def test_traverse_and_attention_absurd_counts(pipe):
    with pytest.raises(ValueError, match="num_values must be an int in"):
        pipe.traverse(tiny_images(1), 0, num_values=-3, num_inference_steps=2)
    with pytest.raises(ValueError, match="num_values must be an int in"):
        pipe.traverse(tiny_images(1), 0, num_values=10**9, num_inference_steps=2)
    with pytest.raises(ValueError, match="non-empty list"):
        pipe.attention_maps(tiny_images(1), timestep=[])


def test_evaluate_cli_user_errors_are_one_line(tmp_path, capsys):
    from encdiff_pipeline.evaluation import cli

    assert cli([str(tmp_path), "--out", str(tmp_path / "r.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("encdiff-evaluate: error: ") and "has no model_index.json" in err and err.count("\n") == 1


def test_model_card_metrics_nan_is_not_metadata_and_strings_are_refused():
    from encdiff_pipeline.model_card import render_model_card

    pipe = make_tiny_pipeline()
    card = str(render_model_card(pipe, metrics={"ds": {"dci": float("nan"), "mig": 0.25}}))
    assert ".nan" not in card and "nan" not in card.split("---")[1].lower()  # metadata: MIG only
    assert "| ds | dci | n/a |" in card and "| ds | mig | 0.25 |" in card
    with pytest.raises(ValueError, match=r"metrics\['ds'\]\['mig'\] must be a number, got 'high'"):
        render_model_card(pipe, metrics={"ds": {"mig": "high"}})


# ---- second probe: concepts that are not real numbers, meta tensors, fractional timesteps ----
@pytest.mark.parametrize("concepts, message", [
    (np.array([[1, 2, 3, None]], dtype=object), "concepts must be real numbers of shape \\(B, 4\\), got ndarray that is not numeric"),
    ([["a", "b", "c", "d"]], "concepts must be real numbers of shape \\(B, 4\\), got list that is not numeric"),
    (torch.zeros(1, NUM_CONCEPTS, dtype=torch.complex64), "got complex values"),
    (torch.empty(2, NUM_CONCEPTS, device="meta"), "concepts is a meta tensor"),
])
def test_concepts_that_are_not_real_numbers_are_named(pipe, concepts, message):
    """A28, A29, A31, A32: named, and the imaginary part of complex concepts is not silently dropped."""
    with pytest.raises(ValueError, match=message):
        pipe(concepts=concepts, num_inference_steps=1)


def test_meta_images_are_named(pipe):
    """A07."""
    with pytest.raises(ValueError, match="images is a meta tensor"):
        pipe.encode(torch.empty(2, 3, 8, 8, device="meta"))


@pytest.mark.parametrize("timestep", [3.5, True, [0, 2.5]])
def test_attention_map_timesteps_must_be_integers(pipe, timestep):
    """A51: 3.5 is not silently timestep 3."""
    with pytest.raises(ValueError, match="timestep must be an int or a non-empty list of ints"):
        pipe.attention_maps(tiny_images(2), timestep=timestep)
    assert pipe.attention_maps(tiny_images(1), timestep=np.int64(5)).shape[1] == NUM_CONCEPTS


@pytest.mark.parametrize("call, message", [
    (lambda p, x: p.swap(x, source=True, num_inference_steps=1), "source must be an int indexing the batch of 2 images, got True"),
    (lambda p, x: p.swap(x, source=0.5, num_inference_steps=1), "source must be an int indexing the batch of 2 images, got 0.5"),
    (lambda p, x: p.traverse(x[:1], concept_index=True, num_values=2, num_inference_steps=1), "concept_index must be an int in"),
    (lambda p, x: p.traverse(x[:1], concept_index=1.5, num_values=2, num_inference_steps=1), "concept_index must be an int in"),
    (lambda p, x: p.traverse(x[:1], 0, values=torch.zeros(2, 2), num_inference_steps=1), r"values must be a 1-D list .*\(2, 2\)"),
    (lambda p, x: p.traverse(x[:1], 0, values=["a", "b"], num_inference_steps=1), "values must be a 1-D list of finite numbers"),
])
def test_swap_and_traverse_indices_and_values_are_named(pipe, call, message):
    """A37, A38, A44, A45 (raw torch errors before), A47 (a 2-D values tensor was silently flattened)."""
    with pytest.raises(ValueError, match=message):
        call(pipe, tiny_images(2))


def test_a_generator_that_is_not_a_torch_generator_is_named():
    """A19: an int seed (or any other object) as `generator` is a clear error, not diffusers' AttributeError."""
    from encdiff_pipeline import ConceptEncoderModel, EncDiffPipeline
    from encdiff_pipeline.models import unet_from_preset

    torch.manual_seed(0)
    pipe = EncDiffPipeline(encoder=ConceptEncoderModel(sample_size=8, num_concepts=4, token_dim=8, width=8),
                           unet=unet_from_preset("tiny", sample_size=8, cross_attention_dim=8))
    pipe.set_progress_bar_config(disable=True)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    for bad in (0, "seed", [torch.Generator(), 3]):
        with pytest.raises(ValueError, match="generator must be a torch.Generator"):
            pipe(images=x, generator=bad, num_inference_steps=1)
        with pytest.raises(ValueError, match="generator must be a torch.Generator"):
            pipe.traverse(x[:1], concept_index=0, values=[0.0, 1.0], generator=bad, num_inference_steps=1)
    assert pipe(images=x, generator=torch.Generator().manual_seed(0), num_inference_steps=1, output_type="pt").images.shape == (2, 3, 8, 8)
