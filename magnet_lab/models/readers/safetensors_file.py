"""Our checkpoint format: a safetensors file whose ``__metadata__`` binds it to its configuration.

Layout (the safetensors spec): 8 bytes little-endian header length ``n``, ``n`` bytes of JSON
header (starting with ``{``), then the raw tensor bytes. ``encode`` (what
``readers.save_checkpoint`` writes) puts ``architecture``, ``kwargs`` (JSON, sorted keys) and
``format`` into the header's ``__metadata__``, so an edited sidecar is caught at load time.
Nothing here runs code from the file: safetensors holds only tensors and strings.
"""
from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

NAME = "safetensors"
DESCRIPTION = "a safetensors file"
SUFFIXES = (".safetensors",)
READABLE = True
FORMAT = "magnet_lab-checkpoint-1"
_MAX_HEADER = 100_000_000  # the safetensors library's own limit on the JSON header


def sniff(head: bytes) -> bool:
    """True when ``head`` (the file's first bytes) starts like a safetensors file: a plausible
    8-byte little-endian header length followed by ``{``."""
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 2 <= n <= _MAX_HEADER and head[8:9] == b"{"


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(state_dict, metadata)`` of a safetensors file, on CPU; ``metadata`` is the header's
    ``__metadata__`` (empty when absent). Raises ValueError naming the path for a corrupt or
    truncated file."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            metadata = dict(fh.metadata() or {})
            state = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as err:  # safetensors raises its own SafetensorError (and OSError) types
        raise ValueError(f"{path}: not a valid safetensors file, corrupt or truncated "
                         f"({type(err).__name__}: {_first_line(err)})") from err
    return state, metadata


def encode(state: Mapping[str, torch.Tensor], architecture: str, kwargs: Mapping[str, Any]) -> bytes:
    """The bytes of a safetensors file holding ``state`` (contiguous CPU tensors) with
    ``architecture``, ``kwargs`` (as sorted-key JSON) and ``format`` in ``__metadata__``.
    Raises ValueError when ``kwargs`` is not a JSON object."""
    from safetensors.torch import save as st_save

    if not isinstance(kwargs, Mapping):
        raise ValueError(f"kwargs must be a mapping of constructor arguments, got {type(kwargs).__name__}")
    try:
        kwargs_json = json.dumps(dict(kwargs), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"kwargs must be JSON-serialisable, got {dict(kwargs)!r} ({err})") from err
    return st_save(dict(state), metadata={"architecture": str(architecture), "kwargs": kwargs_json,
                                          "format": FORMAT})


def _first_line(err: Exception) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0][:200] if lines else "no message"
