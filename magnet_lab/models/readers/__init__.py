"""Checkpoint readers: one module per file format, chosen by the file's content, not its name.

A checkpoint is a weights file plus a JSON sidecar ``<stem>.json`` recording at least
``architecture`` (a name in ``magnet_lab.registry.ARCHITECTURES``) and ``kwargs`` (its constructor
arguments), plus whatever training record the writer adds and ``provenance``. ``READERS`` lists
the format modules in the order they are tried; each has ``NAME``, ``DESCRIPTION``, ``SUFFIXES``,
``READABLE`` (False: recognised only to be refused), ``sniff(head: bytes) -> bool`` (the file's
first ``HEAD_BYTES``) and ``read(path) -> (state_dict, metadata)``. Today: ``safetensors_file`` (ours), ``torch_file`` (``torch.load(weights_only=True)``),
``nvidia_pickle`` (NVIDIA StyleGAN2 and StyleGAN3 pickles through a restricted unpickler:
allow-listed globals resolved to our stand-ins, nothing from the file executed) and ``pickle_file`` (every other
pickle: recognised and refused). Adding a format is one module plus one entry here.

One folder format: ``biggan_folder`` (pytorch-pretrained-biggan's ``pytorch_model.bin`` +
``config.json``, read strictly into ``BigGANDeep``'s state dict, spectral norm folded).

``read_stylegan2(path) -> (state, config)`` reads any StyleGAN2 generator checkpoint (NVIDIA ADA,
stylegan3-repository and TensorFlow pickles, rosinality ``.pt``) into the key names of
stylegan2-ada-pytorch's ``Generator.state_dict()`` and that repository's nested constructor kwargs.
``read_stylegan3(path)`` reads a stylegan3-repository StyleGAN3 generator (configs T, R) into the
official names and our ``StyleGAN3Generator`` kwargs; ``read_generator(path)`` returns
``(architecture, state, config)`` for whichever StyleGAN a sidecar-less file holds.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from ... import provenance as _prov
from . import nvidia_pickle, pickle_file, rosinality, safetensors_file, torch_file

__all__ = ["HEAD_BYTES", "READERS", "SHA_FIELD", "WEIGHT_SUFFIXES", "build_model",
           "check_finite_state", "file_sha256", "identify", "load_checkpoint", "read_generator",
           "read_state_dict", "read_stylegan2", "read_stylegan3", "save_checkpoint", "sidecar_path"]

READERS: tuple[ModuleType, ...] = (safetensors_file, torch_file, nvidia_pickle, pickle_file)
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")  # what registry names treat as a path
HEAD_BYTES = 64
SHA_FIELD = "weights_sha256"  # the sidecar field holding the weights file's SHA-256
_BOUND_FIELDS = ("architecture", "kwargs")  # sidecar fields the safetensors metadata must agree with


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of a weights file: same folder and stem, suffix ``.json``."""
    return Path(path).with_suffix(".json")


