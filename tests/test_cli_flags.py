"""Every command line spells its flags in snake_case, as diffusers' training examples do
(`--output_dir`, `--dataset_options`): checked on the source, so no CLI has to be imported."""
from __future__ import annotations

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDERS = ("encdiff_pipeline", "training", "benchmarks", "examples")
SNAKE = re.compile(r"--[a-z0-9]+(_[a-z0-9]+)*$")


def cli_flags() -> dict[str, list[str]]:
    """{source file: its `add_argument` flags} of every file that defines any."""
    found = {}
    for folder in FOLDERS:
        for parent, _, names in os.walk(os.path.join(ROOT, folder)):
            for name in sorted(n for n in names if n.endswith(".py")):
                path = os.path.join(parent, name)
                with open(path, encoding="utf-8") as f:
                    tree = ast.parse(f.read())
                flags = [arg.value for node in ast.walk(tree) if isinstance(node, ast.Call)
                         and getattr(node.func, "attr", None) == "add_argument"
                         for arg in node.args if isinstance(arg, ast.Constant) and str(arg.value).startswith("--")]
                if flags:
                    found[os.path.relpath(path, ROOT)] = flags
    return found


def test_every_cli_flag_is_snake_case():
    flags = cli_flags()
    assert os.path.join("training", "train_encdiff.py") in flags and len(flags) >= 15
    assert "--dataset_options" in flags[os.path.join("encdiff_pipeline", "evaluation.py")]
    bad = {path: [f for f in names if not SNAKE.match(f)] for path, names in flags.items()}
    assert not {path: names for path, names in bad.items() if names}


def test_one_spelling_for_dataset_options():
    """The dataset loader's options are `--dataset_options` (a JSON object) wherever a CLI takes them."""
    flags = cli_flags()
    spellings = {f for names in flags.values() for f in names if f.startswith("--dataset_option")}
    assert spellings == {"--dataset_options"}
