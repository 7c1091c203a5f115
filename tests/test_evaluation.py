"""`evaluate` and `encdiff-evaluate` on a tiny rendered factor dataset."""
import json

import numpy as np
import pytest
import torch

from encdiff_pipeline import evaluation
from encdiff_pipeline.data import FactorDataset
from encdiff_pipeline.evaluation import evaluate, main, reduce_vector_tokens
from encdiff_pipeline.metrics import METRICS

SMALL = {
    "factor_vae": dict(num_train=300, num_eval=200, num_variance_estimate=500),
    "dci": dict(num_train=300, num_test=100),
    "mig": dict(num_train=1000),
    "sap": dict(num_train=500, num_test=200),
    "modularity": dict(num_train=500, num_test=200),
}


class Squares(FactorDataset):
    """4x4 images whose first pixel's channels encode the three factors."""

    factor_names = ["a", "b", "c"]
    factor_sizes = [3, 4, 5]

    def get_images(self, indices):
        factors = self.index_to_factors(np.asarray(indices))
        images = np.zeros((len(factors), 4, 4, 3), dtype=np.float32)
        images[:, 0, 0, :] = factors / (np.asarray(self.factor_sizes) - 1.0)
        return images


def pixel_codes(images):
    return images[:, 0, 0, :] * 2.0 - 1.0


class TinyEncoder(torch.nn.Module):
    """ConceptEncoderModel-like: (B, C, H, W) in [-1, 1] -> output with `.concepts` (B, 3)."""

    class Output:
        def __init__(self, concepts):
            self.concepts = concepts

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.Output(x[:, :, 0, 0] * self.scale)


def test_callable_perfect_representation():
    calls = []

    def encode(images):
        calls.append(len(images))
        return pixel_codes(images)

    report = evaluate(encode, Squares(), batch_size=16, metric_options=SMALL, progress=False)
    assert calls == [16, 16, 16, 12]  # every image encoded exactly once
    scores = report["metrics"]
    assert set(scores) == set(METRICS)
    assert scores["factor_vae"]["eval_accuracy"] == 1.0
    assert scores["dci"]["disentanglement"] > 0.95 and scores["dci"]["informativeness_test"] == 1.0
    # a perfect code: MIG is 1 minus the small MI the other codes pick up by chance, never above 1
    assert 0.99 < scores["mig"]["discrete_mig"] <= 1.0
    assert 0.999 < scores["modularity"]["modularity_score"] <= 1.0
    assert scores["modularity"]["explicitness_score_test"] == 1.0
    assert report["num_images"] == 60 and report["representation_dim"] == 3
    # the table route gives the numbers each metric gives on the table directly
    table = pixel_codes(Squares().get_images(np.arange(60))).astype(np.float64)
    direct = METRICS["mig"](Squares(), table, np.random.RandomState(0), **SMALL["mig"])
    assert scores["mig"] == direct


def test_torch_module_and_report_forms():
    a = evaluate(TinyEncoder(), Squares(), metrics=("mig", "sap"), metric_options=SMALL, progress=False)
    b = evaluate(pixel_codes, Squares(), metrics=("mig", "sap"), metric_options=SMALL, progress=False)
    for name in ("mig", "sap"):
        assert a["metrics"][name] == pytest.approx(b["metrics"][name], abs=1e-6)
    assert json.loads(json.dumps(a))["metrics"]["mig"]["discrete_mig"] == pytest.approx(a["metrics"]["mig"]["discrete_mig"])
    markdown = a.to_markdown()
    assert "| MIG |" in markdown and "| SAP |" in markdown
    index = a.to_model_index("tiny-encdiff")
    assert index[0]["name"] == "tiny-encdiff"
    values = {m["name"]: m["value"] for m in index[0]["results"][0]["metrics"]}
    assert values["MIG"] == pytest.approx(round(a["metrics"]["mig"]["discrete_mig"], 4))


def test_vector_tokens_are_reduced_with_pca():
    rng = np.random.RandomState(0)
    scalars = rng.randn(200, 3)
    directions = rng.randn(3, 5)
    tokens = scalars[:, :, None] * directions[None]  # (200, 3 tokens, d=5), each token rank one
    reduced = reduce_vector_tokens(tokens)
    for i in range(3):
        assert abs(np.corrcoef(reduced[:, i], scalars[:, i])[0, 1]) == pytest.approx(1.0, abs=1e-9)

    def vector_encoder(images):
        codes = pixel_codes(images)
        return codes[:, :, None] * np.array([1.0, -2.0, 0.5])  # (B, 3, 3)

    a = evaluate(vector_encoder, Squares(), metrics=("mig",), metric_options=SMALL, progress=False)
    b = evaluate(pixel_codes, Squares(), metrics=("mig",), metric_options=SMALL, progress=False)
    assert a["representation_dim"] == 3
    assert a["metrics"]["mig"]["discrete_mig"] == pytest.approx(b["metrics"]["mig"]["discrete_mig"], abs=1e-9)


