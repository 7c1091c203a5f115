"""Write-to-temp-then-rename: a file or folder appears complete or not at all.

`atomic_path` yields a unique temporary name beside the target and moves it into place
(`os.replace`) only when the block succeeds; `atomic_folder` does the same for a folder, moving
an existing one aside first; `write_text` / `write_json` are the common cases.

Example:
    >>> write_json("runs/x/report.json", {"mig": 0.4})
    >>> with atomic_path("grid.png", suffix=".png") as tmp:
    ...     image.save(tmp)
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator


def current_umask() -> int:
    """The process umask (read without changing it for longer than one call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_default_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a file (0666) or folder (0777) the permissions the umask allows, as `open` / `mkdir` would.

    For files and folders made by `tempfile` (always owner-only) before they are renamed into place.
    """
    os.chmod(path, (0o777 if directory else 0o666) & ~current_umask())


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """A fresh temporary file name in `path`'s folder (created, parents too), renamed onto `path`
    when the block succeeds and removed when it fails. `suffix` ends the temporary name (writers
    that pick a format from the extension need it). The file gets the permissions the umask allows
    (not `tempfile`'s owner-only ones)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp" + suffix)
    os.close(handle)
    try:
        yield tmp
        if os.path.isfile(tmp):
            apply_default_mode(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def write_json(path: str | os.PathLike, value: Any, **dump_kwargs: Any) -> None:
    """Write `value` as JSON to `path` atomically (`dump_kwargs` go to `json.dumps`, e.g. `indent=2`)."""
    write_text(path, json.dumps(value, **dump_kwargs))


def swap_into_place(tmp: str, path: str) -> None:
    """Rename the complete folder (or file) `tmp` to `path`; an existing `path` is moved aside first
    and deleted only once the new one is in place."""
    stale = None
    if os.path.exists(path):
        stale = path + ".old"
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(path, stale)
    os.replace(tmp, path)
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True) if os.path.isdir(stale) else os.remove(stale)


@contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[str]:
    """A temporary folder name (`path.tmp`, a leftover of a killed write cleared first) that replaces
    `path` when the block succeeds and is removed when it fails."""
    path = os.fspath(path)
    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        swap_into_place(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
