"""Generation fidelity: the probe that reads factors, concept matching, and scores with known answers.

The scores are checked on a hand-made "pipeline" whose generation is exact (it renders the image
of the factor classes its concepts round to), and on one that ignores a factor: each score then has
a value computed by hand.
"""
import json
import os

import numpy as np
import pytest
import torch

from encdiff_pipeline.data.factor_dataset import FactorGrid
from encdiff_pipeline.factor_probe import FactorProbe, held_indices, load_factor_probe, train_factor_probe
from encdiff_pipeline.generation_fidelity import assign_concepts, classes_in_order, generation_fidelity
from encdiff_pipeline.image_range import to_model_input

SIZES = [3, 4, 2]


class ChannelGrid(FactorGrid):
    """Grid point -> an 8x8 image whose channel c is factor c's class / (size - 1), in [0, 1]."""

    def get_images(self, indices):
        factors = self.index_to_factors(np.atleast_1d(indices)).astype(np.float32)
        values = factors / (np.asarray(self.factor_sizes, dtype=np.float32) - 1)
        return np.broadcast_to(values[:, None, None, :], (len(values), 8, 8, 3)).copy()


class ChannelProbe(FactorProbe):
    """Reads each factor back from its channel's mean: exact on ChannelGrid images."""

    def __init__(self, held):
        self.factor_sizes, self.held = SIZES, held

    def predict(self, images, batch_size=512):
        unit = (images.float().mean(dim=(2, 3)) + 1) / 2
        return torch.round(unit * (torch.tensor(SIZES) - 1)).long().numpy()


class RenderingPipe:
    """Concepts = [factor_0, dead, factor_1, factor_2, factor_2 again]; generation renders the image of the
    rounded concepts. `ignore` = a factor whose concepts generation ignores (it always draws class 0)."""

    def __init__(self, dataset, ignore=None):
        self.dataset, self.ignore = dataset, ignore

    def encode(self, images):
        read = ChannelProbe(None).predict(images).astype(np.float32)
        return torch.from_numpy(np.stack([read[:, 0], np.zeros(len(read)), read[:, 1], read[:, 2], read[:, 2]], 1))

    def _render(self, concepts):
        factors = np.stack([concepts[:, 0], concepts[:, 2], concepts[:, 3]], 1).round()
        factors = np.clip(factors, 0, np.asarray(SIZES) - 1).astype(np.int64)
        if self.ignore is not None:
            factors[:, self.ignore] = 0
        images = to_model_input(self.dataset.get_images(self.dataset.factors_to_index(factors)))
        return (images + 1) / 2  # output_type "pt": [0, 1]

    def __call__(self, concepts, generator=None, output_type="pt", **sampling):
        return type("Out", (), {"images": self._render(concepts.numpy())})

    def traverse(self, image, code, values, generator=None, output_type="pt", **sampling):
        rows = self.encode(image).repeat(len(values), 1)
        rows[:, code] = values
        return type("Out", (), {"images": self._render(rows.numpy())})


# importance (codes x factors) matching RenderingPipe's concepts: code 1 dead, codes 3 and 4 both factor 2
IMPORTANCE = np.array([[0.9, 0.0, 0.0], [0.0, 0.001, 0.0], [0.05, 0.8, 0.0], [0.0, 0.1, 0.5], [0.0, 0.0, 0.4]])


def test_assign_concepts_matches_each_code_to_its_factor_and_drops_dead_codes():
    assert assign_concepts(IMPORTANCE) == [[0], [2], [3, 4]]
    assert assign_concepts(np.zeros((3, 2))) == [[], []]
    # factor 1 leads no concept: it gets the one that matters most for it, shared with factor 0
    assert assign_concepts(np.array([[0.9, 0.3], [0.8, 0.1], [0.0, 0.0]])) == [[0, 1], [0]]
    with pytest.raises(ValueError, match="codes, factors"):
        assign_concepts(np.zeros(3))