def test_unknown_metric_and_nan_encoder_raise():
    with pytest.raises(ValueError, match="unknown metrics"):
        evaluate(pixel_codes, Squares(), metrics=("beta_vae",))
    with pytest.raises(ValueError, match="NaN"):
        evaluate(lambda im: np.full((len(im), 2), np.nan), Squares(), metrics=("mig",), progress=False)


class Faces(torch.utils.data.Dataset):
    """An attribute dataset: 1,200 images, two binary attributes written into the pixels."""

    attribute_names = ["Smiling", "Male"]

    def __init__(self):
        rng = np.random.RandomState(1)
        self.attributes = rng.randint(2, size=(1200, 2))

    def __len__(self):
        return 1200

    def get_attributes(self, indices):
        return self.attributes[np.asarray(indices)]

    def get_images(self, indices):
        images = np.zeros((len(indices), 4, 4, 3), dtype=np.float32)
        images[:, 0, 0, :2] = self.attributes[np.asarray(indices)]
        return images


def test_tad_through_evaluate():
    noise = np.random.RandomState(2)
    report = evaluate(lambda im: im[:, 0, 0, :] + 0.05 * noise.randn(len(im), 3), Faces(), metrics=("tad",),
                      progress=False)
    tad = report["metrics"]["tad"]
    assert tad["captured"] == ["Smiling", "Male"] and tad["best_auroc"] == {"Smiling": 1.0, "Male": 1.0}
    assert 0.85 < tad["tad"] < 1.0
    with pytest.raises(ValueError, match="factor dataset"):
        evaluate(pixel_codes, Faces(), metrics=("mig",))


def test_cli_writes_json_and_markdown(tmp_path, monkeypatch, capsys):
    class FakePipeline:
        def encode(self, images):
            assert isinstance(images, torch.Tensor) and images.shape[1] == 3 and images.min() >= -1
            return images[:, :, 0, 0]

    monkeypatch.setattr(evaluation, "_load_pipeline", lambda path: FakePipeline())
    monkeypatch.setattr("encdiff_pipeline.data.load_factor_dataset", lambda source, **options: Squares())
    out, md = tmp_path / "report.json", tmp_path / "report.md"
    code = main(["some/pipeline", "--dataset", "procedural-shapes3d", "--out", str(out), "--markdown", str(md),
                 "--metrics", "mig", "factor_vae", "--no_progress"])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["model"] == "some/pipeline" and report["dataset"] == "procedural-shapes3d"
    assert report["metrics"]["factor_vae"]["eval_accuracy"] == 1.0
    assert report["model_index"][0]["results"][0]["metrics"][0]["name"] == "FactorVAE score"
    assert "| FactorVAE score | 1.0000 |" in md.read_text()
    assert "FactorVAE score" in capsys.readouterr().out


class Squares8(Squares):
    """The same factors in 8x8 images (the tiny encoder's input size)."""

    def get_images(self, indices):
        return np.repeat(np.repeat(super().get_images(indices), 2, axis=1), 2, axis=2)


def _tiny_pipeline():
    pipeline_module = pytest.importorskip("encdiff_pipeline.pipeline_encdiff")
    from encdiff_pipeline.models import ConceptEncoderModel, unet_from_preset

    torch.manual_seed(0)
    encoder = ConceptEncoderModel(sample_size=8, num_concepts=4, token_dim=8, width=8)
    unet = unet_from_preset("tiny", sample_size=8, cross_attention_dim=8)
    return pipeline_module.EncDiffPipeline(encoder=encoder, unet=unet)


def test_saved_pipeline_and_its_encoder_give_the_same_report(tmp_path):
    pipe = _tiny_pipeline()
    pipe.save_pretrained(tmp_path / "pipe")
    options = {"mig": SMALL["mig"], "factor_vae": SMALL["factor_vae"]}
    by_path = evaluate(str(tmp_path / "pipe"), Squares8(), metrics=("mig", "factor_vae"), metric_options=options,
                       progress=False)
    by_encoder = evaluate(pipe.encoder, Squares8(), metrics=("mig", "factor_vae"), metric_options=options,
                          progress=False)
    assert by_path["representation_dim"] == 4
    assert by_path["metrics"]["mig"]["discrete_mig"] == pytest.approx(by_encoder["metrics"]["mig"]["discrete_mig"], abs=1e-6)
    assert by_path["metrics"]["factor_vae"] == by_encoder["metrics"]["factor_vae"]
