"""Raw Python pickles (``pickle.dump`` output) other than NVIDIA's: recognised, refused.

Unpickling runs whatever the file names, so these are never opened with ``pickle``. ``read``
only explains, in one line, what the file seems to be. NVIDIA StyleGAN2 pickles are read by
``nvidia_pickle`` (a restricted unpickler), listed before this module; one whose first bytes did
not say so is pointed to ``read_stylegan2`` here.
"""
from __future__ import annotations

from pathlib import Path

import torch

NAME = "pickle"
DESCRIPTION = "a raw Python pickle"
SUFFIXES = (".pkl", ".pickle")
READABLE = False
_NVIDIA_MODULES = (b"dnnlib", b"torch_utils")  # what NVIDIA's StyleGAN pickles reference early


def sniff(head: bytes) -> bool:
    """True for a pickle of protocol 2 or newer (``\\x80`` then the protocol number)."""
    return len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def read(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Never returns: raises ValueError naming the path and what the pickle seems to be."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if any(m in head for m in _NVIDIA_MODULES):
        raise ValueError(f"{path}: seems to be an NVIDIA StyleGAN pickle (references dnnlib/"
                         "torch_utils), refused here; read it with magnet_lab.models.readers."
                         "read_stylegan2 (a restricted unpickler)")
    raise ValueError(f"{path}: a raw Python pickle, refused: unpickling runs code from the file; "
                     "save the weights as .safetensors with a .json sidecar instead")
