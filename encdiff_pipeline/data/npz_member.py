"""Read one array of an `.npz` file lazily, without unpickling anything.

An `.npz` is a zip archive of `.npy` members. `np.load(path, mmap_mode="r")` ignores `mmap_mode`
for `.npz` files and reads a whole member into RAM on access, so `open_npz_member` does better:

- a *stored* (uncompressed, `np.savez`) member is memory-mapped in place, at its offset in the zip;
- a *deflated* (`np.savez_compressed`) member cannot be mapped: it is decompressed once, streaming,
  into `<cache_dir>/<file>-<key>-<hash>.npy` (written under a temporary name, then renamed) and
  that file is memory-mapped. `<hash>` is a SHA-256 of the member's compressed bytes and CRC, so two
  different files never share a cache entry, whatever their names, sizes and modification times. `cache_dir` defaults to `$ENCDIFF_CACHE` or
  `~/.cache/encdiff_pipeline`. (The dSprites and MPI3D-toy downloads are compressed; dSprites
  images take 3 GB once decompressed, on disk, not in RAM.)

Object arrays (pickles, e.g. dSprites' `metadata`) are refused.

Example:
    >>> images = open_npz_member("mpi3d_real.npz", "images")  # doctest: +SKIP
    >>> images.shape  # doctest: +SKIP
    (1036800, 64, 64, 3)
"""
from __future__ import annotations

import hashlib
import os
import struct
import zipfile
from typing import Optional

import numpy as np

from ..atomic import atomic_path

_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # zip local file header, 30 bytes
_CHUNK = 1 << 24


def default_cache_dir() -> str:
    return os.environ.get("ENCDIFF_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "encdiff_pipeline"))


def _open_zip(path: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise OSError(f"{path}: not a readable .npz archive (truncated or corrupt?): {error}") from error


def npz_keys(path: str | os.PathLike) -> list[str]:
    """Names of the arrays in an `.npz` file."""
    path = os.fspath(path)
    with _open_zip(path) as archive:
        return [n[:-4] for n in archive.namelist() if n.endswith(".npy")]


def _member_info(archive: zipfile.ZipFile, path: str, key: str) -> zipfile.ZipInfo:
    name = key + ".npy"
    if name not in archive.namelist():
        keys = [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
        raise ValueError(f"{path}: missing array '{key}'; the file holds {keys}")
    return archive.getinfo(name)


def _read_npy_header(stream, path: str, key: str):
    try:
        version = np.lib.format.read_magic(stream)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(stream)
    except ValueError as error:
        raise OSError(f"{path}: member '{key}' is not a valid .npy array: {error}") from error
    except (zipfile.BadZipFile, EOFError) as error:  # a small member is read whole: its CRC is checked here
        raise OSError(f"{path}: member '{key}' is corrupt ({error})") from error
    if dtype.hasobject:
        raise ValueError(f"{path}: array '{key}' holds Python objects (a pickle); refusing to load it")
    return shape, fortran, dtype


def read_npz_array(path: str | os.PathLike, key: str) -> np.ndarray:
    """A (small) member read fully into RAM, pickles refused."""
    path = os.fspath(path)
    with _open_zip(path) as archive:
        _member_info(archive, path, key)
    try:
        with np.load(path, allow_pickle=False) as data:
            return data[key]
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise OSError(f"{path}: cannot read array '{key}' (truncated or corrupt?): {error}") from error
    except ValueError as error:
        raise ValueError(f"{path}: cannot read array '{key}': {error}") from error


def open_npz_member(path: str | os.PathLike, key: str, cache_dir: Optional[str] = None) -> np.ndarray:
    """A read-only memory map of array `key` of the `.npz` at `path` (see the module docstring)."""
    path = os.fspath(path)
    with _open_zip(path) as archive:
        info = _member_info(archive, path, key)
        with archive.open(info) as stream:
            shape, fortran, dtype = _read_npy_header(stream, path, key)
            header_size = stream.tell() if info.compress_type == zipfile.ZIP_STORED else None
        order = "F" if fortran else "C"
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if info.compress_type == zipfile.ZIP_STORED:
            if header_size + nbytes != info.file_size:  # a header claiming more (or fewer) rows than stored
                raise OSError(f"{path}: array '{key}' claims shape {tuple(shape)} ({nbytes} bytes) but its zip member "
                              f"holds {info.file_size - header_size} bytes of data (corrupt or edited file)")
            with open(path, "rb") as raw:
                raw.seek(info.header_offset)
                fields = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
            if fields[0] != b"PK\x03\x04":
                raise OSError(f"{path}: corrupt zip entry for '{key}'")
            offset = info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1] + header_size
            if offset + nbytes > os.path.getsize(path):
                raise OSError(f"{path}: array '{key}' needs {nbytes} bytes at offset {offset} but the file "
                              f"is only {os.path.getsize(path)} bytes (truncated?)")
            return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order=order)
        return _decompress_to_cache(archive, info, path, key, shape, fortran, dtype, nbytes, cache_dir)


def member_digest(path: str, info: zipfile.ZipInfo) -> str:
    """SHA-256 (hex) of a zip member's stored bytes, CRC-32 and sizes: the content key of its cache."""
    digest = hashlib.sha256(f"{info.CRC}-{info.file_size}-{info.compress_size}".encode())
    with open(path, "rb") as raw:
        raw.seek(info.header_offset)
        fields = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
        if fields[0] != b"PK\x03\x04":
            raise OSError(f"{path}: corrupt zip entry for '{info.filename}'")
        raw.seek(info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1])
        left = info.compress_size
        while left > 0:
            chunk = raw.read(min(_CHUNK, left))
            if not chunk:
                raise OSError(f"{path}: member '{info.filename}' is cut short (truncated file?)")
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


def _decompress_to_cache(archive, info, path, key, shape, fortran, dtype, nbytes, cache_dir):
    cache_dir = cache_dir or default_cache_dir()
    os.makedirs(cache_dir, exist_ok=True)
    digest = member_digest(path, info)[:32]
    target = os.path.join(cache_dir, f"{os.path.basename(path)}-{key}-{digest}.npy")
    if not os.path.exists(target):
        try:
            with atomic_path(target) as tmp:
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=shape, fortran_order=fortran)
                flat = out.reshape(-1, order="A").view(np.uint8) if nbytes else np.empty(0, np.uint8)
                done = 0
                with archive.open(info) as stream:
                    _read_npy_header(stream, path, key)
                    while done < nbytes:
                        chunk = stream.read(min(_CHUNK, nbytes - done))
                        if not chunk:
                            break
                        flat[done:done + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
                        done += len(chunk)
                if done != nbytes:
                    raise OSError(f"{path}: array '{key}' ends after {done} of {nbytes} bytes (truncated?)")
                out.flush()
                del out, flat
        except (OSError, ValueError):
            raise
        except Exception as error:  # zipfile.BadZipFile, EOFError, zlib errors
            raise OSError(f"{path}: cannot decompress array '{key}' (truncated or corrupt?): {error}") from error
    return np.load(target, mmap_mode="r", allow_pickle=False)
