"""Time the default disentanglement protocol (FactorVAE + DCI + MIG + SAP + modularity/explicitness).

Cases: the five fixture tables of tests/fixtures/disentanglement_lib (grid [4, 5, 3, 6]) and a
Shapes3D-sized case (480,000 x 20 table over the Shapes3D grid [10, 10, 10, 8, 4, 15]; codes = the
six factors with noise, the rest noise). Prints seconds per metric for this package and, with
`--reference`, for the published disentanglement_lib package on the same tables in the same
process, and the ratio.

The reference imports tensorflow and gin.tf at module level; its metric code uses neither. To run
it, install it in a throwaway virtualenv (never the project's python):

    python3 -m venv --system-site-packages /tmp/dlib_venv
    /tmp/dlib_venv/bin/pip install --no-deps disentanglement-lib==1.5 gin-config absl-py six
    /tmp/dlib_venv/bin/python benchmarks/bench_metrics.py --reference

`--reference` maps `gin.tf` onto gin (translating the old `blacklist=` keyword) before importing
the metric modules, and binds the published gin settings (20 histogram bins, prune threshold 0.05).

DCI runs with `dci.DEFAULT_BACKEND` ("numpy", metrics/gradient_boosting.py). `--dci_backends`
also times one DCI call per case with each backend ("numpy" and "sklearn", the classifier the
reference fits) and prints the full protocol's speed-up over the same protocol with sklearn's
classifier, which costs what the reference costs (DCI is most of it). `--dci_size 10000` adds a
10,000 x 20 Shapes3D-like table (grid [10, 10, 10, 8, 4, 15]: 10,000 distinct codes, no grid
duplicates) for that comparison; sklearn takes minutes there.

Usage:
    python3 benchmarks/bench_metrics.py [--cases fixtures shapes3d] [--reference] [--skip_dci]
                                         [--dci_backends] [--dci_size 10000]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from encdiff_pipeline.data import FactorGrid
from encdiff_pipeline.metrics import dci, factor_vae, mig, modularity_explicitness, sap
from encdiff_pipeline.metrics.dci import BACKENDS as DCI_BACKENDS
from encdiff_pipeline.metrics.dci import completeness, compute_importance_gbt, disentanglement

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                        "disentanglement_lib", "grid_4_5_3_6.npz")
SHAPES3D_SIZES = [10, 10, 10, 8, 4, 15]
OURS = {"factor_vae": factor_vae, "dci": dci, "mig": mig, "sap": sap, "modularity": modularity_explicitness}
HEADLINE = {"factor_vae": "eval_accuracy", "dci": "disentanglement", "mig": "discrete_mig", "sap": "SAP_score",
            "modularity": "modularity_score"}


def shapes3d_case(seed: int = 0) -> np.ndarray:
    grid = FactorGrid(SHAPES3D_SIZES)
    rng = np.random.RandomState(seed)
    factors = grid.index_to_factors(np.arange(len(grid))).astype(np.float64)
    table = rng.randn(len(grid), 20)
    table[:, :6] = factors / np.asarray(SHAPES3D_SIZES) + 0.02 * table[:, :6]
    return table


def load_reference():
    """The published metric functions, keyed like OURS, or raise ImportError."""
    import gin

    original = gin.configurable

    def configurable(*args, **kwargs):
        if "blacklist" in kwargs:
            kwargs["denylist"] = kwargs.pop("blacklist")
        return original(*args, **kwargs)

    gin.configurable = configurable
    sys.modules.setdefault("gin.tf", gin)
    from disentanglement_lib.evaluation.metrics import dci as r_dci
    from disentanglement_lib.evaluation.metrics import factor_vae as r_fvae
    from disentanglement_lib.evaluation.metrics import mig as r_mig
    from disentanglement_lib.evaluation.metrics import modularity_explicitness as r_mod
    from disentanglement_lib.evaluation.metrics import sap_score as r_sap
    from disentanglement_lib.evaluation.metrics import utils as r_utils

    gin.bind_parameter("discretizer.discretizer_fn", r_utils._histogram_discretize)
    gin.bind_parameter("discretizer.num_bins", 20)
    gin.bind_parameter("prune_dims.threshold", 0.05)
    return {
        "factor_vae": lambda d, f, rs: r_fvae.compute_factor_vae(d, f, rs, batch_size=64, num_train=10000,
                                                                 num_eval=5000, num_variance_estimate=10000),
        "dci": lambda d, f, rs: r_dci.compute_dci(d, f, rs, num_train=10000, num_test=5000),
        "mig": lambda d, f, rs: r_mig.compute_mig(d, f, rs, num_train=10000),
        "sap": lambda d, f, rs: r_sap.compute_sap(d, f, rs, num_train=10000, num_test=5000, continuous_factors=False),
        "modularity": lambda d, f, rs: r_mod.compute_modularity_explicitness(d, f, rs, num_train=10000, num_test=5000),
    }


class ReferenceGrid:
    """disentanglement_lib's GroundTruthData interface over a factor grid (observation = index)."""

    def __init__(self, grid: FactorGrid):
        self.grid = grid
        self.num_factors = grid.num_factors
        self.factors_num_values = grid.factor_sizes
        self.observation_shape = [1]

    def sample_factors(self, num, random_state):
        return self.grid.sample_factors(num, random_state)

    def sample_observations_from_factors(self, factors, random_state):
        return self.grid.factors_to_index(factors)

    def sample(self, num, random_state):
        factors = self.sample_factors(num, random_state)
        return factors, self.sample_observations_from_factors(factors, random_state)

    def sample_observations(self, num, random_state):
        return self.sample(num, random_state)[1]


