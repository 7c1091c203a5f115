"""The helpers of training/: noise schedules, deterministic batches, run folders, presets (fast, in-process)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from encdiff_pipeline.noise_schedules import NOISE_SCHEDULES, make_noise_scheduler
from encdiff_pipeline.training.batches import BatchOrder, step_generator
from encdiff_pipeline.training.checkpointing import check_run_folder, latest_checkpoint, list_checkpoints, write_run_settings
from encdiff_pipeline.training.presets import ENCDIFF_PRESETS, load_preset


def test_noise_schedules_match_the_release_formulas():
    b0, b1, T = 0.0015, 0.0155, 1000
    expected = {
        "linear": np.linspace(b0**0.5, b1**0.5, T) ** 2,
        "sqrt_linear": np.linspace(b0, b1, T),
        "sqrt": np.linspace(b0, b1, T) ** 0.5,
    }
    for name, betas in expected.items():
        np.testing.assert_allclose(make_noise_scheduler(name).betas.numpy(), betas, rtol=1e-5)
    # cosine (s = 0.008, clipped at 0.999): alpha_bar(t) = cos((t/T + s)/(1 + s) * pi/2)^2
    s = 0.008
    alpha_bar = lambda t: np.cos((t / T + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731
    t = np.arange(T)
    cosine = np.minimum(1 - alpha_bar(t + 1) / alpha_bar(t), 0.999)
    np.testing.assert_allclose(make_noise_scheduler("cosine").betas.numpy(), cosine, rtol=1e-4, atol=1e-7)
    assert set(NOISE_SCHEDULES) == {"linear", "sqrt_linear", "sqrt", "cosine"}
    with pytest.raises(ValueError, match="unknown noise schedule 'quadratic'"):
        make_noise_scheduler("quadratic")


def test_batch_order_partitions_each_epoch_across_processes_and_is_a_pure_function():
    num_items, batch, procs = 50, 4, 2
    orders = [BatchOrder(num_items, batch, seed=7, num_processes=procs, process_index=r) for r in range(procs)]
    assert orders[0].batches_per_epoch == 6  # 50 // 8, the tail of 2 items dropped
    epoch0 = np.concatenate([o.indices(k) for k in range(6) for o in orders])
    assert len(epoch0) == 48 and len(np.unique(epoch0)) == 48  # no item twice in an epoch
    epoch1 = np.concatenate([o.indices(k) for k in range(6, 12) for o in orders])
    assert len(np.unique(epoch1)) == 48 and not np.array_equal(epoch0, epoch1)  # reshuffled
    fresh = BatchOrder(num_items, batch, seed=7, num_processes=procs, process_index=1)
    np.testing.assert_array_equal(fresh.indices(9), orders[1].indices(9))  # resuming at k=9 sees the same items
    assert not np.array_equal(BatchOrder(num_items, batch, seed=8).indices(0), BatchOrder(num_items, batch, seed=7).indices(0))
    with pytest.raises(ValueError, match="fewer than one global batch"):
        BatchOrder(7, 4, seed=0, num_processes=2)


def test_step_generator_is_keyed_by_seed_step_and_process():
    draw = lambda *key: torch.randn(5, generator=step_generator(*key))  # noqa: E731
    torch.testing.assert_close(draw(0, 3, 0), draw(0, 3, 0))
    for other in [(1, 3, 0), (0, 4, 0), (0, 3, 1)]:
        assert not torch.allclose(draw(0, 3, 0), draw(*other))


def _fake_checkpoint(path):
    """A checkpoint folder that passes the intact check: a readable torch-style zip archive."""
    import zipfile

    os.makedirs(path)
    with zipfile.ZipFile(os.path.join(path, "optimizer.bin"), "w") as archive:
        archive.writestr("archive/data.pkl", b"state")


def test_run_folder_rules(tmp_path):
    run = str(tmp_path / "run")
    settings = {"seed": 1, "dataset": "procedural-shapes3d"}
    assert check_run_folder(run, None, settings, ["seed"], "args.json") is None  # fresh, missing folder
    write_run_settings(run, settings, "args.json")
    with pytest.raises(SystemExit, match=r"nothing to resume .*checkpoints found: none"):
        check_run_folder(run, "latest", settings, ["seed"], "args.json")
    # only the settings of a start that never checkpointed: cleared, not blocking
    assert check_run_folder(run, None, settings, ["seed"], "args.json") is None and os.listdir(run) == []
    write_run_settings(run, settings, "args.json")
    for name in ("checkpoint-10", "checkpoint-2"):
        _fake_checkpoint(os.path.join(run, name))
    os.makedirs(os.path.join(run, "checkpoint-30.tmp"))
    with pytest.raises(SystemExit, match="already holds another run"):
        check_run_folder(run, None, settings, ["seed"], "args.json")
    assert [os.path.basename(c) for c in list_checkpoints(run)] == ["checkpoint-2", "checkpoint-10"]
    assert check_run_folder(run, "latest", settings, ["seed"], "args.json") == latest_checkpoint(run)
    assert latest_checkpoint(run).endswith("checkpoint-10")  # numeric order; the .tmp leftover is ignored
    with pytest.raises(SystemExit, match=r"different settings .*'seed': \(1, 2\)"):
        check_run_folder(run, "latest", {**settings, "seed": 2}, ["seed"], "args.json")
    # a setting the saved run lacks is a different setting (no defaults for runs of older versions)
    with pytest.raises(SystemExit, match=r"'mode': \(None, 'a'\)"):
        check_run_folder(run, "latest", {**settings, "mode": "a"}, ["seed", "mode"], "args.json")


def test_presets_and_config_files(tmp_path):
    for name in ENCDIFF_PRESETS:
        preset = load_preset(name)
        assert preset["unet_preset"] in ("tiny", "small", "paper") and preset["image_size"] in (16, 32, 64)
    assert load_preset("paper")["latent"] and load_preset("paper")["encoder"]["num_concepts"] == 20
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"image_size": 32, "encoder": {"num_concepts": 6}, "unet_preset": "small"}))
    assert load_preset("tiny", str(config))["encoder"] == {"num_concepts": 6}  # the file wins over --preset
    config.write_text(json.dumps({"image_size": 32, "encoder": {}, "unet_preset": "small", "lr": 1}))
    with pytest.raises(ValueError, match=r"unknown keys \['lr'\]"):
        load_preset(None, str(config))
    config.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_preset(None, str(config))
    with pytest.raises(ValueError, match="no such file"):
        load_preset(None, str(tmp_path / "missing.json"))


def test_concept_metrics_reduce_vector_tokens_with_pca_under_seed_0():
    """concept_metrics = the metrics on the PCA-reduced (one value per token) table, each with RandomState(0)."""
    from encdiff_pipeline.training.validation import concept_metrics

    from encdiff_pipeline import ConceptEncoderModel
    from encdiff_pipeline.data import load_factor_dataset
    from encdiff_pipeline.evaluation import reduce_vector_tokens
    from encdiff_pipeline.metrics import METRICS

    torch.manual_seed(0)
    encoder = ConceptEncoderModel(sample_size=16, num_concepts=3, token_dim=4, width=8, token_type="vector")
    held = load_factor_dataset("procedural-shapes3d", image_size=16, factor_sizes=[2, 2, 2, 2, 2, 2])
    scores = concept_metrics(encoder, held, metrics=["mig", "dci"], num_train=64, num_eval=32)
    assert encoder.training  # restored

    encoder.eval()
    images = torch.from_numpy(held.get_images(np.arange(len(held)))).permute(0, 3, 1, 2) * 2 - 1
    with torch.no_grad():
        tokens = encoder.encode_concepts(images).numpy()
    assert tokens.shape == (64, 3, 4)
    table = reduce_vector_tokens(tokens)  # (64, 3): each token on its first principal component
    mig = METRICS["mig"](held, table, np.random.RandomState(0), num_train=64)
    dci = METRICS["dci"](held, table, np.random.RandomState(0), num_train=64, num_test=32)
    assert scores["mig"] == pytest.approx(mig["discrete_mig"], abs=1e-9)
    assert scores["dci_disentanglement"] == pytest.approx(dci["disentanglement"], abs=1e-9)
    assert scores["dci_informativeness"] == pytest.approx(dci["informativeness_test"], abs=1e-9)
    # another seed is another draw: the default really is 0, not whatever seed the run trains with
    other = concept_metrics(encoder, held, 1, ["mig", "dci"], 64, 32)
    assert other["mig"] == pytest.approx(METRICS["mig"](held, table, np.random.RandomState(1), num_train=64)["discrete_mig"])
    assert (other["mig"], other["dci_disentanglement"]) != (scores["mig"], scores["dci_disentanglement"])
