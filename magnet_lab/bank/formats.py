"""The file formats of a volume bank: ours (``magnet_lab.bank/1``, safetensors) and the MaGNET
authors' released ``.npz``. Readers return plain tensors and a meta dict; ``VolumeBank`` checks
them. Nothing here unpickles.

Format ``magnet_lab.bank/1``: one ``.safetensors`` file with tensors

=========== ================================= ==============================================
name        dtype / shape                     meaning
=========== ================================= ==============================================
``log_sv``  float64 ``[N, r]``                descending log σ of the Jacobian (−inf: σ=0)
``latents`` float (as built) ``[N, d]``       the latents z (absent when unknown)
``seeds``   int64 ``[N]``                     per-latent seeds (absent when not seeded)
``labels``  int64 ``[N]``                     class labels (absent for unconditional G)
=========== ================================= ==============================================

and the safetensors ``__metadata__`` header entry ``"magnet_lab"``: a JSON string
``{"format": "magnet_lab.bank/1", "meta": {...}}``.

The authors' ``.npz`` holds arrays ``latents``, ``svds`` (singular values) and optionally
``labels``; it is read with ``allow_pickle=False``, σ converted to log σ (0 → −inf), rows sorted
descending, all-zero (unfilled) rows dropped as the authors' loader does.
"""
from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch

from .. import provenance

FORMAT = "magnet_lab.bank/1"
META_KEY = "magnet_lab"
TENSOR_NAMES = ("log_sv", "latents", "seeds", "labels")

Tensors = dict[str, torch.Tensor]


def write_safetensors(path: Path, tensors: Tensors, meta: dict) -> Path:
    """Write ``tensors`` (names in ``TENSOR_NAMES``) and ``meta`` as one ``magnet_lab.bank/1``
    file, atomically (temporary file + rename, folder fsynced). Returns the path. Raises
    ValueError for a path not ending in ``.safetensors`` or a meta that is not
    JSON-serialisable."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"bank files end in .safetensors, got {path}")
    from safetensors.torch import save as st_save
    try:
        header = json.dumps({"format": FORMAT, "meta": provenance.jsonable(meta)},
                            allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"bank meta is not JSON-serialisable: {err}") from err
    tensors = {name: t.contiguous().clone() for name, t in tensors.items()}
    return provenance.write_bytes_atomic(path, st_save(tensors, metadata={META_KEY: header}))


def read_safetensors(path: Path) -> tuple[Tensors, dict]:
    """(tensors, meta) of a ``magnet_lab.bank/1`` file. Raises ValueError naming the path for a
    corrupt or truncated file, a safetensors file that is not a bank, a wrong format version or
    missing/unexpected tensors."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except Exception as err:  # the library raises SafetensorError, OSError, ...
        raise ValueError(f"{path} is not a readable safetensors file (corrupt or "
                         f"truncated?): {err}") from err
    if META_KEY not in header:
        raise ValueError(f"{path} is a safetensors file but not a magnet_lab bank (no "
                         f"{META_KEY!r} entry in its metadata header)")
    try:
        info = json.loads(header[META_KEY])
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: bank metadata is not valid JSON: {err}") from err
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        found = info.get("format") if isinstance(info, dict) else info
        raise ValueError(f"{path}: unsupported bank format {found!r} (this version reads "
                         f"{FORMAT!r})")
    unknown = sorted(set(tensors) - set(TENSOR_NAMES))
    if unknown or "log_sv" not in tensors:
        raise ValueError(f"{path}: bank tensors must be log_sv (required) and optionally "
                         f"latents, seeds, labels; found {sorted(tensors)}")
    return tensors, dict(info.get("meta") or {})


def read_meta(path: Path) -> dict:
    """A bank file's ``meta`` from its safetensors header only (no tensors read). Raises
    ValueError naming the path for a corrupt, truncated or foreign file."""
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as fh:
            info = json.loads((fh.metadata() or {})[META_KEY])
        return dict(info["meta"])
    except Exception as err:  # corrupt, truncated, foreign
        raise ValueError(f"{path} is not a readable bank shard (corrupt or truncated? delete it "
                         f"to recompute it): {err}") from err


