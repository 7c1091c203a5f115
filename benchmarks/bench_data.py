"""Throughput of the factor datasets: procedural Shapes3D rendering and lazy reads of real formats.

Run: python benchmarks/bench_data.py [--seconds 2]
Prints images/s; the procedural numbers are what training can draw from one process.
"""
import argparse
import os
import tempfile
import time

import h5py
import numpy as np
import torch

from encdiff_pipeline.data import ProceduralShapes3D, load_factor_dataset


def rate(fn, seconds: float, per_call: int) -> float:
    fn()  # warm-up
    start, done = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        fn()
        done += per_call
    return done / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    print(f"threads: torch {torch.get_num_threads()}, cpus {os.cpu_count()}")
    rs = np.random.RandomState(0)

    for size in (64, 32):
        data = ProceduralShapes3D(image_size=size)
        start = time.perf_counter()
        data.precompute()
        cold = time.perf_counter() - start
        batch = rate(lambda: data.get_images(rs.randint(len(data), size=args.batch)), args.seconds, args.batch)
        item = rate(lambda: data[int(rs.randint(len(data)))], args.seconds / 2, 1)
        print(f"procedural-shapes3d {size}x{size}: ray casting all 480 geometries once {cold:.1f} s; "
              f"then {batch:,.0f} images/s in batches of {args.batch}, {item:,.0f} images/s one __getitem__ at a time")

    with tempfile.TemporaryDirectory() as tmp:
        data = ProceduralShapes3D(image_size=64, factor_sizes=[10, 10, 10, 2, 2, 3])  # 12,000 images
        images = np.round(data.get_images(np.arange(len(data))) * 255).astype(np.uint8)
        classes = data.index_to_factors(np.arange(len(data)))
        labels = np.stack([data.factor_values[k][classes[:, k]] for k in range(6)], axis=1)
        path = os.path.join(tmp, "3dshapes_subset.h5")
        with h5py.File(path, "w") as f:
            f.create_dataset("images", data=images, chunks=(1, 64, 64, 3))
            f.create_dataset("labels", data=labels)
        h5 = load_factor_dataset(path)
        r = rate(lambda: h5.get_images(rs.randint(len(h5), size=args.batch)), args.seconds, args.batch)
        print(f"Shapes3D .h5 (12,000 images, chunk = 1 image), random batches of {args.batch}: {r:,.0f} images/s")
        npz = os.path.join(tmp, "mpi3d_like.npz")
        np.savez(npz, images=images)
        mpi = load_factor_dataset(npz, factor_sizes=[10, 10, 10, 2, 1, 6, 1])
        r = rate(lambda: mpi.get_images(rs.randint(len(mpi), size=args.batch)), args.seconds, args.batch)
        print(f"MPI3D-layout .npz (memory-mapped), random batches of {args.batch}: {r:,.0f} images/s")


if __name__ == "__main__":
    main()
