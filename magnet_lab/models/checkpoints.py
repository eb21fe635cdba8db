"""Safe checkpoints: safetensors weights + a JSON sidecar; nothing is ever unpickled.

A checkpoint ``<name>.safetensors`` has a sidecar ``<name>.json`` recording at least
``architecture`` (a name in ``magnet_lab.registry.ARCHITECTURES``) and ``kwargs`` (its constructor
arguments), plus whatever training record the writer adds (seed, steps, data split, metrics) and
``provenance`` (versions, git commit). ``.pt``/``.pth`` files are read only through
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects without running them.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import provenance as _prov

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a weights file: same folder and stem, suffix ``.json``."""
    return Path(path).with_suffix(".json")


def save_checkpoint(model: nn.Module, path: str | os.PathLike, sidecar: Mapping[str, Any]) -> Path:
    """Write ``model.state_dict()`` to ``path`` (.safetensors) and ``sidecar`` to ``<path>.json``,
    each atomically. ``sidecar`` must name ``architecture`` and ``kwargs``; ``provenance`` is added
    when absent. Raises ValueError for a wrong suffix, a missing key or non-finite weights."""
    from safetensors.torch import save as st_save

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoints are written as .safetensors, got {path}")
    for key in ("architecture", "kwargs"):
        if key not in sidecar:
            raise ValueError(f"sidecar must contain {key!r} (got keys {sorted(sidecar)})")
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    _check_finite_state(state, path)
    record = dict(sidecar)
    record.setdefault("provenance", _prov.provenance())
    blob = st_save(state, metadata={"architecture": str(record["architecture"]),
                                    "format": "magnet_lab-checkpoint-1"})
    _prov.write_bytes_atomic(path, blob)
    _prov.write_json_atomic(sidecar_path(path), record)
    for p in (path, sidecar_path(path)):  # mkstemp creates 0600; shipped files are world-readable
        os.chmod(p, 0o644)
    return path


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``(state_dict, sidecar)`` from a .safetensors (or weights-only .pt/.pth) file and its
    ``.json`` sidecar, on CPU. Raises FileNotFoundError for a missing weights file or sidecar and
    ValueError naming the path for an empty, corrupt or pickled-object file, a sidecar that is not
    JSON or lacks ``architecture``, and NaN/inf weights."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix not in WEIGHT_SUFFIXES:
        raise ValueError(f"{path}: unsupported checkpoint suffix {path.suffix!r}; "
                         f"expected one of {WEIGHT_SUFFIXES}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: checkpoint file is empty")
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(f"{path}: sidecar {side} not found; a checkpoint needs a JSON "
                                "sidecar naming its 'architecture' and 'kwargs'")
    try:
        sidecar = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{side}: sidecar is not valid JSON ({err})") from err
    if not isinstance(sidecar, dict) or not isinstance(sidecar.get("architecture"), str):
        raise ValueError(f"{side}: sidecar must be a JSON object with a string 'architecture'")
    state = _read_safetensors(path) if path.suffix == ".safetensors" else _read_torch(path)
    _check_finite_state(state, path)
    return state, sidecar


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own SafetensorError (and OSError) types
        raise ValueError(f"{path}: not a valid safetensors file ({type(err).__name__}: {err})") from err


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for non-tensor globals, RuntimeError for junk
        raise ValueError(f"{path}: refused to load: only plain tensor state_dicts can be read from "
                         f".pt/.pth files; the file holds something else or is corrupt "
                         f"({type(err).__name__}: {_reason(err)}). Convert trusted files to "
                         f".safetensors with a .json sidecar instead.") from err
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in obj.items()):
        raise ValueError(f"{path}: expected a dict of str -> Tensor, got {type(obj).__name__}")
    return dict(obj)


def _reason(err: Exception) -> str:
    """The informative line of a torch.load error (e.g. 'Unsupported global: GLOBAL io.open ...')."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for ln in lines:
        if "Unsupported global" in ln or "WeightsUnpickler error" in ln:
            return ln.split(". Please use")[0]
    return lines[0][:300] if lines else "no message"


def _check_finite_state(state: Mapping[str, torch.Tensor], path: Path) -> None:
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"{path}: non-finite (NaN/inf) weights in {bad}")


def build_model(state: Mapping[str, torch.Tensor], sidecar: Mapping[str, Any],
                architectures: Mapping[str, type[nn.Module]], *, source: str | os.PathLike = "<state>"
                ) -> nn.Module:
    """Instantiate ``architectures[sidecar['architecture']](**sidecar['kwargs'])`` and load ``state``
    strictly. Raises ValueError for an unknown architecture (listing the known ones), bad kwargs,
    or keys/shapes that do not match (naming the missing, unexpected and mis-shaped keys)."""
    name = sidecar.get("architecture")
    if name not in architectures:
        raise ValueError(f"{source}: unknown architecture {name!r}; known: {sorted(architectures)}")
    kwargs = sidecar.get("kwargs", {})
    if not isinstance(kwargs, dict):
        raise ValueError(f"{source}: sidecar 'kwargs' must be an object, got {type(kwargs).__name__}")
    try:
        model = architectures[name](**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: cannot build {name}(**{kwargs}): {err}") from err
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
                        for k in set(expected) & set(state) if state[k].shape != expected[k].shape)
    if missing or unexpected or mis_shaped:
        raise ValueError(f"{source}: weights do not match architecture {name}({kwargs}): "
                         f"missing keys {missing}, unexpected keys {unexpected}, "
                         f"shape mismatches {mis_shaped}")
    model.load_state_dict(dict(state), strict=True)
    return model
