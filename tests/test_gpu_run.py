"""benchmarks/gpu_run.py --smoke: the one-command GPU measurement runs end to end on the CPU with tiny models."""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_run_smoke_writes_the_report(tmp_path):
    out = tmp_path / "gpu_run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu_run.py"), "--smoke", "--output_dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["smoke"] and report["environment"]["device"] == "cpu"
    knobs = report["knobs"]
    assert {"fp32", "bf16", "tf32", "channels_last", "fused_adamw", "best"} <= set(knobs) and "skipped" in knobs["compile"]
    assert all(knobs[k]["images_per_s"] > 0 for k in ("fp32", "bf16", "tf32", "channels_last", "fused_adamw", "best"))
    training = report["training"]
    assert training["steps"] == 3 and training["images_seen"] == 12 and training["projected_minutes_to_3.6M_images"] > 0
    assert [v["step"] for v in training["validations"]] == [2, 3]
    assert {"factor_vae", "dci_disentanglement", "mig"} <= set(training["validations"][-1])
    md = (out / "report.md").read_text()
    assert "images/s per knob" in md and "3.6M images take" in md
