"""The one door to every model the project knows: ``load_generator`` and ``load_classifier``.

Adding an architecture is one entry in ``ARCHITECTURES`` (sidecar name → ``nn.Module`` class built
with the sidecar's ``kwargs``); adding a shipped model is one entry in ``GENERATORS`` or
``CLASSIFIERS`` (built-in name → file under ``magnet_lab.paths.data_dir()``). A StyleGAN file
without a sidecar — NVIDIA's ``.pkl`` (stylegan2-ada-pytorch, stylegan3 repository incl. its
StyleGAN3 T/R generators, TensorFlow) or a rosinality ``.pt`` — is read by
``models.readers.read_generator`` (never unpickled) into our ``StyleGAN2Generator`` or
``StyleGAN3Generator``; a BigGAN-deep folder of ``pytorch-pretrained-biggan``
(``pytorch_model.bin`` + ``config.json``) by ``models.readers.biggan_folder`` into our
``BigGANDeep``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import latent, paths
from .models.biggan import BigGANDeep
from .models.readers import (WEIGHT_SUFFIXES, biggan_folder, build_model, check_finite_state,
                             identify, load_checkpoint, read_generator, safetensors_file,
                             sidecar_path)
from .models.fmnist import FmnistBigGAN, FmnistClassifier, FmnistDCGAN, FmnistStyleGAN2
from .models.stylegan2 import StyleGAN2Generator
from .models.stylegan3 import StyleGAN3Generator

ARCHITECTURES: dict[str, type[nn.Module]] = {
    "FmnistDCGAN": FmnistDCGAN,
    "FmnistClassifier": FmnistClassifier,
    "StyleGAN2Generator": StyleGAN2Generator,
    "FmnistStyleGAN2": FmnistStyleGAN2,
    "BigGANDeep": BigGANDeep,
    "StyleGAN3Generator": StyleGAN3Generator,
    "FmnistBigGAN": FmnistBigGAN,
}
GENERATORS: dict[str, str] = {"fmnist-dcgan": "fmnist-dcgan.safetensors",
                              "fmnist-stylegan2": "fmnist-stylegan2.safetensors",
                              "fmnist-biggan": "fmnist-biggan.safetensors"}
CLASSIFIERS: dict[str, str] = {"fmnist": "fmnist-classifier.safetensors"}


def _resolve(spec: str | os.PathLike, table: dict[str, str], kind: str) -> Path:
    if isinstance(spec, str) and spec in table:
        path = paths.data_dir() / table[spec]
        if not path.is_file():
            raise FileNotFoundError(f"built-in {kind} {spec!r} expects {path}, which is missing; "
                                    "recreate it with `python scripts/train_fmnist.py --out data/`")
        return path
    path = Path(spec).expanduser()
    looks_like_path = (not isinstance(spec, str) or path.suffix in WEIGHT_SUFFIXES + (".pkl",)
                       or os.sep in str(spec) or path.exists())
    if not looks_like_path:
        raise ValueError(f"unknown {kind} {spec!r}; known names: {sorted(table)} "
                         f"(or pass a path to a {'/'.join(WEIGHT_SUFFIXES)} file with a .json sidecar)")
    return path


def _load(path: Path, device: str | torch.device, dtype: torch.dtype, *,
          stylegan2: bool = False) -> nn.Module:
    if stylegan2 and path.is_file() and not sidecar_path(path).is_file() and \
            biggan_folder.is_biggan_folder(path.parent) and path.name == biggan_folder.WEIGHTS_NAME:
        path = path.parent  # the folder's pytorch_model.bin: read the folder
    if path.is_dir():  # the one folder format; read_biggan names what a folder lacks
        if not stylegan2:
            raise ValueError(f"{path} is a directory; the only folder format read is "
                             f"{biggan_folder.DESCRIPTION}, a generator")
        state, config = biggan_folder.read_biggan(path)
        sidecar = {"architecture": "BigGANDeep", "kwargs": config,
                   "source": {"folder": str(path), "reader": biggan_folder.NAME}}
        return _built(state, sidecar, path, device, dtype)
    reader = identify(path) if stylegan2 and not sidecar_path(path).is_file() else None
    if reader is not None and reader is not safetensors_file:
        architecture, state, config = read_generator(path)  # NVIDIA .pkl / rosinality .pt
        check_finite_state(state, path)
        sidecar = {"architecture": architecture, "kwargs": config,
                   "source": {"file": str(path), "reader": reader.NAME}}
    else:
        state, sidecar = load_checkpoint(path)
    return _built(state, sidecar, path, device, dtype)


def _built(state: dict[str, torch.Tensor], sidecar: dict[str, Any], path: Path,
           device: str | torch.device, dtype: torch.dtype) -> nn.Module:
    model = build_model(state, sidecar, ARCHITECTURES, source=path)
    model.to(device=device, dtype=dtype).eval().requires_grad_(False)
    model.sidecar = sidecar
    return model


def load_generator(spec: str | os.PathLike, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, **options: Any) -> nn.Module:
    """A generator in eval mode with frozen parameters, ``z_dim`` and ``forward(z [B, z_dim]) ->
    [B, C, H, W]`` (about [-1, 1]); ``spec`` is a built-in name (``GENERATORS``), a checkpoint
    with a JSON sidecar, a StyleGAN file without one (NVIDIA ``.pkl`` of stylegan2-ada-pytorch,
    the stylegan3 repository — StyleGAN2, or StyleGAN3 T/R into our ``StyleGAN3Generator`` — or
    TensorFlow StyleGAN2; rosinality ``.pt``), or a BigGAN-deep folder (``pytorch_model.bin`` +
    ``config.json``; a conditional ``BigGANDeep``, called ``G(z, c)``), read without running its
    code. ``options`` set the run options — StyleGAN2: ``psi``, ``cutoff``, ``noise_mode``
    (``"const"``, ``"random"`` with ``noise_seed``, ``"none"``), ``modulation``; StyleGAN3:
    ``psi``, ``cutoff``, ``transform``; BigGAN-deep: ``truncation``, ``stats_rule``, ``z_scale``
    (the MaGNET authors' recipe: ``**models.biggan.AUTHORS_RECIPE``) — which a
    plain ``G(z)`` (``G(z, c)``) then uses. The record of where it came from is
    ``model.sidecar``; how its candidates are drawn is ``model.latent_spec``
    (``latent.LatentSpec``: the law, ``z_dim``, its classes when conditional, and ``options`` as
    its run options). Raises ValueError for an unknown name (listing the known ones), a bad or
    refused checkpoint, or options the generator does not take; FileNotFoundError for a missing
    file or sidecar."""
    path = _resolve(spec, GENERATORS, "generator")
    model = _load(path, device, dtype, stylegan2=True)
    if not isinstance(getattr(model, "z_dim", None), int):
        raise ValueError(f"{path}: architecture {model.sidecar['architecture']} is not a generator "
                         "(no integer z_dim)")
    if options:
        if not callable(getattr(model, "with_options", None)):
            raise ValueError(f"{path}: {type(model).__name__} takes no run options, got "
                             f"{sorted(options)} (truncation of a plain generator is a "
                             "generation setting: models.generate(G, z, psi=...))")
        sidecar, model = model.sidecar, model.with_options(**options)
        model.sidecar = sidecar
    c_dim = getattr(model, "c_dim", 0)
    model.latent_spec = latent.LatentSpec(latent_law(model), model.z_dim,
                                          n_classes=c_dim if c_dim else None,
                                          run_options=dict(options))
    return model


def latent_law(model: nn.Module) -> latent.GaussianLaw | latent.TruncatedNormalLaw:
    """The law a family's candidates are drawn from: BigGAN-deep's is a normal truncated to
    [−2, 2] scaled by its truncation (``truncation · truncnorm(−2, 2)``, as the reference's
    ``truncated_noise_sample`` and the authors' baseline draw it); every other family's is the
    standard Gaussian."""
    own = getattr(model, "latent_law", None)
    return own() if callable(own) else latent.GaussianLaw()


def load_classifier(spec: str | os.PathLike = "fmnist", device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> nn.Module:
    """A classifier in eval mode with frozen parameters: ``forward(x) -> logits [B, n_classes]``
    and ``features(x) -> [B, F]``; ``spec`` is a built-in name (``CLASSIFIERS``) or a path.
    Raises as ``load_generator`` does."""
    path = _resolve(spec, CLASSIFIERS, "classifier")
    model = _load(path, device, dtype)
    if not callable(getattr(model, "features", None)):
        raise ValueError(f"{path}: architecture {model.sidecar['architecture']} is not a "
                         "classifier (no features())")
    return model
