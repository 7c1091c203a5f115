"""Real 64x64 files at a 16x16 preset: the training scripts resize them, `encdiff-evaluate RUN` reads the run."""
from __future__ import annotations

import argparse
import itertools
import json
import os

import h5py
import numpy as np
from PIL import Image

from encdiff_pipeline.data.run_data import HELD_GRID, held_dataset_spec, run_image_size
from encdiff_pipeline.evaluation import main as evaluate_main
from encdiff_pipeline.evaluation import run_dataset
from tests.test_data_files import block_mean, write_dsprites
from tests.test_training_encdiff import TRAIN, _launch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VALUES = [[0.0, 0.5], [0.1, 0.9], [0.2, 0.3], [0.75, 1.25], [0.0, 3.0], [-30.0, 30.0]]  # 2 classes per factor


def write_h5(path, seed=0):
    """A shuffled 64-point Shapes3D sub-grid of 64x64 images."""
    rng = np.random.RandomState(seed)
    labels = np.array(list(itertools.product(*VALUES)))[rng.permutation(64)]
    images = rng.randint(0, 256, size=(64, 64, 64, 3)).astype(np.uint8)
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images)
        f.create_dataset("labels", data=labels)


def _factor_data():
    from encdiff_pipeline.training import factor_data

    return factor_data


def test_load_datasets_resizes_dsprites_and_says_so(tmp_path, capsys):
    path = tmp_path / "dsprites.npz"
    imgs, _, _ = write_dsprites(path, False, np.random.RandomState(0), side=64)
    args = argparse.Namespace(dataset=str(path), dataset_options={"channels": 3}, validation_dataset=None,
                              validation_dataset_options=None)
    train, held = _factor_data().load_datasets(args, image_size=16)
    out = capsys.readouterr().out
    assert "resizing dsprites.npz from 64x64 to 16x16 (box filter)" in out
    assert "resizing held set dsprites.npz from 64x64 to 16x16 (box filter)" in out
    for data in (train, held):
        images = data.get_images(np.arange(len(data)))
        assert images.shape == (144, 16, 16, 3)
        np.testing.assert_allclose(images[..., 2], block_mean(imgs[..., None].astype(np.float64), 4)[..., 0], atol=1e-6)


def test_held_set_rules():
    procedural = {"dataset": "procedural-shapes3d", "dataset_options": {}, "validation_dataset_options": None,
                  "preset_spec": {"image_size": 16}}
    assert held_dataset_spec(procedural, run_image_size(procedural)) == (
        "procedural-shapes3d", {"factor_sizes": HELD_GRID, "image_size": 16})
    given = {**procedural, "validation_dataset_options": {"image_size": 32, "factor_sizes": [2] * 6}}
    assert held_dataset_spec(given, 16) == ("procedural-shapes3d", {"image_size": 32, "factor_sizes": [2] * 6})
    baseline = {"dataset": "a.h5", "dataset_options": {}, "validation_dataset": "b.h5", "image_size": 32}
    assert held_dataset_spec(baseline, run_image_size(baseline)) == ("b.h5", {"image_size": 32})


def test_train_encdiff_on_a_64px_h5_then_evaluate_the_run_with_no_option(tmp_path):
    h5 = tmp_path / "3dshapes.h5"
    write_h5(h5)
    run = str(tmp_path / "run")
    proc = _launch([TRAIN, "--dataset", str(h5), "--preset", "tiny", "--output_dir", run, "--max_train_steps", "3",
                    "--train_batch_size", "4", "--validation_inference_steps", "2", "--num_validation_images", "2",
                    "--metric_num_train", "100", "--metric_num_eval", "50"])
    log = proc.stdout + proc.stderr
    assert "resizing 3dshapes.h5 from 64x64 to 16x16 (box filter)" in log
    assert "resizing held set 3dshapes.h5 from 64x64 to 16x16 (box filter)" in log
    with open(os.path.join(run, "encoder", "config.json")) as f:
        assert json.load(f)["sample_size"] == 16
    # validation grids: 16 px images enlarged to 64 px cells, with a label column and row
    width, height = Image.open(os.path.join(run, "validation", "step-000003", "swap.png")).size
    assert width > 2 * 64 + 2 and height > 5 * 64 + 4 * 2  # 2 images; input row + 4 concept rows
    # what the run validated on: the same file, every grid point, at 16x16
    source, options = run_dataset(run)
    assert (source, options) == (str(h5), {"image_size": 16})
    assert run_dataset(run, dataset_options={"image_size": 32}) == (str(h5), {"image_size": 32})  # options override
    assert evaluate_main([run]) == 0
    with open(os.path.join(run, "report.json")) as f:
        report = json.load(f)
    assert report["dataset"] == str(h5) and report["num_images"] == 64 and report["representation_dim"] == 4
    assert set(report["metrics"]) == {"factor_vae", "dci", "mig", "sap", "modularity"}
    assert os.path.isfile(os.path.join(run, "report.md"))
