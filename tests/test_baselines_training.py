"""training/train_baseline.py and the comparison harness benchmarks/disentanglement.py, on tiny settings."""
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from encdiff_pipeline.baselines import FactorVAEModel, load_baseline

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


from benchmarks import disentanglement as harness  # noqa: E402
from training import train_baseline  # noqa: E402

TINY_GRID = json.dumps({"factor_sizes": [2, 2, 2, 2, 2, 2]})


def tiny_args(output_dir, *extra):
    return train_baseline.parse_args([
        "--model", "factor_vae", "--output_dir", str(output_dir), "--image_size", "16", "--width", "8",
        "--num_latents", "3", "--train_batch_size", "4", "--max_train_steps", "4", "--validation_steps", "2",
        "--dataset_options", TINY_GRID, "--validation_dataset_options", TINY_GRID,
        "--metric_num_train", "100", "--metric_num_eval", "50", "--num_validation_images", "3", "--logging_steps", "1",
        *extra])


def test_train_baseline_logs_validations_and_saves_model_and_grids(tmp_path):
    out = tmp_path / "run"
    validations = train_baseline.main(tiny_args(out, "--gamma", "20"))
    records = [json.loads(line) for line in (out / "logs" / "train_log.jsonl").read_text().splitlines()]
    logged = [r for r in records if r["event"] == "validation"]
    assert [r["step"] for r in logged] == [2, 4] and logged == validations
    assert [r["images_seen"] for r in logged] == [8, 16]
    assert 0 < logged[0]["train_seconds"] < logged[1]["train_seconds"] <= logged[1]["seconds"]
    for r in logged:
        for key in ("factor_vae", "dci_disentanglement", "dci_completeness", "dci_informativeness", "mig"):
            assert math.isfinite(r[key]) and 0 <= r[key] <= 1, (key, r[key])
    train = [r for r in records if r["event"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["discriminator_loss"]) for r in train)

    model = load_baseline(out / "model")
    assert isinstance(model, FactorVAEModel)
    assert (model.config.gamma, model.config.num_latents, model.config.sample_size) == (20.0, 3, 16)
    # swap grid: inputs, reconstructions, one row per latent; 3 columns of 16 px enlarged to 64, 2 px padding,
    # a label column on the left and a label row on top
    (swap_w, swap_h), (trav_w, trav_h) = Image.open(out / "swap.png").size, Image.open(out / "traversal.png").size
    swap_left, swap_top = swap_w - (3 * 64 + 2 * 2), swap_h - (5 * 64 + 4 * 2)
    trav_left, trav_top = trav_w - (8 * 64 + 7 * 2), trav_h - (3 * 64 + 2 * 2)
    assert swap_left > trav_left > 0 and swap_top > 0 and trav_top > 0  # "latent 0 from image 0" is the widest label

    with pytest.raises(SystemExit, match="already holds a run"):
        train_baseline.main(tiny_args(out))


def test_train_baseline_rejects_bad_arguments(tmp_path):
    with pytest.raises(SystemExit):
        train_baseline.parse_args(["--model", "beta_vae", "--output_dir", str(tmp_path), "--max_train_steps", "1",
                                   "--gamma", "10"])
    with pytest.raises(SystemExit):
        train_baseline.parse_args(["--model", "beta_vae", "--output_dir", str(tmp_path)])  # no length given
    with pytest.raises(SystemExit, match="cannot load dataset"):
        train_baseline.main(train_baseline.parse_args(["--model", "beta_vae", "--output_dir", str(tmp_path / "x"),
                                                       "--max_train_steps", "1", "--dataset", "no-such-dataset"]))


def test_learning_curve_is_the_validation_records():
    # the training scripts log train_seconds (validation time excluded) and images_seen themselves
    records = [{"event": "train", "step": 3, "seconds": 9.0, "loss": 0.2},
               {"event": "validation", "step": 3, "train_seconds": 7.5, "images_seen": 12, "factor_vae": 0.1,
                "images": {"swap": "x.png"}}]
    assert harness.learning_curve(records) == [{"step": 3, "train_seconds": 7.5, "images_seen": 12, "factor_vae": 0.1}]


def test_summary_table_and_plot(tmp_path):
    def run(method, seed, fv, dci):
        final = {"step": 10, "train_seconds": 60.0 + seed, "images_seen": 640, "factor_vae": fv,
                 "dci_disentanglement": dci, "mig": 0.1}
        return {"method": method, "seed": seed, "curve": [dict(final, train_seconds=30.0, factor_vae=fv / 2), final],
                "final": final}

    runs = [run("encdiff", 0, 0.8, 0.5), run("encdiff", 1, 0.6, 0.3), run("beta_vae", 0, 0.7, 0.2),
            {"method": "factor_vae", "seed": 0, "curve": [], "final": None}]
    summary = harness.summarise(runs)
    assert summary["encdiff"]["factor_vae"] == {"mean": pytest.approx(0.7), "std": pytest.approx(0.1), "n": 2}
    assert summary["factor_vae"] == {"seeds": 0}
    table = harness.markdown_table(summary)
    lines = table.splitlines()
    assert lines[2].startswith("| EncDiff | 2 | 60 ± 0 | 640 ± 0 | 0.700 ± 0.100 | 0.400 ± 0.100 |")
    assert lines[3].startswith("| β-VAE | 1 | 60 | 640 | 0.700 | 0.200 |")  # one seed: no ± part
    assert lines[4].startswith("| FactorVAE | 0 | – |")
    path = tmp_path / "curves.png"
    harness.plot_curves(runs, str(path), "test")
    assert Image.open(path).size[0] > 500