@pytest.mark.parametrize("sequence, expected", [
    ([0, 0, 1, 2, 5, 4], 3), ([3, 2, 1, 0], 4), ([0, 1, 0, 1], 2), ([2, 2, 2], 1), ([], 0), ([0, 2, 4], 1),
    ([0, 1, 2, 1, 0], 3), ([5, 0, 1, 2, 3, 3, 4, 9], 5)])
def test_classes_in_order_counts_the_longest_run_of_neighbouring_classes(sequence, expected):
    assert classes_in_order(sequence) == expected


def test_exact_generation_scores_one_everywhere():
    grid = ChannelGrid(SIZES)
    probe = ChannelProbe(np.arange(len(grid)))
    report = generation_fidelity(RenderingPipe(grid), grid, probe, num_images=24, num_traversals=3, importance=IMPORTANCE)
    for key in ("real", "reconstruction", "swap_donor", "swap_kept"):
        assert list(report[key].values()) == [1.0, 1.0, 1.0], key
    # a sweep over the observed range passes every class in order
    assert list(report["traversal"].values()) == [1.0, 1.0, 1.0]
    assert report["concepts_per_factor"] == {"factor_0": [0], "factor_1": [2], "factor_2": [3, 4]}
    json.dumps(report)  # JSON-ready


def test_the_default_importance_scores_the_same_images_as_a_precomputed_one():
    from encdiff_pipeline.generation_fidelity import fidelity_importance

    grid = ChannelGrid(SIZES)
    probe, pipe = ChannelProbe(np.arange(len(grid))), RenderingPipe(grid, ignore=1)
    given = generation_fidelity(pipe, grid, probe, num_images=12, num_traversals=1, seed=4,
                                importance=fidelity_importance(pipe, grid, probe, seed=4))
    assert generation_fidelity(pipe, grid, probe, num_images=12, num_traversals=1, seed=4) == given
    assert given["concepts_per_factor"]["factor_0"] == [0]


def test_a_factor_generation_ignores_scores_what_chance_gives():
    grid = ChannelGrid(SIZES)
    probe = ChannelProbe(np.arange(len(grid)))
    report = generation_fidelity(RenderingPipe(grid, ignore=1), grid, probe, num_images=24, num_traversals=3,
                                 importance=IMPORTANCE, seed=3)
    # factor_1 is always drawn as class 0: read right exactly where the truth is 0
    rng = np.random.RandomState(3)
    receivers = rng.choice(probe.held, size=24, replace=False)
    truth = grid.index_to_factors(receivers)
    assert report["reconstruction"]["factor_1"] == pytest.approx(round(float((truth[:, 1] == 0).mean()), 4))
    assert report["reconstruction"]["factor_0"] == 1.0 and report["reconstruction"]["factor_2"] == 1.0
    assert report["traversal"]["factor_1"] == pytest.approx(1 / 4)  # the row stays on one class
    assert report["swap_donor"]["factor_0"] == 1.0
    # swapping factor 0 keeps factor 2 always and factor 1 only where it was class 0
    assert report["swap_kept"]["factor_0"] == pytest.approx(round(float((1 + (truth[:, 1] == 0).mean()) / 2), 4))
    assert report["swap_donor"]["factor_1"] <= 0.5  # donors differ from the receiver, most are not class 0


