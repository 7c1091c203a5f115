"""A hostile folder never runs its own Python, even in a terminal where someone answers `y`.

transformers offers to run a model folder's own code (its `auto_map`) with a "[y/N]" prompt when it
is loaded from an interactive terminal. These tests load hostile folders in a child process whose
terminal is a pseudo-terminal that answers `y` to everything, and check that the folder's module
never ran (it would write a marker file) and that the error names the refused class.
"""
import json
import os
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from encdiff_pipeline.loading_allowlist import allowed_component_class
from tests import HANG_GUARD_S

pty = pytest.importorskip("pty")  # POSIX only

REPO = Path(__file__).resolve().parents[1]

EVIL_MODULE = """\
import os
open(os.environ["EVIL_MARKER"], "w").write("ran")
from transformers import PretrainedConfig, PreTrainedModel
class EvilConfig(PretrainedConfig):
    model_type = "evil"
class EvilModel(PreTrainedModel):
    config_class = EvilConfig
"""
AUTO_MAP = {"AutoConfig": "evilmod.EvilConfig", "AutoModel": "evilmod.EvilModel"}


def run_answering_yes(code: str, cwd: Path, marker: Path, timeout: float = HANG_GUARD_S) -> str:
    """Run `python -c code` with a pseudo-terminal as stdin/stdout/stderr, typing `y` + Enter every
    half second; return everything it printed."""
    master, slave = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", EVIL_MARKER=str(marker))
    env.pop("TRANSFORMERS_TRUST_REMOTE_CODE", None)
    process = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=slave, cwd=cwd,
                               env=env, close_fds=True, start_new_session=True)
    os.close(slave)
    output = b""
    deadline = time.monotonic() + timeout
    last_answer = 0.0
    try:
        while True:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the child did not finish within {timeout} s; output:\n{output.decode(errors='replace')}")
            exited = process.poll() is not None
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # every copy of the terminal's other end is closed
                    break
                if not chunk:
                    break
                output += chunk
                continue
            if exited:  # and nothing left to read
                break
            if time.monotonic() - last_answer > 0.5:
                os.write(master, b"y\n")
                last_answer = time.monotonic()
    finally:
        process.wait(timeout=HANG_GUARD_S)
        os.close(master)
    return output.decode(errors="replace")


def test_pty_hostile_pipeline_folder_runs_no_code(tmp_path):
    marker = tmp_path / "PWNED"
    folder = tmp_path / "hostile"
    code = textwrap.dedent(f"""
        import json, warnings
        warnings.simplefilter("ignore")
        from tests.test_pipeline_encdiff import make_tiny_pipeline
        from encdiff_pipeline import EncDiffPipeline
        folder = {str(folder)!r}
        make_tiny_pipeline().save_pretrained(folder)
        index = json.load(open(folder + "/model_index.json"))
        index["unet"] = ["transformers", "AutoModel"]
        json.dump(index, open(folder + "/model_index.json", "w"))
        config = json.load(open(folder + "/unet/config.json"))
        config.update(model_type="evil", auto_map={AUTO_MAP!r})
        json.dump(config, open(folder + "/unet/config.json", "w"))
        open(folder + "/unet/evilmod.py", "w").write({EVIL_MODULE!r})
        for strict in (True, False):
            try:
                EncDiffPipeline.from_pretrained(folder, strict=strict)
                print("LOADED")
            except Exception as error:
                print("REFUSED:", error)
    """)
    output = run_answering_yes(code, REPO, marker)
    assert not marker.exists(), f"the folder's code ran:\n{output}"
    assert "LOADED" not in output
    assert output.count("REFUSED:") == 2, output
    assert "component 'unet' names transformers.AutoModel" in output, output
    assert (folder / "unet" / "evilmod.py").is_file()  # the hostile folder was really there


def test_pty_hostile_backbone_folder_runs_no_code(tmp_path):
    pytest.importorskip("transformers")
    marker = tmp_path / "PWNED"
    folders = {}
    for name, model_type in (("unknown_type", "evil"), ("builtin_type", "vit")):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"model_type": model_type, "auto_map": AUTO_MAP,
                                                        "hidden_size": 8, "num_hidden_layers": 1,
                                                        "num_attention_heads": 2, "intermediate_size": 8,
                                                        "image_size": 8, "patch_size": 4}))
        (folder / "evilmod.py").write_text(EVIL_MODULE)
        folders[name] = str(folder)
    code = textwrap.dedent(f"""
        import warnings
        warnings.simplefilter("ignore")
        from encdiff_pipeline import ConceptEncoderModel
        for name, folder in {folders!r}.items():
            try:
                ConceptEncoderModel.with_pretrained_backbone(folder, num_concepts=2, token_dim=4)
                print(name, "LOADED")
            except Exception as error:
                print(name, "REFUSED:", type(error).__name__, error)
        try:
            ConceptEncoderModel(sample_size=8, backbone_config={{"model_type": "evil", "auto_map": {AUTO_MAP!r}}})
            print("config LOADED")
        except Exception as error:
            print("config REFUSED:", error)
    """)
    output = run_answering_yes(code, REPO, marker)
    assert not marker.exists(), f"the folder's code ran:\n{output}"
    assert "unknown_type REFUSED:" in output and "backbone model_type 'evil' is not an architecture" in output, output
    assert "builtin_type REFUSED:" in output, output  # no weights: transformers' own error, its code not run
    assert "config REFUSED:" in output, output


@pytest.mark.parametrize("slot, entry", [
    ("unet", ["transformers", "AutoModel"]),
    ("unet", ["diffusers", "DiffusionPipeline"]),
    ("encoder", ["diffusers", "UNet2DConditionModel"]),
    ("encoder", ["evilmod", "EvilModel"]),
    ("scheduler", ["diffusers", "UNet2DConditionModel"]),
    ("vae", ["onnxruntime.training", "ORTModule"]),
    ("encoder", ["os", "system"]),
    ("unet", [1, 2]),
])
def test_classes_off_the_allow_list_are_refused_by_slot(slot, entry):
    with pytest.raises(ValueError, match=rf"component '{slot}' names .* not allowed for that slot"):
        allowed_component_class(slot, *entry)


@pytest.mark.parametrize("slot, entry, expected", [
    ("encoder", ["encdiff_pipeline", "ConceptEncoderModel"], "ConceptEncoderModel"),
    ("encoder", ["concept_encoder", "ConceptEncoderModel"], "ConceptEncoderModel"),  # as save_pretrained records it
    ("unet", ["diffusers", "UNet2DConditionModel"], "UNet2DConditionModel"),
    ("scheduler", ["diffusers", "DDIMScheduler"], "DDIMScheduler"),
    ("vae", ["diffusers", "VQModel"], "VQModel"),
])
def test_allowed_classes_resolve(slot, entry, expected):
    assert allowed_component_class(slot, *entry).__name__ == expected
    assert allowed_component_class("vae", None, None) is None