def time_protocol(functions, dataset, representation, names) -> tuple[dict, dict]:
    seconds, values = {}, {}
    for name in names:
        start = time.perf_counter()
        result = functions[name](dataset, representation, np.random.RandomState(0))
        seconds[name] = time.perf_counter() - start
        values[name] = float(result[HEADLINE[name]])
    return seconds, values


def time_dci_backends(dataset, representation) -> dict:
    """Seconds of one DCI call per backend (one thread each, interleaved) and the headline values."""
    seconds, values = {}, {}
    for backend in DCI_BACKENDS:
        start = time.perf_counter()
        result = dci(dataset, representation, np.random.RandomState(0), backend=backend, n_jobs=1)
        seconds[backend] = time.perf_counter() - start
        values[backend] = (result["disentanglement"], result["completeness"], result["informativeness_test"])
    return {"seconds": seconds, "values": values}


def shapes3d_like_table(num_points: int, seed: int = 0):
    """A FactorGrid-free case: `num_points` distinct codes (20 dims) of the Shapes3D grid."""
    rng = np.random.RandomState(seed)
    table = rng.randn(num_points, 20)
    factors = np.stack([rng.randint(s, size=num_points) for s in SHAPES3D_SIZES], axis=1)
    table[:, :6] = factors / np.asarray(SHAPES3D_SIZES) + 0.02 * table[:, :6]
    return table, factors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", nargs="*", default=["fixtures", "shapes3d"], choices=["fixtures", "shapes3d"])
    parser.add_argument("--reference", action="store_true", help="also time disentanglement_lib (see docstring)")
    parser.add_argument("--skip_dci", action="store_true", help="leave DCI (the slowest) out")
    parser.add_argument("--json", default=None, help="write the figures here too")
    parser.add_argument("--dci_backends", action="store_true", help="time DCI with both classifiers")
    parser.add_argument("--dci_size", type=int, default=0, help="also a Shapes3D-like table of this many codes")
    args = parser.parse_args()
    names = [n for n in OURS if not (args.skip_dci and n == "dci")]

    reference = None
    if args.reference:
        try:
            reference = load_reference()
        except ImportError as error:
            print(f"reference not importable ({error}); timing ours only")

    cases = []
    if "fixtures" in args.cases:
        tables = np.load(FIXTURES, allow_pickle=False)
        grid = FactorGrid([int(s) for s in tables["factor_sizes"]])
        cases += [(f"fixture {k}", grid, tables[k]) for k in tables.files if k != "factor_sizes"]
    if "shapes3d" in args.cases:
        cases.append(("shapes3d 480000x20", FactorGrid(SHAPES3D_SIZES), shapes3d_case()))

    print(f"cores: {os.cpu_count()}   load average: {os.getloadavg()[0]:.1f}   metrics: {' + '.join(names)}")
    figures = []
    for label, grid, table in cases:
        ours_s, ours_v = time_protocol(OURS, grid, table, names)
        row = {"case": label, "ours_s": ours_s, "ours": ours_v}
        line = f"{label:40s} ours {sum(ours_s.values()):7.2f} s (" + ", ".join(f"{n} {s:.2f}" for n, s in ours_s.items()) + ")"
        if reference is not None:
            ref_grid = ReferenceGrid(grid)
            ref_s, ref_v = time_protocol(reference, ref_grid, lambda idx, t=table: t[idx], names)
            row.update(reference_s=ref_s, reference=ref_v)
            line += (f"\n{'':40s} ref  {sum(ref_s.values()):7.2f} s (" + ", ".join(f"{n} {s:.2f}" for n, s in ref_s.items())
                     + f")\n{'':40s} speed-up x{sum(ref_s.values()) / sum(ours_s.values()):.2f}; per metric "
                     + ", ".join(f"{n} x{ref_s[n] / ours_s[n]:.1f}" for n in names)
                     + "; max |ours - ref| headline " + f"{max(abs(ours_v[n] - ref_v[n]) for n in names):.2e}")
        if args.dci_backends and "dci" in names:
            both = time_dci_backends(grid, table)
            sec = both["seconds"]
            rest = sum(v for n, v in ours_s.items() if n != "dci")
            row["dci_backends"] = both
            line += (f"\n{'':40s} DCI numpy {sec['numpy']:.2f} s, sklearn {sec['sklearn']:.2f} s "
                     f"(x{sec['sklearn'] / sec['numpy']:.1f}); protocol with sklearn DCI / ours: "
                     f"x{(rest + sec['sklearn']) / (rest + sec['numpy']):.2f}; D,C,I numpy "
                     + ", ".join(f"{v:.4f}" for v in both["values"]["numpy"]) + " sklearn "
                     + ", ".join(f"{v:.4f}" for v in both["values"]["sklearn"]))
        print(line, flush=True)
        figures.append(row)
    if args.dci_size:
        num_train = args.dci_size  # and half as many test codes (the protocol's 10,000 / 5,000)
        table, factors = shapes3d_like_table(num_train + num_train // 2)
        line = f"{'DCI on ' + str(args.dci_size) + 'x20 Shapes3D-like':40s}"
        for backend in DCI_BACKENDS:
            start = time.perf_counter()
            importance, _, acc = compute_importance_gbt(table[:num_train], factors[:num_train], table[num_train:],
                                                        factors[num_train:],
                                                        np.random.RandomState(0), n_jobs=1, backend=backend)
            line += (f" {backend} {time.perf_counter() - start:.1f} s (D {disentanglement(importance):.4f}, "
                     f"C {completeness(importance):.4f}, test acc {acc:.4f});")
            print(line, flush=True)
    if reference is not None:
        total_ours = sum(sum(r["ours_s"].values()) for r in figures)
        total_ref = sum(sum(r["reference_s"].values()) for r in figures)
        print(f"{'all cases':40s} ours {total_ours:.1f} s, reference {total_ref:.1f} s, speed-up x{total_ref / total_ours:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)


if __name__ == "__main__":
    from encdiff_pipeline.cli import exit_with

    exit_with(main, prog="bench_metrics.py")
