"""`DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` where encdiff_pipeline cannot be imported."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from diffusers import DiffusionPipeline

from tests import HANG_GUARD_S
from tests.test_pipeline_encdiff import STEPS, make_tiny_pipeline, seeded, tiny_images

# Runs in a fresh interpreter. The editable install is found by a meta-path finder that a .pth file
# in site-packages installs at start-up; a finder inserted first raises for the package instead,
# and the working directory is a temp folder, so `import encdiff_pipeline` cannot succeed.
REMOTE_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockEncDiff(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "encdiff_pipeline" or name.startswith("encdiff_pipeline."):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, BlockEncDiff())
    try:
        import encdiff_pipeline
    except ImportError:
        pass
    else:
        raise SystemExit("encdiff_pipeline is importable: the test would prove nothing")

    import numpy as np
    import torch
    from diffusers import DiffusionPipeline

    torch.set_num_threads(1)
    folder, images_file, out_file = sys.argv[1:4]
    pipe = DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    assert type(pipe).__name__ == "EncDiffPipeline", type(pipe)
    assert not any(m.split(".")[0] == "encdiff_pipeline" for m in sys.modules), "package leaked in"
    images = torch.from_numpy(np.load(images_file, allow_pickle=False))
    generated = pipe(images=images, num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0),
                     output_type="np").images
    concepts = pipe.encode(images).numpy()
    attention = pipe.attention_maps(images, generator=torch.Generator().manual_seed(0)).numpy()
    np.savez(out_file, images=generated, concepts=concepts, attention=attention,
             pipeline_module=np.array(type(pipe).__module__), encoder_module=np.array(type(pipe.encoder).__module__))
    """
).replace("STEPS", str(STEPS))


def test_remote_code_loads_without_the_package(tmp_path):
    pipe = make_tiny_pipeline()
    folder = tmp_path / "saved"
    pipe.save_pretrained(folder)
    images = tiny_images(2)
    np.save(tmp_path / "images.npy", images.numpy(), allow_pickle=False)
    (tmp_path / "remote.py").write_text(REMOTE_SCRIPT)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules"),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    result = subprocess.run(
        [sys.executable, str(tmp_path / "remote.py"), str(folder), str(tmp_path / "images.npy"), str(tmp_path / "out.npz")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    remote = np.load(tmp_path / "out.npz", allow_pickle=False)
    assert str(remote["pipeline_module"]) == "diffusers_modules.local.pipeline_encdiff"
    assert str(remote["encoder_module"]) == "diffusers_modules.local.concept_encoder"
    expected = pipe(images=images, num_inference_steps=STEPS, generator=seeded(), output_type="np").images
    np.testing.assert_array_equal(remote["images"], expected)
    np.testing.assert_array_equal(remote["concepts"], pipe.encode(images).numpy())
    np.testing.assert_array_equal(remote["attention"], pipe.attention_maps(images, generator=seeded()).numpy())


def test_plain_diffusers_loading_asks_for_trust_remote_code(tmp_path):
    make_tiny_pipeline().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(tmp_path)
