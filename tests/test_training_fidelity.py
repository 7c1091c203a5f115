"""train_encdiff.py's generation-fidelity and guidance flags: the run's card and files, and refusals."""
import json
import os

import numpy as np
import pytest
import torch

from encdiff_pipeline.training.diffusion_objective import DiffusionObjective
from encdiff_pipeline.noise_schedules import make_noise_scheduler
from tests.test_training_encdiff import COMMON, TRAIN, _env, _launch

GRID = json.dumps({"image_size": 16, "factor_sizes": [2, 2, 2, 2, 2, 2]})
FIDELITY = json.dumps({"num_images": 8, "num_traversals": 1, "num_importance_points": 48,
                       "probe_options": {"steps": 20, "batch_size": 8, "width": 8}})


def test_generation_fidelity_of_the_final_pipeline_goes_to_its_file_and_card(tmp_path):
    from encdiff_pipeline.pipeline_encdiff import EncDiffPipeline

    run = str(tmp_path / "run")
    _launch([TRAIN, *COMMON, "--dataset_options", GRID, "--output_dir", run, "--max_train_steps", "2",
             "--token_dropout", "0.5", "--guidance_scale", "1.5", "--generation_fidelity", "--fidelity_options", FIDELITY],
            env=_env(ENCDIFF_CACHE=str(tmp_path / "cache")))
    with open(os.path.join(run, "generation_fidelity.json"), encoding="utf-8") as f:
        report = json.load(f)
    assert report["num_images"] == 8 and set(report["reconstruction"]) == {
        "floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"}
    assert all(v is None or 0 <= v <= 1 for key in ("real", "reconstruction", "swap_donor") for v in report[key].values())
    assert report["sampling"] == {"num_inference_steps": 2}
    card = open(os.path.join(run, "README.md"), encoding="utf-8").read()
    worst = min(v for v in report["reconstruction"].values() if v is not None)
    assert "Generation fidelity" in card and f"| Reconstruction read (worst factor) | {round(worst, 4)} |" in card
    assert "| swap: donor's class |" in card
    assert os.listdir(tmp_path / "cache" / "factor_probes")  # the probe was cached where ENCDIFF_CACHE says
    assert EncDiffPipeline.from_pretrained(run).config.guidance_scale == 1.5


@pytest.mark.parametrize("extra, message", [
    (["--guidance_scale", "2"], "needs --token_dropout > 0"),
    (["--token_dropout", "1.0"], r"token_dropout must be in \[0, 1\)"),
    (["--token_dropout", "0.1", "--guidance_scale", "nan"], "guidance_scale must be a finite number"),
    (["--fidelity_options", '{"num_images": 4}'], "--fidelity_options needs --generation_fidelity"),
    (["--generation_fidelity", "--fidelity_options", "[1]"], "JSON object"),
])
def test_guidance_and_fidelity_flags_are_checked_up_front(tmp_path, capsys, extra, message):
    from training import train_encdiff

    with pytest.raises(SystemExit):
        train_encdiff.parse_args(["--preset", "tiny", "--output_dir", str(tmp_path / "r"), "--max_train_steps", "2", *extra])
    err = capsys.readouterr().err
    assert message.replace("\\", "") in err, err


def test_token_dropout_zeroes_whole_images_with_the_generators_draw():
    objective = DiffusionObjective(make_noise_scheduler("cosine"), token_dropout=0.3)
    tokens = torch.randn(1000, 4, 8) + 5
    dropped = objective.drop_tokens(tokens, torch.Generator().manual_seed(0))
    keep = torch.rand(1000, generator=torch.Generator().manual_seed(0)) >= 0.3  # the same draw, by hand
    assert torch.equal(dropped[keep], tokens[keep]) and torch.count_nonzero(dropped[~keep]) == 0
    assert 0.25 < (~keep).float().mean() < 0.35
    plain = DiffusionObjective(make_noise_scheduler("cosine"))
    generator = torch.Generator().manual_seed(0)
    assert plain.drop_tokens(tokens, generator) is tokens and torch.equal(
        torch.rand(3, generator=generator), torch.rand(3, generator=torch.Generator().manual_seed(0)))  # no draw