def read_authors_npz(path: Path) -> tuple[Tensors, dict]:
    """(tensors ``log_sv``, ``latents`` and maybe ``labels``, meta) of an authors' ``.npz``
    bank, never unpickled. Raises ValueError naming the path for a corrupt file, missing arrays
    (listing the present ones), object arrays, non-float arrays, mismatched rows or singular
    values that are negative, NaN or inf."""
    try:
        with np.load(path, allow_pickle=False) as data:
            present = list(data.files)
            missing = [k for k in ("latents", "svds") if k not in present]
            if missing:
                raise KeyError(missing)
            arrays = {k: data[k] for k in ("latents", "svds", "labels") if k in present}
    except KeyError as err:
        raise ValueError(f"{path}: authors' npz must contain arrays 'latents' and 'svds'; "
                         f"missing {err.args[0]}, present: {present}") from None
    except ValueError as err:  # object arrays (would need pickle) and non-npz pickles
        raise ValueError(f"{path}: cannot read without unpickling (object arrays are "
                         f"refused, allow_pickle=False): {err}") from err
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path} is not a readable .npz file (corrupt?): {err}") from err
    svds, latents = arrays["svds"], arrays["latents"]
    if svds.ndim < 2 or not np.issubdtype(svds.dtype, np.floating):
        raise ValueError(f"{path}: 'svds' must be a float array [..., r], got {svds.dtype} "
                         f"{svds.shape}")
    if latents.ndim < 2 or not np.issubdtype(latents.dtype, np.floating):
        raise ValueError(f"{path}: 'latents' must be a float array [..., d], got "
                         f"{latents.dtype} {latents.shape}")
    # The released files may keep their build's batch axes ([shards, batch, r]); the
    # authors' own loader flattens every leading axis, and so do we.
    svds = svds.reshape(-1, svds.shape[-1])  # [N, r]
    latents = latents.reshape(-1, latents.shape[-1])  # [N, d]
    if "labels" in arrays:
        arrays["labels"] = arrays["labels"].reshape(-1)
    if svds.shape[0] != latents.shape[0]:
        raise ValueError(f"{path}: 'svds' has {svds.shape[0]} rows but 'latents' has "
                         f"{latents.shape[0]}")
    # All-zero rows are slots the authors' build never filled; their loader drops them.
    unfilled = ~np.any(svds != 0, axis=1)
    n_unfilled = int(unfilled.sum())
    if n_unfilled:
        warnings.warn(f"{path}: dropping {n_unfilled} all-zero rows of 'svds' (unfilled "
                      f"slots, as the authors' loader does)", stacklevel=3)
        svds, latents = svds[~unfilled], latents[~unfilled]
        if "labels" in arrays:
            arrays["labels"] = arrays["labels"][~unfilled]
        if svds.shape[0] == 0:
            raise ValueError(f"{path}: every row of 'svds' is zero; nothing to load")
    sv = torch.from_numpy(np.array(svds, dtype=np.float64))  # [N, r]
    n_nan, n_inf, n_neg = (int(torch.isnan(sv).sum()), int(torch.isinf(sv).sum()),
                           int((sv < 0).sum()))
    if n_nan or n_inf or n_neg:
        raise ValueError(f"{path}: 'svds' must be finite singular values >= 0; found "
                         f"{n_nan} NaN, {n_inf} inf, {n_neg} negative")
    tensors = {"log_sv": torch.log(sv).sort(dim=1, descending=True).values}  # 0 -> -inf, last
    if "labels" in arrays:
        lab = arrays["labels"]
        if lab.ndim != 1 or not np.issubdtype(lab.dtype, np.integer):
            raise ValueError(f"{path}: 'labels' must be an integer array [N], got "
                             f"{lab.dtype} {lab.shape}")
        tensors["labels"] = torch.from_numpy(lab.astype(np.int64))
    latents = np.array(latents, dtype=latents.dtype.newbyteorder("="))  # native byte order
    tensors["latents"] = torch.from_numpy(latents)
    meta = {"generator_id": None, "method": "authors_npz", "proj_dim": None, "top_k": None,
            "source": str(path), "npz_arrays": present, "npz_rows_dropped": n_unfilled,
            "provenance": provenance.provenance()}
    return tensors, meta
