"""`encdiff-evaluate` and `encdiff-sample-sheet` under careless use: one line per user error, output
paths checked before any work, results shown before files are written, reports that follow the umask."""
import json
import os
from pathlib import Path

import pytest

from encdiff_pipeline import cli as cli_module
from encdiff_pipeline import evaluation
from encdiff_pipeline.cli import run_cli
from encdiff_pipeline.data.sample_sheet import main as sample_sheet_main
from encdiff_pipeline.evaluation import cli
from tests import HANG_GUARD_S
from tests.test_evaluation import Squares
from tests.test_pipeline_encdiff import make_tiny_pipeline

TINY_GRID = ["--dataset_options", '{"factor_sizes": [2, 2, 2, 2, 2, 2], "image_size": 8}']


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli") / "pipe"
    make_tiny_pipeline().save_pretrained(folder)
    return folder


def one_line_error(capsys, code, *fragments):
    """The command failed with exactly one `prog: error: ...` line naming every fragment."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, err
    assert len(lines) == 1 and ": error: " in lines[0] and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def no_evaluation(monkeypatch):
    """Fail the test if the evaluation itself starts (the error had to come first)."""
    def refuse(*args, **kwargs):
        raise AssertionError("the evaluation ran although the arguments were already known to be bad")
    monkeypatch.setattr(evaluation, "evaluate", refuse)


def test_folder_that_is_not_a_pipeline(tmp_path, capsys, no_evaluation):
    code = cli([str(tmp_path), "--out", str(tmp_path / "r.json")])
    one_line_error(capsys, code, "has no model_index.json", "not a saved pipeline folder")


@pytest.mark.parametrize("where", [".", "model"])
def test_baseline_run_folder_is_named(tmp_path, capsys, no_evaluation, where):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"_class_name": "BetaVAEModel"}))
    code = cli([str(tmp_path / where if where != "." else tmp_path), "--out", str(tmp_path / "r.json")])
    one_line_error(capsys, code, "BetaVAEModel baseline, not an EncDiff pipeline", "load_baseline")


def test_mistyped_local_path_is_not_a_hub_id(tmp_path, capsys, monkeypatch, no_evaluation):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    code = cli(["runs/typo", "--out", "r.json"])
    one_line_error(capsys, code, "runs/typo is not a folder", "not looking it up on the Hub")


@pytest.mark.parametrize("argv, message", [
    (["--batch_size", "0"], "--batch_size must be >= 1"),
    (["--seed", "-1"], "--seed must be in [0, 2**32 - 1]"),
    (["--metrics", "bogus"], "unknown metrics ['bogus']"),
    (["--dataset_options", '{"factor_sizes": [2,2,2,2,2,2]'], "is not valid JSON"),
    (["--dataset_options", '["image_size"]'], "is not a JSON object"),
    (["--dataset_options", '{"image_size": NaN}'], "NaN is not a JSON number"),
])
def test_bad_options_are_argparse_errors(saved, capsys, argv, message, no_evaluation):
    with pytest.raises(SystemExit) as info:
        cli([str(saved)] + argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("options, message", [
    (["--dataset_options", '{"image_size": "abc"}'], "image_size must be an integer"),
    (["--dataset_options", '{"image_sise": 16}'], "image_sise"),
    (["--dataset_options", '{"factor_sizes": [5, 5]}'], "factor_sizes needs 6 entries"),
    (["--dataset_options", '{"image_size": 16, "factor_sizes": [2, 2, 2, 2, 2, 2]}'], "Expected 8x8 images"),
])
def test_dataset_and_size_errors_are_one_line(saved, tmp_path, capsys, options, message):
    code = cli([str(saved), "--out", str(tmp_path / "r.json"), "--metrics", "mig", "--no_progress"] + options)
    one_line_error(capsys, code, message)
    assert not (tmp_path / "r.json").exists()


def test_nan_weights_are_one_line(saved, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "nan"
    shutil.copytree(saved, folder)
    weights = folder / "encoder" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(weights))
    state["concept_head.weight"].fill_(float("nan"))
    save_file(state, str(weights))
    code = cli([str(folder), "--out", str(tmp_path / "r.json"), "--metrics", "mig"] + TINY_GRID)
    one_line_error(capsys, code, "NaN or infinite")


def test_out_that_is_a_folder_fails_before_the_evaluation(saved, tmp_path, capsys, no_evaluation):
    (tmp_path / "adir").mkdir()
    code = cli([str(saved), "--out", str(tmp_path / "adir"), "--metrics", "mig"] + TINY_GRID)
    one_line_error(capsys, code, "--out", "is a folder")


def test_out_on_a_read_only_disk_fails_before_the_evaluation(saved, tmp_path, capsys, monkeypatch, no_evaluation):
    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system")
    monkeypatch.setattr(cli_module.tempfile, "mkstemp", read_only)
    code = cli([str(saved), "--out", str(tmp_path / "r.json"), "--metrics", "mig"] + TINY_GRID)
    one_line_error(capsys, code, "--out", "cannot be written: Read-only file system")


def test_out_equal_to_markdown_is_refused(saved, tmp_path, capsys, no_evaluation):
    same = str(tmp_path / "same.txt")
    code = cli([str(saved), "--out", same, "--markdown", same, "--metrics", "mig"] + TINY_GRID)
    one_line_error(capsys, code, "--out and --markdown are the same file")
    assert not os.path.exists(same)


@pytest.mark.parametrize("option, inside", [
    ("--out", "model_index.json"), ("--markdown", "unet/diffusion_pytorch_model.safetensors"),
    ("--out", "encoder/config.json"), ("--markdown", "README.md"), ("--out", "unet/new_report.json"),
    ("--out", "checkpoint-2/optimizer.bin"),
])
def test_outputs_inside_the_evaluated_pipeline_are_refused(saved, tmp_path, capsys, no_evaluation, option, inside):
    """F08, F09: a report must not overwrite the pipeline it scores."""
    import shutil

    folder = tmp_path / "pipe"
    shutil.copytree(saved, folder)
    before = {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    other = "--markdown" if option == "--out" else "--out"
    code = cli([str(folder), option, str(folder / inside), other, str(tmp_path / "other"), "--metrics", "mig"] + TINY_GRID)
    one_line_error(capsys, code, option, "is inside the evaluated pipeline", "give a path outside it")
    assert {p: p.read_bytes() for p in folder.rglob("*") if p.is_file()} == before


def test_default_report_beside_the_pipeline_is_still_written(saved, tmp_path, capsys):
    import shutil

    folder = tmp_path / "pipe"
    shutil.copytree(saved, folder)
    for _ in range(2):  # the second run replaces its own report
        assert cli([str(folder), "--metrics", "mig", "--no_progress"] + TINY_GRID) == 0
    assert "MIG" in (folder / "report.md").read_text() and json.loads((folder / "report.json").read_text())


def test_outputs_that_are_the_input_dataset_are_refused(tmp_path, capsys, saved, no_evaluation):
    data = tmp_path / "data.npz"
    data.write_bytes(b"precious")
    code = cli([str(saved), "--dataset", str(data), "--out", str(data), "--metrics", "mig"])
    one_line_error(capsys, code, "--out", "is --dataset itself")
    code = sample_sheet_main(["--dataset", str(data), "--out", str(data)])
    one_line_error(capsys, code, "--out", "is --dataset itself")
    assert data.read_bytes() == b"precious"


def test_sample_sheet_scale_is_bounded(tmp_path, capsys):
    code = sample_sheet_main(["--image_size", "8", "--scale", "100000", "--out", str(tmp_path / "s.png")])
    one_line_error(capsys, code, "--scale", "expected at most 2048 px per image")


class FakePipeline:
    def encode(self, images):
        return images[:, :, 0, 0]


def test_results_are_printed_before_a_failing_write(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(evaluation, "_load_pipeline", lambda path: FakePipeline())
    monkeypatch.setattr("encdiff_pipeline.data.load_factor_dataset", lambda source, **options: Squares())

    def disk_full(path, text):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(evaluation, "write_text", disk_full)
    code = cli(["some/pipeline", "--dataset", "x", "--out", str(tmp_path / "r.json"), "--metrics", "mig",
                "--no_progress"])
    captured = capsys.readouterr()
    assert code == 1 and "No space left on device" in captured.err
    assert "| MIG |" in captured.out  # the finished evaluation is not lost


def test_reports_follow_the_umask(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(evaluation, "_load_pipeline", lambda path: FakePipeline())
    monkeypatch.setattr("encdiff_pipeline.data.load_factor_dataset", lambda source, **options: Squares())
    old = os.umask(0o022)
    try:
        code = cli(["some/pipeline", "--dataset", "x", "--out", str(tmp_path / "r.json"),
                    "--markdown", str(tmp_path / "r.md"), "--metrics", "mig", "--no_progress"])
    finally:
        os.umask(old)
    assert code == 0, capsys.readouterr().err
    for name in ("r.json", "r.md"):
        assert oct((tmp_path / name).stat().st_mode & 0o777) == oct(0o644)


def test_sample_sheet_user_errors_are_one_line(tmp_path, capsys):
    code = sample_sheet_main(["--dataset", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "s.png")])
    one_line_error(capsys, code, "nope.h5")
    (tmp_path / "adir").mkdir()
    code = sample_sheet_main(["--out", str(tmp_path / "adir"), "--image_size", "8"])
    one_line_error(capsys, code, "--out", "is a folder")
    with pytest.raises(SystemExit):
        sample_sheet_main(["--columns", "0"])
    assert "--columns must be >= 1" in capsys.readouterr().err


def test_sample_sheet_follows_the_umask(tmp_path, capsys):
    old = os.umask(0o022)
    try:
        code = sample_sheet_main(["--out", str(tmp_path / "s.png"), "--image_size", "32", "--columns", "2"])
    finally:
        os.umask(old)
    assert code == 0, capsys.readouterr().err
    assert oct((tmp_path / "s.png").stat().st_mode & 0o777) == oct(0o644)


def test_run_cli_boundary(capsys):
    def user_error():
        raise FileNotFoundError("data.h5 not found\nsecond line")

    def bug():
        raise ZeroDivisionError("division by zero")

    assert run_cli(lambda: None, prog="t") == 0
    assert run_cli(lambda: 3, prog="t") == 3
    assert run_cli(user_error, prog="t") == 1
    assert capsys.readouterr().err == "t: error: data.h5 not found\n"
    assert run_cli(bug, prog="t") == 1
    assert "t: error: division by zero (unexpected ZeroDivisionError; rerun with ENCDIFF_TRACEBACK=1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run_cli(lambda: (_ for _ in ()).throw(SystemExit(2)), prog="t")
    os.environ["ENCDIFF_TRACEBACK"] = "1"
    try:
        with pytest.raises(ZeroDivisionError):
            run_cli(bug, prog="t")
    finally:
        del os.environ["ENCDIFF_TRACEBACK"]


def test_every_script_ends_in_the_error_boundary():
    """Benchmarks and training scripts run `main` through `encdiff_pipeline.cli` (or `run_training`)."""
    root = Path(__file__).resolve().parents[1]
    scripts = ([p for p in sorted((root / "benchmarks").glob("*.py")) if p.name != "__init__.py"]
               + [root / "training" / name for name in ("train_encdiff.py", "train_autoencoder.py", "train_baseline.py")]
               + [root / "encdiff_pipeline" / "training" / "latent_cache.py"])
    unguarded = []
    for script in scripts:
        tail = script.read_text(encoding="utf-8").split('if __name__ == "__main__":')[-1]
        if not any(guard in tail for guard in ("exit_with(main", "run_cli(main", "run_training(main")):
            unguarded.append(script.name)
    assert not unguarded


def test_benchmark_user_error_is_one_line(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(root)}
    env.pop("ENCDIFF_TRACEBACK", None)
    proc = subprocess.run([sys.executable, str(root / "benchmarks" / "factor_importance.py"), str(tmp_path / "nope")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[-1].startswith("factor_importance.py: error: ") and "nope" in lines[-1], proc.stderr


def test_latent_cache_output_may_not_overwrite_its_inputs(tmp_path, capsys):
    from encdiff_pipeline.training.latent_cache import main as cache_main

    vae = tmp_path / "vq"
    vae.mkdir()
    (vae / "config.json").write_text("{}")
    data = tmp_path / "data.h5"
    data.write_bytes(b"precious")
    for output, message in ((vae / "diffusion_pytorch_model.safetensors", "is inside --vae_path"),
                            (data, "is --dataset itself")):
        with pytest.raises(SystemExit):
            cache_main(["--vae_path", str(vae), "--dataset", str(data), "--output", str(output)])
        assert message in capsys.readouterr().err
    assert data.read_bytes() == b"precious" and sorted(p.name for p in vae.iterdir()) == ["config.json"]