def test_probe_reads_real_images_and_is_cached(tmp_path):
    grid = ChannelGrid(SIZES)
    recipe = dict(steps=150, batch_size=16, width=16, learning_rate=3e-3)
    probe = load_factor_probe(grid, cache_dir=str(tmp_path), **recipe)
    held = probe.held
    assert np.array_equal(held, held_indices(len(grid), 4096, 0)) and len(held) == len(grid) // 2
    trained = np.setdiff1d(np.arange(len(grid)), held)  # 12 points: too few to generalise, enough to learn
    images = to_model_input(grid.get_images(trained))
    assert probe.accuracy(images, grid.index_to_factors(trained)).min() == 1.0
    entries = os.listdir(tmp_path)
    assert len(entries) == 1  # one complete entry, no temporary folder left
    again = load_factor_probe(grid, cache_dir=str(tmp_path), **recipe)
    for a, b in zip(probe.model.state_dict().values(), again.model.state_dict().values()):
        assert torch.equal(a, b)
    # another recipe or seed is another entry; a damaged entry is retrained and replaced
    load_factor_probe(grid, cache_dir=str(tmp_path), seed=1, **recipe)
    assert len(os.listdir(tmp_path)) == 2
    with open(tmp_path / entries[0] / "probe.json", "w") as f:
        f.write("{not json")
    repaired = load_factor_probe(grid, cache_dir=str(tmp_path), **recipe)
    assert np.array_equal(repaired.predict(images), probe.predict(images))


def test_probe_training_is_seeded_and_never_sees_held_points(monkeypatch):
    grid = ChannelGrid(SIZES)
    seen = []
    original = grid.get_images
    monkeypatch.setattr(grid, "get_images", lambda idx: (seen.append(np.array(idx)), original(idx))[1])
    a = train_factor_probe(grid, seed=2, steps=5, batch_size=8, width=8)
    trained_on = np.concatenate(seen[1:])  # the first read is the shape probe
    assert not np.isin(trained_on, a.held).any()
    b = train_factor_probe(grid, seed=2, steps=5, batch_size=8, width=8)
    assert all(torch.equal(x, y) for x, y in zip(a.model.state_dict().values(), b.model.state_dict().values()))
    with pytest.raises(ValueError, match="unknown probe recipe keys"):
        load_factor_probe(grid, cache_dir="", stepz=3)


def test_encdiff_evaluate_adds_generation_fidelity_to_its_report(tmp_path, monkeypatch, capsys):
    from encdiff_pipeline import ConceptEncoderModel, EncDiffPipeline
    from encdiff_pipeline.evaluation import main
    from encdiff_pipeline.models import unet_from_preset

    monkeypatch.setenv("ENCDIFF_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    encoder = ConceptEncoderModel(sample_size=16, num_concepts=4, token_dim=8, width=8, mlp_hidden_dims=(8, 8))
    pipe = EncDiffPipeline(encoder=encoder, unet=unet_from_preset("tiny", sample_size=16, cross_attention_dim=8))
    pipe.save_pretrained(tmp_path / "pipe")
    options = json.dumps({"num_images": 6, "num_traversals": 1, "num_importance_points": 30, "num_inference_steps": 2,
                          "probe_options": {"steps": 10, "batch_size": 8, "width": 8}})
    grid = json.dumps({"image_size": 16, "factor_sizes": [2, 2, 2, 2, 2, 2]})
    out = tmp_path / "report.json"
    main([str(tmp_path / "pipe"), "--dataset_options", grid, "--metrics", "mig", "--generation_fidelity",
          "--fidelity_options", options, "--out", str(out), "--no_progress"])
    report = json.loads(out.read_text())
    fidelity = report["generation_fidelity"]
    assert fidelity["num_images"] == 6 and fidelity["dataset"] == "procedural-shapes3d"
    (entry,) = os.listdir(tmp_path / "cache" / "factor_probes")  # the probe of --dataset_options' 64-point grid
    assert len(json.loads((tmp_path / "cache" / "factor_probes" / entry / "probe.json").read_text())["held"]) == 32
    assert set(fidelity["reconstruction"]) == {"floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"}
    worst = min(v for v in fidelity["reconstruction"].values() if v is not None)
    printed = capsys.readouterr().out
    assert f"| Reconstruction read (worst factor) | {worst:.4f} |" in printed and "| swap: donor's class |" in printed
    with pytest.raises(SystemExit):
        main([str(tmp_path / "pipe"), "--fidelity_options", options])  # options without the flag
