"""The environment the benchmarks run the training scripts in (`training/*.py` as subprocesses).

Example:
    >>> subprocess.run([sys.executable, "training/train_encdiff.py", ...], env=script_env(repo, 1))  # doctest: +SKIP
"""
from __future__ import annotations

import os


def script_env(repo: str, num_threads: int | None = None) -> dict[str, str]:
    """This process's environment with the checkout `repo` first on PYTHONPATH (importable also without
    `pip install -e .`) and, when given, `OMP_NUM_THREADS=num_threads`."""
    env = dict(os.environ)
    if num_threads:
        env["OMP_NUM_THREADS"] = str(num_threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    return env
