"""A factor classifier trained on a dataset's real images: the reader of generated images.

`benchmarks/generation_fidelity.py` and `encdiff-evaluate --generation_fidelity` ask it which
factor classes a reconstruction, a swap or a traversal shows. It is the `small` preset's concept
encoder trunk with one classification head per factor (its `sum(factor_sizes)` outputs are the
concatenated logits), trained with cross-entropy on grid points drawn with a seeded generator,
never on the held points that fidelity is measured on. Trained probes are cached per dataset
(a fingerprint of its factor grid and of a few of its images), image size, seed and recipe, so the
same dataset is read by the same probe every time.

Example:
    >>> data = load_factor_dataset("procedural-shapes3d", image_size=16)     # doctest: +SKIP
    >>> probe = load_factor_probe(data)                                      # trained once, then cached
    >>> probe.predict(to_model_input(data.get_images([0, 1])))               # (2, num_factors) classes
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import write_json
from .image_range import to_model_input
from .models import ConceptEncoderModel

PROBE_RECIPE = {"steps": 1500, "batch_size": 64, "learning_rate": 1e-3, "width": 128, "num_held": 4096}
PROBE_VERSION = 1  # bump when the recipe's code changes, so cached probes are retrained


def held_indices(num_points: int, num_held: int, seed: int) -> np.ndarray:
    """The sorted grid points a probe of `seed` never trains on (fidelity is measured on these)."""
    rng = np.random.RandomState(seed + 7919)
    return np.sort(rng.choice(num_points, size=min(num_held, num_points // 2), replace=False))


class FactorProbe:
    """A trained factor classifier: `predict(images)` -> `(B, num_factors)` int64 classes.

    Args:
        model: a `ConceptEncoderModel` whose concepts are the concatenated per-factor logits.
        factor_sizes: the classes per factor.
        held: the grid points it never trained on.
    """

    def __init__(self, model: ConceptEncoderModel, factor_sizes: Sequence[int], held: np.ndarray):
        if model.config.num_concepts != sum(factor_sizes):
            raise ValueError(f"probe model has {model.config.num_concepts} outputs; factor_sizes {list(factor_sizes)} "
                             f"need {sum(factor_sizes)}")
        self.model, self.factor_sizes, self.held = model.eval(), [int(s) for s in factor_sizes], held
        self._bounds = np.cumsum([0] + self.factor_sizes)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 512) -> np.ndarray:
        """Classes per factor of `(B, C, H, W)` images in [-1, 1]."""
        out = []
        for part in torch.split(images.float(), batch_size):
            logits = self.model.encode_concepts(part.clamp(-1, 1))
            out.append(torch.stack([logits[:, a:b].argmax(1) for a, b in zip(self._bounds[:-1], self._bounds[1:])], 1))
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.factor_sizes)), dtype=np.int64)

    def accuracy(self, images: torch.Tensor, factors: np.ndarray) -> np.ndarray:
        """Fraction of images read as their true class, per factor."""
        return (self.predict(images) == np.asarray(factors)).mean(axis=0)


def train_factor_probe(dataset, seed: int = 0, steps: int = PROBE_RECIPE["steps"],
                       batch_size: int = PROBE_RECIPE["batch_size"], learning_rate: float = PROBE_RECIPE["learning_rate"],
                       width: int = PROBE_RECIPE["width"], num_held: int = PROBE_RECIPE["num_held"],
                       progress: bool = False) -> FactorProbe:
    """Train a probe on `dataset`'s real images (all randomness from `seed`), never on its held points."""
    images = dataset.get_images([0])
    size, channels = images.shape[1], images.shape[3]
    held = held_indices(len(dataset), num_held, seed)
    is_held = np.zeros(len(dataset), dtype=bool)
    is_held[held] = True
    rng = np.random.RandomState(seed)
    torch.manual_seed(seed)
    model = ConceptEncoderModel(in_channels=channels, sample_size=size, num_concepts=sum(dataset.factor_sizes),
                                token_dim=2, width=width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    bounds = np.cumsum([0] + list(dataset.factor_sizes))
    model.train()
    from tqdm.auto import tqdm

    for _ in tqdm(range(steps), desc="factor probe", disable=not progress):
        idx = rng.randint(0, len(dataset), batch_size * 2)
        idx = idx[~is_held[idx]][:batch_size]
        logits = model.encode_concepts(to_model_input(dataset.get_images(idx)), check_inputs=False)
        labels = torch.from_numpy(dataset.index_to_factors(idx)).long()
        loss = sum(F.cross_entropy(logits[:, a:b], labels[:, f]) for f, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return FactorProbe(model, dataset.factor_sizes, held)


def dataset_fingerprint(dataset) -> str:
    """A short hash of a factor dataset: its class, factor grid and the pixels of a few of its images."""
    rng = np.random.RandomState(0)
    idx = np.unique(np.concatenate([[0, len(dataset) - 1], rng.randint(0, len(dataset), 6)]))
    digest = hashlib.sha256()
    digest.update(json.dumps([type(dataset).__name__, [int(s) for s in dataset.factor_sizes], len(dataset)]).encode())
    digest.update(np.ascontiguousarray(dataset.get_images(idx), dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


def default_cache_dir() -> str:
    """`$ENCDIFF_CACHE`, else `~/.cache/encdiff_pipeline`, with `factor_probes/` inside."""
    root = os.environ.get("ENCDIFF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "encdiff_pipeline")
    return os.path.join(root, "factor_probes")


def load_factor_probe(dataset, seed: int = 0, cache_dir: Optional[str] = None, progress: bool = False,
                      **recipe) -> FactorProbe:
    """The cached probe of `dataset`: trained on first use and kept in `cache_dir` (default
    `default_cache_dir()`; "" trains without caching).

    `recipe` overrides `PROBE_RECIPE` keys (steps, batch_size, learning_rate, width, num_held); each
    recipe has its own cache entry.
    """
    unknown = set(recipe) - set(PROBE_RECIPE)
    if unknown:
        raise ValueError(f"unknown probe recipe keys {sorted(unknown)}; expected some of {sorted(PROBE_RECIPE)}")
    settings = {**PROBE_RECIPE, **recipe}
    cache_dir = default_cache_dir() if cache_dir is None else cache_dir
    key = hashlib.sha256(json.dumps([PROBE_VERSION, dataset_fingerprint(dataset), seed, settings],
                                    sort_keys=True).encode()).hexdigest()[:16]
    folder = os.path.join(cache_dir, key) if cache_dir else None
    if folder and os.path.isfile(os.path.join(folder, "probe.json")):
        try:
            with open(os.path.join(folder, "probe.json"), encoding="utf-8") as f:
                meta = json.load(f)
            model = ConceptEncoderModel.from_pretrained(folder)
            return FactorProbe(model, meta["factor_sizes"], np.asarray(meta["held"], dtype=np.int64))
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            pass  # a damaged cache entry: train again and replace it
    probe = train_factor_probe(dataset, seed=seed, progress=progress, **settings)
    if folder:  # written beside, then renamed: a cache entry is complete or absent
        os.makedirs(cache_dir, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=cache_dir, prefix=f".{key}.")
        try:
            probe.model.save_pretrained(tmp)
            write_json(os.path.join(tmp, "probe.json"), {"factor_sizes": probe.factor_sizes, "held": probe.held.tolist(),
                                                         "seed": seed, "recipe": settings, "version": PROBE_VERSION})
            if os.path.isdir(folder):  # a damaged entry, or another process's: ours replaces it
                shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        except OSError:
            pass  # another process wrote it first, or the cache is not writable: the probe is still good
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return probe
