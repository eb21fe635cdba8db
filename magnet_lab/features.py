"""Feature extractors: images ``[N, C, H, W]`` → features ``[N, F]`` for the metrics.

``extract_features`` runs any module with ``.features`` (our classifier) or any callable on
batches; ``register_classifier_extractor`` hands such a model to torch-fidelity under a name;
``standard_extractor`` builds torch-fidelity's InceptionV3 / VGG16 from a *local* weights file,
read through ``magnet_lab.models.readers`` (never unpickled, never downloaded); and
``fidelity_inputs`` turns an extractor and two image sets into ``calculate_metrics`` arguments.
``torch_fidelity_api`` imports torch-fidelity in one place, for this module and ``metrics``.
Images are float in [-1, 1] or uint8; features are float64 on CPU.
"""
from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from . import config, data, paths
from .models import batched, eval_mode, module_device_dtype
from .models.readers import read_state_dict
from .spectra import precision_flags
from .validation import check_finite

__all__ = ["StandardExtractor", "check_images", "extract_features", "fidelity_inputs",
           "register_classifier_extractor", "standard_extractor"]

_CLASSIFIER_LAYER = "features"  # the one layer our registered extractors provide
_DEFAULT_EXTRACTOR_NAME = "magnet_lab-classifier"

# The standard extractors and the exact files torch-fidelity 0.4 would otherwise download.
_STANDARD: dict[str, dict[str, str]] = {
    "inception": {
        "fidelity_name": "inception-v3-compat", "class": "FeatureExtractorInceptionV3",
        "env": "MAGNET_LAB_INCEPTION_WEIGHTS", "file": "weights-inception-2015-12-05-6726825d.pth",
        "url": "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
               "weights-inception-2015-12-05-6726825d.pth",
        "layer": "2048", "used_for": "FID/KID (TF-exact InceptionV3, pool3 features)"},
    "vgg16": {
        "fidelity_name": "vgg16", "class": "FeatureExtractorVGG16",
        "env": "MAGNET_LAB_VGG16_WEIGHTS", "file": "vgg16-397923af.pth",
        "url": "https://download.pytorch.org/models/vgg16-397923af.pth",
        "layer": "fc2_relu", "used_for": "precision/recall (torchvision VGG16 IMAGENET1K_V1, fc2)"},
}

# --------------------------------------------------------------------------- torch-fidelity API

@functools.cache
def torch_fidelity_api() -> SimpleNamespace:
    """torch-fidelity's objects we rely on, imported in one place (some live in internal modules)."""
    try:
        import torch_fidelity
        from torch_fidelity.feature_extractor_base import FeatureExtractorBase
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        from torch_fidelity.feature_extractor_vgg16 import FeatureExtractorVGG16
        from torch_fidelity.metric_fid import (KEY_METRIC_FID, fid_features_to_statistics,
                                               fid_statistics_to_metric)
        from torch_fidelity.metric_kid import (KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD,
                                               kernel_poly, kid_features_to_metric)
        from torch_fidelity.metric_prc import (KEY_METRIC_PRECISION, KEY_METRIC_RECALL,
                                               prc_features_to_metric)
    except (ImportError, AttributeError) as err:
        raise ImportError(
            "magnet_lab.features and magnet_lab.metrics need torch-fidelity 0.4.x (calculate_metrics, register_feature_"
            "extractor and the feature-level functions fid_features_to_statistics, fid_statistics_"
            "to_metric, kid_features_to_metric, kernel_poly, prc_features_to_metric); the installed "
            f"torch-fidelity does not provide them ({err}). Install the version pyproject.toml pins."
        ) from err
    return SimpleNamespace(
        version=torch_fidelity.__version__, calculate_metrics=torch_fidelity.calculate_metrics,
        register_feature_extractor=torch_fidelity.register_feature_extractor,
        FeatureExtractorBase=FeatureExtractorBase,
        FeatureExtractorInceptionV3=FeatureExtractorInceptionV3,
        FeatureExtractorVGG16=FeatureExtractorVGG16,
        fid_features_to_statistics=fid_features_to_statistics,
        fid_statistics_to_metric=fid_statistics_to_metric, kid_features_to_metric=kid_features_to_metric,
        kernel_poly=kernel_poly, prc_features_to_metric=prc_features_to_metric,
        KEY_FID=KEY_METRIC_FID, KEY_KID_MEAN=KEY_METRIC_KID_MEAN, KEY_KID_STD=KEY_METRIC_KID_STD,
        KEY_PRECISION=KEY_METRIC_PRECISION, KEY_RECALL=KEY_METRIC_RECALL)


# --------------------------------------------------------------------------- images and features

