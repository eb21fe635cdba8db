"""Files written by ``torch.save``, read only through ``torch.load(weights_only=True)``.

Two containers: the zip archive of torch >= 1.6 (starts ``PK\\x03\\x04``) and the legacy format
(a pickled magic number, then pickles; e.g. torchvision's ``vgg16-397923af.pth``). Both are handed
to torch's weights-only unpickler, which accepts tensors and plain containers and refuses any
other global (``os.system``, ``builtins.eval``, a user class) without calling it. Our own
message replaces torch's, which would advise re-running with ``weights_only=False``.
"""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import torch

NAME = "torch"
DESCRIPTION = "a torch.save file"
SUFFIXES = (".pt", ".pth")
READABLE = True
_ZIP_MAGIC = b"PK\x03\x04"
# torch.serialization.MAGIC_NUMBER (0x1950a86a20f9469cfc6c) as the pickle LONG1 opcode writes it
_LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_GLOBAL = re.compile(r"GLOBAL ([A-Za-z_][\w.]*)")


def sniff(head: bytes) -> bool:
    """True for a torch zip archive or a legacy ``torch.save`` file (a pickle that opens with
    torch's magic number); a plain pickle is not a torch file."""
    return head.startswith(_ZIP_MAGIC) or (head[:1] == b"\x80" and _LEGACY_MAGIC in head[:32])


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(load_state_dict(path), {})``: torch files carry no metadata we trust."""
    return load_state_dict(path), {}


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` state dict (CPU) in a ``torch.save`` file, read with
    ``torch.load(weights_only=True)``; a ``{"state_dict": {...}}`` wrapper is unwrapped. This is
    the project's one safe ``.pt`` loader. Raises ValueError naming the path for a file holding
    anything but tensors (naming the refused global, e.g. ``posix.system``, when torch names one),
    a corrupt or truncated file, or a payload that is not a dict of str → Tensor."""
    path = Path(path)
    refusal = None
    try:  # a file object, not the path: torch.load would pick its own reader by suffix
        with open(path, "rb") as fh:
            obj = torch.load(fh, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure becomes one clean refusal below
        refusal = refusal_detail(err)
    if refusal is not None:  # raised outside the handler: torch's advice is in no chain
        if refusal.startswith("it holds"):
            refusal += (", and only plain tensor state dicts are read from torch files (nothing "
                        "in the file was executed); convert a file you trust to .safetensors "
                        "with a .json sidecar")
        raise ValueError(f"{path}: refused to load: {refusal}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in obj.items()):
        raise ValueError(f"{path}: expected a state dict of str -> Tensor, got {type(obj).__name__}")
    return dict(obj)


def refusal_detail(err: BaseException) -> str:
    """What a failed ``torch.load(weights_only=True)`` says about the file, in our words: "it
    holds the disallowed global posix.system" (or "a non-tensor object") for a refusal of the
    weights-only unpickler, else "corrupt or truncated torch file (<type>: <first line>)".
    torch's own text is repeated only when it gives no advice about ``weights_only``; callers
    raise their error outside the ``except`` block with ``from None``, so no traceback or
    ``__cause__``/``__context__`` chain carries torch's advice to set it to False."""
    if isinstance(err, pickle.UnpicklingError):
        found = _GLOBAL.search(str(err))
        what = f"the disallowed global {found.group(1)}" if found else "a non-tensor object"
        return f"it holds {what}"
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    detail = "no usable detail" if not lines or "weights_only" in str(err) else lines[0][:200]
    return f"corrupt or truncated torch file ({type(err).__name__}: {detail})"
