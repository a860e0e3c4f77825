"""Writing results safely: paths checked before any work, files written whole or not at all.

A run can take minutes; a bad output path must fail before it starts, and a failure while writing
(a full disk, a killed process) must leave the earlier file as it was: every file is written to a
temporary name beside it and renamed over the target only when complete.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import PintrainError


def check_folder(folder: Path, flag: str) -> None:
    """Create ``folder`` if needed and check that a file can be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".pintrain-write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise PintrainError(f"{flag} {folder}: cannot write there ({err.strerror or err})") from None


def plot_format(path: Path, flag: str = "--plot") -> str:
    """The image format of ``path`` from its extension (none: PNG); refused if matplotlib cannot write it."""
    suffix = path.suffix.lower().lstrip(".")
    if not suffix:
        return "png"
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    supported = Figure().canvas.get_supported_filetypes()
    if suffix not in supported:
        known = ", .".join(supported)
        raise PintrainError(f"{flag} {path}: matplotlib cannot write .{suffix} files; use one of .{known}")
    return suffix


def check_outputs(outputs: dict[str, Path | None]) -> None:
    """Check every output path given (``{flag: path}``) before any work: distinct, not a folder,
    in a folder that exists or can be made and is writable, and for ``--plot`` a known format."""
    seen: dict[Path, str] = {}
    for flag, path in outputs.items():
        if path is None:
            continue
        key = path.resolve()
        if key in seen:
            raise PintrainError(f"{seen[key]} and {flag} name the same file {path}: give each its own path")
        seen[key] = flag
        if path.is_dir():
            raise PintrainError(f"{flag} {path} is a folder; give a file path")
        check_folder(path.parent, flag)
        if flag == "--plot":
            plot_format(path)


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path``.

    On any failure the temporary file is removed and ``path`` keeps its earlier content."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        reason = err.strerror or err
        raise PintrainError(f"could not write {path}: {reason} (the earlier file, if any, is kept)") from None
    finally:
        if tmp.exists():
            tmp.unlink()


def json_ready(obj: Any) -> Any:
    """NaN and infinities become null, numpy scalars plain numbers: the JSON stays valid."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_ready(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return json_ready(obj.item())
    return obj


def write_json(path: Path, record: Any) -> None:
    text = json.dumps(json_ready(record), indent=1, allow_nan=False)
    write_atomic(path, lambda tmp: tmp.write_text(text))


def write_text(path: Path, text: str) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(text))


def save_figure(fig: Any, path: Path) -> None:
    """``fig.savefig`` to exactly ``path`` (format from its extension; none: PNG), atomically."""
    fmt = plot_format(path)
    write_atomic(path, lambda tmp: fig.savefig(tmp, dpi=100, format=fmt))
