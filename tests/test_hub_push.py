"""push_to_hub against a fake remote, the model card's metadata, and loading a Hub id back."""
import shutil
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
import yaml

from encdiff_pipeline import EncDiffPipeline
from encdiff_pipeline.model_card import default_template_path, render_model_card
from tests.test_pipeline_encdiff import STEPS, make_tiny_pipeline, seeded, tiny_images

REPO_ID = "someone/encdiff-tiny"


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """Replace huggingface_hub's repo creation, upload and download with a folder per repo."""
    remote = tmp_path / "remote"
    calls = []

    def create_repo(repo_id, token=None, private=None, exist_ok=False, **kwargs):
        calls.append(("create_repo", repo_id, private))
        (remote / repo_id).mkdir(parents=True, exist_ok=exist_ok)
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(*, repo_id, folder_path, commit_message=None, token=None, create_pr=None, **kwargs):
        calls.append(("upload_folder", repo_id, commit_message))
        shutil.copytree(folder_path, remote / repo_id, dirs_exist_ok=True)

    def snapshot_download(repo_id, **kwargs):
        calls.append(("snapshot_download", repo_id, kwargs.get("revision")))
        if not (remote / repo_id).is_dir():
            raise OSError(f"no repo {repo_id}")
        return str(remote / repo_id)

    monkeypatch.setattr(huggingface_hub, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return SimpleNamespace(remote=remote, calls=calls)


def read_card(path: Path):
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    metadata, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(metadata), body


def test_push_to_hub_writes_card_weights_and_reloads(fake_hub):
    pipe = make_tiny_pipeline(vq=True)
    images = tiny_images(2, size=16)
    expected = pipe(images=images, num_inference_steps=STEPS, generator=seeded(), output_type="pt").images
    metrics = {"eurecom-ds/shapes3d": {"factor_vae": 0.999, "dci": 0.969}}
    repo_id = pipe.push_to_hub(REPO_ID, private=True, commit_message="tiny", metrics=metrics, tags=["tiny"])
    assert repo_id == REPO_ID
    assert [c[0] for c in fake_hub.calls] == ["create_repo", "upload_folder"]
    assert fake_hub.calls[0][2] is True and fake_hub.calls[1][2] == "tiny"

    folder = fake_hub.remote / REPO_ID
    for name in ["model_index.json", "pipeline_encdiff.py", "encoder/concept_encoder.py",
                 "encoder/diffusion_pytorch_model.safetensors", "unet/diffusion_pytorch_model.safetensors",
                 "vae/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json"]:
        assert (folder / name).is_file(), name
    metadata, body = read_card(folder / "README.md")
    assert metadata["library_name"] == "diffusers"
    assert {"encdiff", "disentanglement", "tiny"} <= set(metadata["tags"])
    assert metadata["datasets"] == ["eurecom-ds/shapes3d"]
    assert sorted(metadata["metrics"]) == ["dci", "factor_vae"]
    results = metadata["model-index"][0]["results"]
    values = {m["type"]: m["value"] for r in results for m in r["metrics"]}
    assert values == {"factor_vae": 0.999, "dci": 0.969}
    assert results[0]["dataset"]["name"] == "eurecom-ds/shapes3d"
    assert f'EncDiffPipeline.from_pretrained("{REPO_ID}")' in body and "trust_remote_code=True" in body
    assert "| eurecom-ds/shapes3d | dci | 0.969 |" in body and "VQModel" in body

    loaded = EncDiffPipeline.from_pretrained(REPO_ID, revision="main")
    assert fake_hub.calls[-1] == ("snapshot_download", REPO_ID, "main")
    loaded.set_progress_bar_config(disable=True)
    actual = loaded(images=images, num_inference_steps=STEPS, generator=seeded(), output_type="pt").images
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)


def test_save_pretrained_with_push_uploads_the_saved_folder(fake_hub, tmp_path):
    pipe = make_tiny_pipeline()
    pipe.save_pretrained(tmp_path / "local", push_to_hub=True, repo_id=REPO_ID, datasets="my/data")
    assert (fake_hub.remote / REPO_ID / "model_index.json").is_file()
    metadata, _ = read_card(fake_hub.remote / REPO_ID / "README.md")
    assert metadata["datasets"] == ["my/data"] and "model-index" not in metadata
    with pytest.raises(OSError, match="no repo someone/missing"):
        EncDiffPipeline.from_pretrained("someone/missing")


def test_model_card_template_is_found_and_keeps_a_user_readme(tmp_path):
    assert default_template_path().name == "encdiff.md"
    card = render_model_card(make_tiny_pipeline())
    assert card.data.library_name == "diffusers" and "No evaluation results" in card.text
    pipe = make_tiny_pipeline()
    pipe.save_pretrained(tmp_path)
    (tmp_path / "README.md").write_text("my own notes")
    pipe.save_pretrained(tmp_path)
    assert (tmp_path / "README.md").read_text() == "my own notes"
    pipe.save_pretrained(tmp_path, datasets=["a/b"])  # explicit card arguments: re-render
    assert read_card(tmp_path / "README.md")[0]["datasets"] == ["a/b"]
