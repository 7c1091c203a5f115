"""The error boundary of this project's command-line tools, and checks of their output paths.

Every command (`encdiff-evaluate`, `encdiff-sample-sheet`, the training scripts, the benchmarks)
runs its `main` through `run_cli`: a user error (a missing file, a bad option value, a folder that is
not a pipeline) ends the command with one line `prog: error: ...` on stderr and exit status 1, not a
traceback. Set `ENCDIFF_TRACEBACK=1` to see the traceback anyway. Output files are checked up front
(`check_output_file`) so that a bad path fails before hours of work, not after.

Example:
    >>> from encdiff_pipeline.cli import run_cli
    >>> def main(argv):
    ...     raise ValueError("--batch_size must be positive, got 0")
    >>> run_cli(main, [], prog="demo")  # doctest: +SKIP
    demo: error: --batch_size must be positive, got 0
    1
"""
from __future__ import annotations

import os
import sys
import tempfile
from typing import Any, Callable, NoReturn, Optional

# what user input gets wrong; anything else is reported in one line too, marked as unexpected
USER_ERRORS = (ValueError, TypeError, KeyError, IndexError, OSError, FloatingPointError, ImportError, MemoryError)


def error_line(error: BaseException) -> str:
    """The first non-empty line of an exception's message (its class name if it has none)."""
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def run_cli(main: Callable[..., Any], *args: Any, prog: Optional[str] = None) -> int:
    """Call `main(*args)`; return its exit status (0 for None), or 1 after printing one line for an error.

    `SystemExit` (argparse errors, `--help`) passes through. Ctrl-C prints `interrupted` (status 130).
    """
    prog = prog or os.path.basename(sys.argv[0]) or "encdiff"
    try:
        status = main(*args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - the boundary: one line instead of a traceback
        try:
            fail_in_one_line(error, prog)
        except SystemExit as exit_:
            return int(exit_.code)
    return status if isinstance(status, int) else 0


def fail_in_one_line(error: BaseException, prog: Optional[str] = None) -> NoReturn:
    """Print `prog: error: ...` for `error` (as `run_cli` does) and exit with status 1; with
    `ENCDIFF_TRACEBACK=1`, re-raise it instead. For boundaries that need their own `except` clauses."""
    if os.environ.get("ENCDIFF_TRACEBACK"):
        raise error
    prog = prog or os.path.basename(sys.argv[0]) or "encdiff"
    unexpected = "" if isinstance(error, USER_ERRORS) else (
        f" (unexpected {type(error).__name__}; rerun with ENCDIFF_TRACEBACK=1 for the traceback)")
    print(f"{prog}: error: {error_line(error)}{unexpected}", file=sys.stderr)
    raise SystemExit(1) from None


def check_output_file(path: str | os.PathLike, option: str = "--out") -> str:
    """Check that a file can be written at `path` now (its folder is created if missing); return the
    absolute path. Raises `ValueError` / `OSError` naming `option` for a folder, a path under a file,
    or a folder that cannot be written (read-only disk, permissions)."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{option} {path} is a folder; give a file name (e.g. {os.path.join(path, 'report.json')})")
    folder = os.path.dirname(path)
    parent = folder
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        raise NotADirectoryError(f"{option} {path}: {parent} is a file, not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=folder, prefix=".write-check-")
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        raise OSError(f"{option} {path} cannot be written: {error.strerror or error}") from error
    return path


def check_distinct_outputs(**paths: Optional[str | os.PathLike]) -> None:
    """`ValueError` when two output options name the same file (one would silently replace the other)."""
    seen: dict[str, str] = {}
    for option, path in paths.items():
        if path is None:
            continue
        real = os.path.realpath(os.fspath(path))
        if real in seen:
            raise ValueError(f"{seen[real]} and {option} are the same file ({path}); give them different paths")
        seen[real] = option


def check_output_spares_input(option: str, path: str | os.PathLike, input_name: str,
                              source: str | os.PathLike | None, may_write: Callable[[str], bool] = lambda rel: False) -> None:
    """`ValueError` when the output `path` of `option` would overwrite the input `source` of the same
    command (the same file, or a file inside the input folder); `may_write(relative path)` says which
    paths inside an input folder are outputs, not input (e.g. a report beside a saved pipeline)."""
    if source is None or not os.path.exists(source):
        return
    real, real_source = os.path.realpath(os.fspath(path)), os.path.realpath(os.fspath(source))
    if real == real_source:
        raise ValueError(f"{option} {path} is {input_name} itself; writing it would destroy the input: give another path")
    if os.path.isdir(real_source) and real.startswith(real_source.rstrip(os.sep) + os.sep):
        rel = os.path.relpath(real, real_source).replace(os.sep, "/")
        if not may_write(rel):
            raise ValueError(f"{option} {path} is inside {input_name} {source} ({rel}): writing it would overwrite the "
                             "input's files; give a path outside it")


def json_object_argument(text: str) -> dict:
    """argparse `type=` of a `--*_options` flag: a JSON object (null: no options, `{}`). Errors name what
    was expected; NaN / Infinity (which Python's json accepts) are refused."""
    import argparse
    import json

    example = "'{\"image_size\": 32}'"

    def not_json(constant: str):
        raise ValueError(f"{constant} is not a JSON number")

    try:
        value = json.loads(text, parse_constant=not_json)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not valid JSON ({error}); expected an object such as {example}") from None
    if value is not None and not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"{text!r} is not a JSON object; expected one such as {example}")
    return {} if value is None else value


def exit_with(main: Callable[..., Any], *args: Any, prog: Optional[str] = None) -> NoReturn:
    """The last line of a script: run `main(*args)` through the boundary and exit (status 0 on success,
    whatever `main` returns; 1 after a one-line error).

    Example:
        >>> if __name__ == "__main__":  # doctest: +SKIP
        ...     exit_with(main, parse_args())
    """
    def call() -> int:
        main(*args)
        return 0

    raise SystemExit(run_cli(call, prog=prog))