def identify(path: str | os.PathLike) -> ModuleType:
    """The reader module for the file at ``path``, chosen by its first bytes whatever its suffix.
    Raises FileNotFoundError for a missing file and ValueError naming the path for an empty file
    or content no reader recognises (quoting its first bytes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    if not head:
        raise ValueError(f"{path}: checkpoint file is empty")
    for reader in READERS:
        if reader.sniff(head):
            return reader
    readable = ", ".join(r.DESCRIPTION for r in READERS if r.READABLE)
    raise ValueError(f"{path}: unrecognised checkpoint content (first bytes {head[:12]!r}), "
                     f"refused; readable formats: {readable}")


def _read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``reader.read(path)`` for the reader chosen by content; a suffix that belongs to another
    format is named in any refusal, so 'a pickle named .safetensors' reads as such."""
    reader = identify(path)
    try:
        return reader.read(path)
    except ValueError as err:
        claimed = [r.DESCRIPTION for r in READERS if r is not reader and path.suffix in r.SUFFIXES]
        if not claimed or path.suffix in reader.SUFFIXES:  # .pkl is both pickle readers' suffix
            raise
        raise ValueError(f"{err} (the file is named {path.suffix}, suggesting {claimed[0]}, but its "
                         f"content is {reader.DESCRIPTION})") from err


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` state dict (CPU) of a weights file in any readable format (no
    sidecar needed), e.g. a standard feature extractor's weights. Raises as ``identify`` does and
    ValueError naming the path for refused, corrupt or truncated content."""
    return _read(Path(path))[0]


def read_stylegan2(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state, config)`` of the StyleGAN2 generator in ``path``, dispatched by content: a torch
    file whose ``weights_only`` load holds ``g_ema`` is a rosinality checkpoint; a raw pickle goes
    through the restricted NVIDIA unpickler (persistence objects: ADA/stylegan3 repository;
    ``dnnlib.tflib.network.Network``: TensorFlow). ``state`` holds float32 CPU tensors named as
    stylegan2-ada-pytorch's ``Generator.state_dict()``; ``config`` is the JSON-able
    ``{z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs, synthesis_kwargs}``
    with every default filled, so ``Generator(**config).load_state_dict(state)`` is exact.
    Raises as ``identify`` does, and ValueError naming the path for a refused global, corrupt
    or truncated content, a StyleGAN3 generator, or any other format."""
    path = Path(path)
    reader = identify(path)
    if reader is torch_file:
        return rosinality.read_stylegan2(path)
    if reader in (nvidia_pickle, pickle_file):
        return nvidia_pickle.read_stylegan2(path)
    raise ValueError(f"{path}: {reader.DESCRIPTION} holds no StyleGAN2 generator configuration; "
                     "readable: NVIDIA StyleGAN2 .pkl (ADA, stylegan3 repository, TensorFlow) "
                     "and rosinality .pt")


def read_stylegan3(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state, config)`` of the StyleGAN3 generator in a stylegan3-repository pickle (``G_ema``,
    configs T and R, conditional or not), read by content through the restricted unpickler:
    ``state`` float32 CPU tensors under the official names, ``config`` the kwargs of our
    ``StyleGAN3Generator`` (every default filled), so ``StyleGAN3Generator(**config)
    .load_state_dict(state)`` is exact. Raises as ``identify`` does, and ValueError naming the
    path for a refused global, corrupt or truncated content, or a file holding no StyleGAN3."""
    path = Path(path)
    reader = identify(path)
    if reader in (nvidia_pickle, pickle_file):
        return nvidia_pickle.read_stylegan3(path)
    raise ValueError(f"{path}: {reader.DESCRIPTION} holds no StyleGAN3 generator; readable: "
                     "stylegan3-repository .pkl snapshots (G_ema)")


def read_generator(path: str | os.PathLike) -> tuple[str, dict[str, torch.Tensor], dict[str, Any]]:
    """``(architecture, state, config)`` of the StyleGAN generator in a sidecar-less file, by
    content: ``"StyleGAN3Generator"`` (``read_stylegan3``) or ``"StyleGAN2Generator"``
    (``read_stylegan2``: NVIDIA ADA / stylegan3-repository / TensorFlow pickles, rosinality
    ``.pt``), so ``ARCHITECTURES[architecture](**config)`` loads ``state`` strictly. Raises as
    ``read_stylegan2`` does."""
    path = Path(path)
    reader = identify(path)
    if reader is torch_file:
        return ("StyleGAN2Generator", *rosinality.read_stylegan2(path))
    if reader in (nvidia_pickle, pickle_file):
        return nvidia_pickle.read_generator(path)
    raise ValueError(f"{path}: {reader.DESCRIPTION} holds no StyleGAN generator configuration; "
                     "readable: NVIDIA StyleGAN2/StyleGAN3 .pkl and rosinality .pt")


def save_checkpoint(model: nn.Module, path: str | os.PathLike, sidecar: Mapping[str, Any]) -> Path:
    """Write ``model.state_dict()`` to ``path`` (.safetensors) with the sidecar's ``architecture``
    and ``kwargs`` in its ``__metadata__``, and ``sidecar`` to ``<path>.json``, each atomically.
    ``provenance`` is added to the sidecar when absent. Raises ValueError for a wrong suffix, a
    missing ``architecture``/``kwargs``, kwargs that are not a JSON object, or non-finite weights."""
    path = Path(path)
    if path.suffix not in safetensors_file.SUFFIXES:
        raise ValueError(f"checkpoints are written as .safetensors, got {path}")
    for key in _BOUND_FIELDS:
        if key not in sidecar:
            raise ValueError(f"sidecar must contain {key!r} (got keys {sorted(sidecar)})")
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    check_finite_state(state, path)
    record = dict(sidecar)
    record.setdefault("provenance", _prov.provenance())
    blob = safetensors_file.encode(state, record["architecture"], record["kwargs"])
    record[SHA_FIELD] = hashlib.sha256(blob).hexdigest()
    _prov.write_bytes_atomic(path, blob)
    _prov.write_json_atomic(sidecar_path(path), record)
    for p in (path, sidecar_path(path)):  # mkstemp creates 0600; shipped files are world-readable
        os.chmod(p, 0o644)
    return path


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``(state_dict, sidecar)`` on CPU from a weights file (format chosen by content) and
    its ``.json`` sidecar. When the file's safetensors ``__metadata__`` records ``architecture``
    / ``kwargs`` (everything ``save_checkpoint`` writes), the sidecar must agree with it; a file
    without them (a user's own safetensors, a ``.pt``) has the sidecar as its only description.
    Raises FileNotFoundError for a missing weights file or sidecar and ValueError naming the path
    for empty, unrecognised, pickled, corrupt or truncated content, a sidecar that is not JSON or
    lacks ``architecture``, a sidecar field that disagrees with the metadata (naming the field
    and both values), and NaN/inf weights."""
    path = Path(path)
    state, metadata = _read(path)
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
    _check_bound(sidecar, metadata, side, path)
    _check_digest(sidecar, path, side)
    check_finite_state(state, path)
    return state, sidecar


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 hex digest of the file at ``path`` (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_digest(sidecar: Mapping[str, Any], path: Path, side: Path) -> None:
    """A sidecar that records the weights file's SHA-256 must match the file (a sidecar without
    one, e.g. a user's own, still loads)."""
    want = sidecar.get(SHA_FIELD)
    if want is None:
        return
    got = file_sha256(path)
    if got != want:
        raise ValueError(f"{path}: SHA-256 {got[:16]}… differs from the {want[:16]}… recorded in "
                         f"{side.name}: the weights file was changed or damaged after it was "
                         "written; refused")


def _check_bound(sidecar: Mapping[str, Any], metadata: Mapping[str, str], side: Path,
                 path: Path) -> None:
    """The sidecar's architecture/kwargs must equal those the weights were saved with."""
    for field in _BOUND_FIELDS:
        if field not in metadata:
            continue
        saved: Any = metadata[field]
        if field == "kwargs":
            try:
                saved = json.loads(saved)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: metadata 'kwargs' is not JSON ({err})") from err
        ours = sidecar.get(field)
        if ours == saved:
            continue
        if isinstance(ours, dict) and isinstance(saved, dict):
            absent = "<absent>"
            diff = sorted(k for k in set(ours) | set(saved) if ours.get(k, absent) != saved.get(k, absent))
            detail = "; ".join(f"{field}.{k}: sidecar {ours.get(k, absent)!r} vs weights "
                               f"{saved.get(k, absent)!r}" for k in diff)
        else:
            detail = f"{field}: sidecar {ours!r} vs weights {saved!r}"
        raise ValueError(f"{side}: sidecar disagrees with the configuration saved in {path.name} "
                         f"({detail}); the weights were trained with the latter")


def check_finite_state(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Refuse a state dict holding NaN/inf in any floating tensor: ValueError naming ``path``
    and the first tensors (with how many non-finite entries each)."""
    bad = [f"{k} ({int((~torch.isfinite(v)).sum())} of {v.numel()})" for k, v in state.items()
           if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ValueError(f"{path}: non-finite (NaN/inf) weights in {', '.join(bad[:5])}{more}; "
                         "refused")


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