def check_images(images: torch.Tensor, name: str = "images") -> torch.Tensor:
    """``images`` unchanged if they are ``[N, C, H, W]`` (N >= 1), uint8 or finite float in
    [-1, 1]; raises TypeError/ValueError naming ``name`` otherwise (e.g. [0, 255] floats)."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor [N, C, H, W], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"{name} must have shape [N, C, H, W] with N >= 1, got {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise TypeError(f"{name} must be uint8 or floating point in [-1, 1], got dtype {images.dtype}")
    check_finite(images, name)
    lo, hi = float(images.min()), float(images.max())
    if lo < -1.001 or hi > 1.001:  # catches [0, 255] floats and un-normalised outputs
        raise ValueError(f"{name} must be float images in [-1, 1] (or uint8), got range [{lo:.4g}, {hi:.4g}]")
    return images


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float → uint8 in [0, 255] (``data.to_uint8``); uint8 passes through."""
    return images if images.dtype == torch.uint8 else data.to_uint8(images)


def _to_unit_float(images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """uint8 → float in [-1, 1] (u / 127.5 - 1); float images are only cast to ``dtype``."""
    if images.dtype == torch.uint8:
        return images.to(dtype) / 127.5 - 1.0
    return images.to(dtype)


def _apply_features(model_or_fn: Any, x: torch.Tensor) -> torch.Tensor:
    """``model.features(x)`` if it exists, else ``model_or_fn(x)``; checks a [B, F] result."""
    fn = getattr(model_or_fn, "features", None)
    fn = fn if callable(fn) else model_or_fn
    out = fn(x)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(f"the feature function must return a tensor [B, F] for a batch of {x.shape[0]}, "
                         f"got {tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
    return out


def extract_features(model_or_fn: Any, images: torch.Tensor, *, batch_size: int = 256,
                     device: str | torch.device | None = None) -> torch.Tensor:
    """Features ``[N, F]`` (float64, CPU) of ``images`` ``[N, C, H, W]`` (float in [-1, 1] or uint8).

    Calls ``model_or_fn.features(x)`` if it exists, else ``model_or_fn(x)``, on batches of
    ``batch_size`` converted to float in [-1, 1] (uint8 ``u`` → ``u / 127.5 - 1``) of the module's
    dtype, in eval mode (restored after) without gradients, TF32 off on CUDA. Batches go to
    ``device`` (default: the module's device; the module is not moved). Raises
    TypeError/ValueError for bad images (wrong rank, dtype, range, NaN/inf) and ValueError for a
    non-[B, F] or non-finite feature output.
    """
    check_images(images, "images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    _, dtype = module_device_dtype(model_or_fn)
    with precision_flags("highest"):  # features in full float32 on CUDA (no TF32)
        feats = batched(lambda x: _apply_features(model_or_fn, _to_unit_float(x, dtype))
                        .to(torch.float64), images, batch_size=batch_size, model=model_or_fn,
                        device=device)  # [N, F]
    return check_finite(feats, "extracted features")


# --------------------------------------------------------------------------- torch-fidelity extractors

_OWNED_EXTRACTORS: dict[str, type] = {}  # names registered by register_classifier_extractor


def register_classifier_extractor(name: str, model: Any) -> str:
    """Register ``model`` with torch-fidelity as feature extractor ``name``; returns ``name``.

    The registered ``FeatureExtractorBase`` subclass provides one layer, ``"features"`` (the
    default for FID, KID and PRC): it maps torch-fidelity's uint8 batches ``[B, C, H, W]`` to
    [-1, 1] exactly as ``extract_features`` does and returns ``model.features(x)`` as float64, so
    ``calculate_metrics(..., feature_extractor=name, cuda=False)`` works offline. The model is held
    by reference (not as a submodule: torch-fidelity's ``.cuda()`` never moves it) and batches are
    sent to its device. Registering a name again that this module registered swaps the model;
    a name torch-fidelity already knows otherwise (e.g. ``"vgg16"``) raises ValueError.
    """
    tf = torch_fidelity_api()
    if not isinstance(name, str) or not name.strip() or name.strip() != name or os.sep in name:
        raise ValueError(f"extractor name must be a non-empty string without spaces at the ends or "
                         f"path separators, got {name!r}")
    if not (callable(getattr(model, "features", None)) or callable(model)):
        raise TypeError(f"model must have a .features(x) method or be callable, got {type(model).__name__}")
    if name in _OWNED_EXTRACTORS:
        _OWNED_EXTRACTORS[name].wrapped = model
        return name

    class _ClassifierExtractor(tf.FeatureExtractorBase):
        wrapped: Any = model  # class attribute: not a submodule, so .cuda()/.eval() leave it alone

        def __init__(self, name: str, features_list: Sequence[str], **kwargs: Any) -> None:
            super().__init__(name, features_list)

        @staticmethod
        def get_provided_features_list() -> tuple[str, ...]:
            return (_CLASSIFIER_LAYER,)

        @staticmethod
        def get_default_feature_layer_for_metric(metric: str) -> str:
            if metric not in ("fid", "kid", "prc"):
                raise ValueError(f"a classifier feature extractor supports fid, kid and prc, not {metric!r}")
            return _CLASSIFIER_LAYER

        @staticmethod
        def can_be_compiled() -> bool:
            return False

        @staticmethod
        def get_dummy_input_for_compile() -> torch.Tensor:
            return torch.zeros(1, 1, 28, 28, dtype=torch.uint8)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
            m = type(self).wrapped
            device, dtype = module_device_dtype(m)
            with eval_mode(m):
                feats = _apply_features(m, _to_unit_float(x.to(device), dtype))  # [B, F]
            return (feats.to(torch.float64),)

    _ClassifierExtractor.__name__ = _ClassifierExtractor.__qualname__ = f"ClassifierExtractor[{name}]"
    tf.register_feature_extractor(name, _ClassifierExtractor)  # ValueError if the name is taken
    _OWNED_EXTRACTORS[name] = _ClassifierExtractor
    return name


def _missing_weights_message(kind: str) -> str:
    s = _STANDARD[kind]
    return (f"No local weights file for the standard {kind!r} feature extractor, used for {s['used_for']}. "
            f"magnet_lab never downloads weights. Fetch torch-fidelity's file {s['file']} ({s['url']}) "
            f"on a machine with internet access, then pass it as standard_extractor({kind!r}, "
            f"weights_path='/path/to/{s['file']}') or set the environment variable "
            f"{s['env']}=/path/to/{s['file']}. For offline metrics without it, use the classifier "
            f"feature space (register_classifier_extractor / extract_features).")


@contextlib.contextmanager
def _sanitized_weights(path: Path) -> Iterator[Path]:
    """A temporary copy of the state dict at ``path`` that we wrote ourselves.

    torch-fidelity 0.4 reads ``feature_extractor_weights_path`` with a full ``torch.load``; handing
    it a file we re-saved from ``readers.read_state_dict`` (safetensors or weights-only) means it
    never unpickles the user's bytes. The copy (always ``.pth``: torch.load picks its reader by
    suffix) lives in a private folder under ``paths.cache_dir()`` and is deleted on exit.
    """
    state = read_state_dict(path)  # by content; pickles and non-tensor objects are refused
    with tempfile.TemporaryDirectory(dir=paths.cache_dir(), prefix="fidelity-weights-") as tmp:
        clean = Path(tmp) / f"{path.stem}.pth"
        torch.save(state, clean)
        del state
        yield clean


class StandardExtractor(nn.Module):
    """A torch-fidelity standard extractor (InceptionV3 or VGG16) built from a local weights file.

    ``features(x)`` maps images ``[B, 1|3, H, W]`` (float in [-1, 1] or uint8; one channel is
    repeated to RGB) to the chosen layer's features ``[B, F]`` (float64), exactly as torch-fidelity
    sees them (uint8 RGB, resized inside the network), in full float32 on CUDA (TF32 off). Build
    it with ``standard_extractor``.
    """

    def __init__(self, kind: str, weights_path: Path, layer: str, net: nn.Module) -> None:
        super().__init__()
        self.kind, self.weights_path, self.layer = kind, weights_path, layer
        self.fidelity_name = _STANDARD[kind]["fidelity_name"]
        self.net = net

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Layer ``self.layer`` features ``[B, F]`` (float64) of images ``[B, 1|3, H, W]``."""
        device, _ = module_device_dtype(self.net)
        with torch.no_grad(), precision_flags("highest"):  # no TF32 convolutions on CUDA
            return self.net(_to_uint8_rgb(x).to(device))[0].to(torch.float64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def _to_uint8_rgb(images: torch.Tensor) -> torch.Tensor:
    """Images [B, 1|3, H, W] (float in [-1, 1] or uint8) → uint8 [B, 3, H, W]."""
    u8 = _to_uint8(images)
    if u8.shape[1] == 1:
        u8 = u8.expand(-1, 3, -1, -1)
    if u8.shape[1] != 3:
        raise ValueError(f"standard extractors take 1- or 3-channel images, got shape {tuple(images.shape)}")
    return u8.contiguous()


def _resolve_weights(kind: str, weights_path: str | os.PathLike | None) -> Path:
    if kind not in _STANDARD:
        raise ValueError(f"kind must be one of {sorted(_STANDARD)}, got {kind!r}")
    source = weights_path if weights_path is not None else config.get(_STANDARD[kind]["env"])
    if source is None:
        raise FileNotFoundError(_missing_weights_message(kind))
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} for the {kind!r} extractor does not exist. "
                                + _missing_weights_message(kind))
    return path


def standard_extractor(kind: str = "inception", weights_path: str | os.PathLike | None = None, *,
                       layer: str | None = None,
                       device: str | torch.device | None = None) -> StandardExtractor:
    """Build torch-fidelity's standard ``kind`` extractor ("inception" or "vgg16") from a local file.

    The file is ``weights_path`` or the environment variable ``MAGNET_LAB_INCEPTION_WEIGHTS`` /
    ``MAGNET_LAB_VGG16_WEIGHTS``; it is read by ``models.readers.read_state_dict`` (safetensors or
    ``torch.load(weights_only=True)``, chosen by content; pickles refused) and must hold
    the state dict torch-fidelity expects (``weights-inception-2015-12-05-6726825d.pth``;
    torchvision's ``vgg16-397923af.pth``). ``layer`` defaults to "2048" (Inception pool3) or
    "fc2_relu" (VGG16). The network is placed on ``device`` (default: the CPU); its features and
    the torch-fidelity metrics scored with it run there. Raises FileNotFoundError (saying which
    file and how to pass it) when no file is given or it does not exist — it never downloads —
    and ValueError naming the path when the file is refused, damaged, or not a plain state dict
    of the right network.
    """
    path = _resolve_weights(kind, weights_path)
    spec = _STANDARD[kind]
    layer = spec["layer"] if layer is None else layer
    cls = getattr(torch_fidelity_api(), spec["class"])
    with _sanitized_weights(path) as clean:
        try:
            net = cls(spec["fidelity_name"], [layer], feature_extractor_weights_path=str(clean),
                      verbose=False)
        except RuntimeError as err:  # load_state_dict: missing / unexpected keys, shape mismatch
            raise ValueError(f"{path} does not hold the weights of torch-fidelity's "
                             f"{spec['fidelity_name']!r} extractor ({spec['file']}): {err}") from err
    if device is not None:
        net = net.to(device)
    return StandardExtractor(kind, path, layer, net)


class _UInt8Images(torch.utils.data.Dataset):
    """A uint8 image tensor [N, C, H, W] as a Dataset of [C, H, W] items (torch-fidelity's input)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


@contextlib.contextmanager
def fidelity_inputs(extractor: Any, real_images: torch.Tensor, fake_images: torch.Tensor,
                    feature_layer: str | None = None) -> Iterator[dict[str, Any]]:
    """``torch_fidelity.calculate_metrics`` keyword arguments for ``extractor`` and two checked
    image sets ``[N, C, H, W]`` / ``[M, C, H, W]``: ``input1`` (fake) and ``input2`` (real) as uint8
    datasets, ``feature_extractor``, the three ``feature_layer_*``, ``feature_extractor_weights_path``
    and ``cuda``. ``extractor`` is a ``StandardExtractor`` (its weights are passed as a sanitised
    copy, deleted on exit), a name from ``register_classifier_extractor``, or a module with
    ``.features`` (registered as "magnet_lab-classifier"). Raises ValueError for a name this module
    did not register (torch-fidelity's own would download weights)."""
    weights: contextlib.AbstractContextManager[Path | None] = contextlib.nullcontext(None)
    if isinstance(extractor, StandardExtractor):
        name, layer = extractor.fidelity_name, feature_layer or extractor.layer
        real_u8, fake_u8 = _to_uint8_rgb(real_images), _to_uint8_rgb(fake_images)
        device, _ = module_device_dtype(extractor.net)
        weights = _sanitized_weights(extractor.weights_path)
    else:
        if isinstance(extractor, str):
            if extractor not in _OWNED_EXTRACTORS:
                raise ValueError(
                    f"extractor {extractor!r} was not registered by register_classifier_extractor; "
                    "torch-fidelity's built-in extractors would download weights, so use "
                    "standard_extractor(kind, weights_path) for Inception / VGG16")
            name = extractor
        else:
            name = register_classifier_extractor(_DEFAULT_EXTRACTOR_NAME, extractor)
        layer = feature_layer or _CLASSIFIER_LAYER
        real_u8, fake_u8 = _to_uint8(real_images), _to_uint8(fake_images)
        device, _ = module_device_dtype(_OWNED_EXTRACTORS[name].wrapped)
    with weights as weights_file:
        yield {"input1": _UInt8Images(fake_u8), "input2": _UInt8Images(real_u8),
               "feature_extractor": name, "feature_layer_fid": layer, "feature_layer_kid": layer,
               "feature_layer_prc": layer,
               "feature_extractor_weights_path": None if weights_file is None else str(weights_file),
               "cuda": device.type == "cuda"}
