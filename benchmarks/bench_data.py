"""Throughput of the factor datasets: procedural Shapes3D rendering and lazy reads of real formats.

Run: python benchmarks/bench_data.py [--seconds 2]
     python benchmarks/bench_data.py --training_paths   # only the training batch paths (train_encdiff.py)
Prints images/s; the procedural numbers are what training can draw from one process. `--training_paths`
times the two batch paths of train_encdiff.py at 64x64, batch 128, per wall second and per CPU-second
of this process (= per core; meaningful when other processes share the cores): the DataLoader path
(render per batch, float or 8-bit), building the uint8 grid of `--data_on_device`, and drawing
batches from that grid by index (here on the CPU; on a GPU the gather runs on the device).
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


def cpu_rate(fn, seconds: float, per_call: int) -> tuple[float, float]:
    """(images per wall second, images per CPU-second of this process) of repeated `fn()`."""
    fn()  # warm-up
    wall, cpu, done = time.perf_counter(), time.process_time(), 0
    while time.perf_counter() - wall < seconds:
        fn()
        done += per_call
    return done / (time.perf_counter() - wall), done / max(time.process_time() - cpu, 1e-9)


def training_paths(seconds: float, batch: int = 128, grid_items: int = 12_000) -> None:
    """The batch paths of train_encdiff.py (`encdiff_pipeline.training.batches` and `.fast_path`) at 64x64."""
    from encdiff_pipeline.training.batches import BatchOrder, RenderedBatches
    from encdiff_pipeline.training.fast_path import DeviceBatches, build_uint8_grid

    data = ProceduralShapes3D(image_size=64)
    data.precompute()
    order = BatchOrder(len(data), batch, seed=0)
    for uint8 in (False, True):
        batches, k = RenderedBatches(data, order, 0, 10**9, uint8=uint8), iter(range(10**9))
        wall, cpu = cpu_rate(lambda: batches[next(k)], seconds, batch)
        print(f"DataLoader path ({'8-bit' if uint8 else 'float'}), 64x64, batch {batch}, one process: "
              f"{wall:,.0f} images/s wall, {cpu:,.0f} images per CPU-second (per core)")
    subset = ProceduralShapes3D(image_size=64, factor_sizes=[10, 10, 10, 2, 2, 3])  # 12,000 images
    subset.precompute()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    grid = build_uint8_grid(subset, "cpu", chunk=1000)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    print(f"--data_on_device grid build ({len(subset):,} images, uint8 {grid.numel() / 2**20:.0f} MiB): "
          f"{len(subset) / wall:,.0f} images/s wall, {len(subset) / cpu:,.0f} per CPU-second; the full 480,000-image "
          f"grid (5.9 GB) takes ~{480_000 / (len(subset) / cpu) / 60:.1f} CPU-minutes (split over DataLoader workers)")
    order = BatchOrder(len(subset), batch, seed=0)
    draws = iter(DeviceBatches(grid, subset, order, 0, 10**9))
    wall, cpu = cpu_rate(lambda: next(draws), seconds, batch)
    print(f"--data_on_device batches drawn from the grid on the CPU, batch {batch}: {wall:,.0f} images/s wall, "
          f"{cpu:,.0f} images per CPU-second (per core)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--training_paths", action="store_true", help="only time train_encdiff.py's batch paths")
    args = parser.parse_args()
    if args.training_paths:
        training_paths(args.seconds)
        return
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
    from encdiff_pipeline.cli import exit_with

    exit_with(main, prog="bench_data.py")