def test_mean_curve_importance_table_and_imported_runs(tmp_path):
    runs = [{"method": "encdiff", "seed": s, "curve": [{"train_seconds": 10.0 + s, "factor_vae": 0.2 + s / 10},
                                                        {"train_seconds": 20.0 + s, "factor_vae": 0.4 + s / 10}][:2 - s]}
            for s in (0, 1)]
    # the mean over seeds, as far as every seed goes (seed 1 has one point)
    assert harness.mean_curve(runs, "train_seconds", "factor_vae") == (pytest.approx([10.5]), pytest.approx([0.25]))
    for run, acc in zip(runs, (0.5, 0.7)):
        run.update(final=run["curve"][-1], importance={"factor_names": ["a", "b"], "accuracy": [acc, 1.0],
                                                       "completeness": [0.2, 0.4]})
    summary = harness.summarise(runs)
    assert summary["encdiff"]["importance"]["accuracy"] == pytest.approx([0.6, 1.0])
    assert harness.importance_table(summary).splitlines()[-1] == "| EncDiff | 0.60 / 0.20 | 1.00 / 0.40 |"
    earlier = tmp_path / "results.json"
    final = {"train_seconds": 1800.0, "factor_vae": 0.5}
    earlier.write_text(json.dumps({"machine": {"processor": "x86_64", "torch": "2.13.0+cpu"}, "runs": [
        {"method": "beta_vae", "seed": 0, "run_dir": "runs/beta_vae/seed0", "curve": [final], "final": final},
        {"method": "factor_vae", "seed": 0, "run_dir": "runs/factor_vae/seed0", "curve": [final], "final": final}]}))
    args = harness.parse_args(["--methods", "factor_vae", "--seeds", "1", "--output_dir", str(tmp_path / "out"),
                               "--import_results", str(earlier), "--import_methods", "beta_vae"])
    collected = harness.collect(args, args.methods)
    assert [(r["method"], r["final"]) for r in collected] == [("factor_vae", None), ("beta_vae", final)]
    assert harness.summarise(collected)["beta_vae"]["imported"] is True
    with pytest.raises(SystemExit):  # a method both imported and trained
        harness.parse_args(["--methods", "beta_vae", "--import_results", str(earlier), "--import_methods", "beta_vae"])


def test_ablations_plan_skips_the_run_that_repeats_encdiff():
    args = harness.parse_args(["--methods", "encdiff,beta_vae", "--ablations", "all"])
    methods, skipped = harness.plan_methods(args)
    # the small preset trains with the cosine schedule: encdiff_cosine would repeat the encdiff run
    assert methods[:2] == ["encdiff", "beta_vae"] and "encdiff_cosine" not in methods
    assert {"encdiff_linear", "encdiff_sqrt_linear", "encdiff_sqrt", "encdiff_vector"} <= set(methods)
    assert any(s.startswith("encdiff_cosine: the same run as encdiff") for s in skipped)
    cmd = harness.encdiff_command(args, "encdiff_sqrt", 1, "/tmp/x/runs/encdiff_sqrt/seed1")
    assert cmd[cmd.index("--beta_schedule") + 1] == "sqrt" and cmd[cmd.index("--seed") + 1] == "1"
    assert cmd[cmd.index("--max_train_minutes") + 1] == "20.0"
    held = json.loads(cmd[cmd.index("--validation_dataset_options") + 1])
    assert held["factor_sizes"] == harness.HELD_GRID
    baseline = harness.baseline_command(args, "beta_vae", 1, "/tmp/x/runs/beta_vae/seed1")
    assert json.loads(baseline[baseline.index("--validation_dataset_options") + 1])["factor_sizes"] == harness.HELD_GRID
    assert baseline[baseline.index("--metric_num_train") + 1] == cmd[cmd.index("--metric_num_train") + 1] == "10000"


def test_harness_passes_a_real_dataset_to_every_script():
    args = harness.parse_args(["--methods", "encdiff,beta_vae", "--dataset", "data/3dshapes.h5"])
    for cmd in (harness.encdiff_command(args, "encdiff", 0, "/tmp/x/runs/encdiff/seed0"),
                harness.baseline_command(args, "beta_vae", 0, "/tmp/x/runs/beta_vae/seed0")):
        assert cmd[cmd.index("--dataset") + 1] == "data/3dshapes.h5"
        assert "--validation_dataset_options" not in cmd and "--dataset_options" not in cmd  # the scripts resize


@pytest.mark.slow
def test_harness_smoke_runs_baselines_end_to_end(tmp_path):
    args = harness.parse_args(["--smoke", "--methods", "beta_vae,beta_tcvae", "--jobs", "2", "--output_dir", str(tmp_path)])
    results = harness.main(args)  # both methods train at once
    assert [(x["method"], x["exit_code"]) for x in results["launches"]] == [("beta_vae", 0), ("beta_tcvae", 0)]
    assert results["summary"]["beta_vae"]["seeds"] == 1
    for name in ("results.json", "results.md", "learning_curves.png", "grids/beta_vae_swap.png",
                 "grids/beta_tcvae_traversal.png"):
        assert (tmp_path / name).exists(), name
    assert np.isfinite(results["summary"]["beta_tcvae"]["dci_disentanglement"]["mean"])
