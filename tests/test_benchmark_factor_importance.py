"""benchmarks/factor_importance.py on a tiny saved pipeline: one row per concept, C and accuracy rows."""
import os

import numpy as np
import torch

from encdiff_pipeline import ConceptEncoderModel, EncDiffPipeline
from encdiff_pipeline.models import unet_from_preset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from benchmarks import factor_importance  # noqa: E402
from encdiff_pipeline import factor_importance as analysis  # noqa: E402


def test_prints_the_importance_matrix_of_a_saved_pipeline(tmp_path, capsys, monkeypatch):
    calls = []
    fit = analysis.importance_per_factor

    def spy(x_train, y_train, x_test, y_test, *args, **kwargs):
        result = fit(x_train, y_train, x_test, y_test, *args, **kwargs)
        calls.append(((x_train, y_train, x_test, y_test), result))
        return result

    monkeypatch.setattr(analysis, "importance_per_factor", spy)
    torch.manual_seed(0)
    encoder = ConceptEncoderModel(sample_size=16, num_concepts=4, token_dim=8, width=16, mlp_hidden_dims=[16, 16])
    unet = unet_from_preset("tiny", sample_size=16, cross_attention_dim=8)
    EncDiffPipeline(encoder=encoder, unet=unet).save_pretrained(tmp_path / "pipe")
    importance = factor_importance.main([str(tmp_path / "pipe"), "--num_train", "300", "--num_test", "100"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert importance.shape == (4, 6)
    # each factor's importances are a distribution over the codes (gradient-boosted trees)
    np.testing.assert_allclose(importance.sum(axis=0), 1.0, atol=1e-6)
    assert lines[0].split()[:3] == ["code", "floor_hue", "wall_hue"] and len(lines) == 1 + 4 + 2
    assert lines[-2].split()[0] == "C" and lines[-1].split()[0] == "acc"
    accuracy = [float(v) for v in lines[-1].split()[1:]]
    assert len(accuracy) == 6 and all(0.0 <= a <= 1.0 for a in accuracy)
    # the accuracy row is the held-out accuracy: trees fit on 300 codes, scored on 100 others
    ((x_train, y_train, x_test, y_test), (fitted, train_accuracy, test_accuracy)), = calls
    assert len(x_train) == len(y_train) == 300 and len(x_test) == len(y_test) == 100
    np.testing.assert_array_equal(fitted, importance)
    np.testing.assert_allclose(accuracy, np.round(test_accuracy, 2), atol=1e-9)
    assert np.abs(np.round(train_accuracy, 2) - np.round(test_accuracy, 2)).max() >= 0.05  # the two splits differ
