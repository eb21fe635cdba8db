"""Sample-quality metrics in a feature space: FID, KID, precision/recall, density/coverage, and CIs.

FID, KID and precision/recall (Kynkäänniemi et al. 2019, k = 3, NVIDIA's pr50k3) are
torch-fidelity 0.4's own code: ``fidelity_metrics`` runs ``torch_fidelity.calculate_metrics`` on
images through a registered feature extractor (our classifier, or a standard Inception / VGG16
built from a *local* weights file), and ``metrics_from_features`` calls torch-fidelity's
feature-level functions on features you already have. Density and coverage (Naeem et al. 2020) are
written here. Bootstrap CIs of these metrics live in ``magnet_lab.bootstrap`` (which imports this
module, never the reverse). Conventions: torch-fidelity's input1 is the *generated* set, input2 the
*real* set; features are float64 on CPU; nothing here downloads or writes torch-fidelity caches.
"""
from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from . import data, paths
from .models import batched, eval_mode, module_device_dtype
from .validation import check_finite

__all__ = [
    "ALL_METRICS", "FIDELITY_METRICS", "StandardExtractor", "density_coverage", "extract_features", "fidelity_metrics", "metrics_from_features",
    "register_classifier_extractor", "standard_extractor",
]

ALL_METRICS = ("fid", "kid", "precision", "recall", "density", "coverage")
FIDELITY_METRICS = ("fid", "kid", "precision", "recall")  # what calculate_metrics computes
_CLASSIFIER_LAYER = "features"  # the one layer our registered extractors provide
_DEFAULT_EXTRACTOR_NAME = "magnet_lab-classifier"
_BLOCK_BYTES = 64 * 2**20  # memory per pairwise block (distances, kernels, covariance batches)

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
def _tf() -> SimpleNamespace:
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
            "magnet_lab.metrics needs torch-fidelity 0.4.x (calculate_metrics, register_feature_"
            "extractor and the feature-level functions fid_features_to_statistics, fid_statistics_"
            "to_metric, kid_features_to_metric, kernel_poly, prc_features_to_metric); the installed "
            f"torch-fidelity does not provide them ({err}). Install the version in environment.yml."
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


def _kid_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """torch-fidelity's KID kernel (x·y/F + 1)^3 between rows of x [n, F] and y [m, F] → [n, m]."""
    k = _tf().kernel_poly(x.numpy(), y.numpy(), kid_kernel_poly_degree=3,
                          kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)
    return torch.from_numpy(k)


# --------------------------------------------------------------------------- images and features

def _check_images(images: torch.Tensor, name: str) -> torch.Tensor:
    """Images must be [N, C, H, W], uint8 or finite float in [-1, 1]."""
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
    dtype, in eval mode (restored after) without gradients. Batches go to ``device`` (default: the
    module's device; the module is not moved). Raises TypeError/ValueError for bad images (wrong
    rank, dtype, range, NaN/inf) and ValueError for a non-[B, F] or non-finite feature output.
    """
    _check_images(images, "images")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    _, dtype = module_device_dtype(model_or_fn)
    feats = batched(lambda x: _apply_features(model_or_fn, _to_unit_float(x, dtype)).to(torch.float64),
                    images, batch_size=batch_size, model=model_or_fn, device=device)  # [N, F]
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
    tf = _tf()
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


def _load_plain_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A plain ``{name: tensor}`` state dict read with ``torch.load(weights_only=True)``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for disallowed globals, RuntimeError for bad archives
        raise ValueError(f"{path} could not be read as a plain state dict with torch.load(weights_only="
                         f"True); it is refused rather than unpickled ({type(err).__name__}: {err})") from err
    if not isinstance(state, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise ValueError(f"{path} must hold a state dict {{name: tensor}}, got {type(state).__name__}")
    return dict(state)


@contextlib.contextmanager
def _sanitized_weights(path: Path) -> Iterator[Path]:
    """A temporary copy of the state dict at ``path`` that we wrote ourselves.

    torch-fidelity 0.4 reads ``feature_extractor_weights_path`` with ``torch.load(weights_only=False)``;
    handing it a file re-saved from a ``weights_only=True`` load means it never unpickles the user's
    bytes. The copy lives in a private folder under ``paths.cache_dir()`` and is deleted on exit.
    """
    state = _load_plain_state_dict(path)
    with tempfile.TemporaryDirectory(dir=paths.cache_dir(), prefix="fidelity-weights-") as tmp:
        clean = Path(tmp) / path.name
        torch.save(state, clean)
        del state
        yield clean


class StandardExtractor(nn.Module):
    """A torch-fidelity standard extractor (InceptionV3 or VGG16) built from a local weights file.

    ``features(x)`` maps images ``[B, 1|3, H, W]`` (float in [-1, 1] or uint8; one channel is
    repeated to RGB) to the chosen layer's features ``[B, F]`` (float64), exactly as torch-fidelity
    sees them (uint8 RGB, resized inside the network). Build it with ``standard_extractor``.
    """

    def __init__(self, kind: str, weights_path: Path, layer: str, net: nn.Module) -> None:
        super().__init__()
        self.kind, self.weights_path, self.layer = kind, weights_path, layer
        self.fidelity_name = _STANDARD[kind]["fidelity_name"]
        self.net = net

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Layer ``self.layer`` features ``[B, F]`` (float64) of images ``[B, 1|3, H, W]``."""
        device, _ = module_device_dtype(self.net)
        with torch.no_grad():
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
    source = weights_path if weights_path is not None else os.environ.get(_STANDARD[kind]["env"]) or None
    if source is None:
        raise FileNotFoundError(_missing_weights_message(kind))
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} for the {kind!r} extractor does not exist. "
                                + _missing_weights_message(kind))
    return path


def standard_extractor(kind: str = "inception", weights_path: str | os.PathLike | None = None, *,
                       layer: str | None = None) -> StandardExtractor:
    """Build torch-fidelity's standard ``kind`` extractor ("inception" or "vgg16") from a local file.

    The file is ``weights_path`` or the environment variable ``MAGNET_LAB_INCEPTION_WEIGHTS`` /
    ``MAGNET_LAB_VGG16_WEIGHTS``; it is read with ``torch.load(weights_only=True)`` and must hold
    the state dict torch-fidelity expects (``weights-inception-2015-12-05-6726825d.pth``;
    torchvision's ``vgg16-397923af.pth``). ``layer`` defaults to "2048" (Inception pool3) or
    "fc2_relu" (VGG16). Raises FileNotFoundError (saying which file and how to pass it) when no
    file is given or it does not exist — it never downloads — and ValueError when the file is not
    a plain state dict of the right network.
    """
    path = _resolve_weights(kind, weights_path)
    spec = _STANDARD[kind]
    layer = spec["layer"] if layer is None else layer
    cls = getattr(_tf(), spec["class"])
    with _sanitized_weights(path) as clean:
        try:
            net = cls(spec["fidelity_name"], [layer], feature_extractor_weights_path=str(clean),
                      verbose=False)
        except RuntimeError as err:  # load_state_dict: missing / unexpected keys, shape mismatch
            raise ValueError(f"{path} does not hold the weights of torch-fidelity's "
                             f"{spec['fidelity_name']!r} extractor ({spec['file']}): {err}") from err
    return StandardExtractor(kind, path, layer, net)


class _UInt8Images(torch.utils.data.Dataset):
    """A uint8 image tensor [N, C, H, W] as a Dataset of [C, H, W] items (torch-fidelity's input)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def _kid_subset_size(n_real: int, n_fake: int, kid_subset_size: int | None) -> int:
    size = min(1000, n_real, n_fake) if kid_subset_size is None else int(kid_subset_size)
    if size < 2 or size > min(n_real, n_fake):
        raise ValueError(f"kid_subset_size must be in [2, min(n_real, n_fake) = {min(n_real, n_fake)}], "
                         f"got {size}")
    return size


def _check_metric_names(metrics: Sequence[str], allowed: Sequence[str]) -> tuple[str, ...]:
    metrics = tuple(metrics)
    unknown = [m for m in metrics if m not in allowed]
    if unknown or not metrics:
        raise ValueError(f"metrics must be a non-empty subset of {allowed}, got {metrics}")
    return metrics


def fidelity_metrics(real_images: torch.Tensor, fake_images: torch.Tensor, extractor: Any, *,
                     metrics: Sequence[str] = FIDELITY_METRICS, k: int = 3, kid_subsets: int = 100,
                     kid_subset_size: int | None = None, feature_layer: str | None = None,
                     batch_size: int = 64, seed: int = 0) -> dict[str, float]:
    """FID, KID, precision and recall by ``torch_fidelity.calculate_metrics`` on two image sets.

    ``real_images`` ``[N, C, H, W]`` and ``fake_images`` ``[M, C, H, W]`` are float in [-1, 1]
    (quantised to uint8, as torch-fidelity requires) or uint8. ``extractor`` is a module with
    ``.features`` (registered as "magnet_lab-classifier"), a name from
    ``register_classifier_extractor``, or a ``StandardExtractor`` (its weights are passed as a
    sanitised copy through ``feature_extractor_weights_path``). Fake is torch-fidelity's input1,
    real its input2; the file cache is off, nothing is downloaded, the PRC neighbourhood is ``k``,
    KID subsets are seeded by ``seed`` (subset size ``min(1000, N, M)`` by default). Returns a dict
    with the requested keys among fid, kid_mean, kid_std, precision, recall. Raises ValueError for
    bad images, unknown metric names or an extractor name that would need a download.
    """
    tf = _tf()
    metrics = _check_metric_names(metrics, FIDELITY_METRICS)
    _check_images(real_images, "real_images")
    _check_images(fake_images, "fake_images")
    if real_images.shape[1:] != fake_images.shape[1:]:
        raise ValueError(f"real and fake images differ in shape: {tuple(real_images.shape)} vs "
                         f"{tuple(fake_images.shape)}")
    n_real, n_fake = real_images.shape[0], fake_images.shape[0]
    want_prc = "precision" in metrics or "recall" in metrics
    if want_prc and min(n_real, n_fake) <= k:
        raise ValueError(f"precision/recall with k={k} need more than k images per set, got "
                         f"{n_real} real and {n_fake} fake")
    subset = _kid_subset_size(n_real, n_fake, kid_subset_size) if "kid" in metrics else 1000
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
        out = tf.calculate_metrics(
            input1=_UInt8Images(fake_u8), input2=_UInt8Images(real_u8),
            fid="fid" in metrics, kid="kid" in metrics, prc=want_prc,
            feature_extractor=name, feature_layer_fid=layer, feature_layer_kid=layer,
            feature_layer_prc=layer,
            feature_extractor_weights_path=None if weights_file is None else str(weights_file),
            cuda=device.type == "cuda", batch_size=batch_size, prc_neighborhood=k,
            kid_subsets=kid_subsets, kid_subset_size=subset,
            rng_seed=seed, cache=False, cache_root=str(paths.cache_dir() / "torch_fidelity"),
            datasets_download=False, save_cpu_ram=True,  # no DataLoader workers; PRC in blocks
            verbose=False)
    keys = {"fid": [("fid", tf.KEY_FID)],
            "kid": [("kid_mean", tf.KEY_KID_MEAN), ("kid_std", tf.KEY_KID_STD)],
            "precision": [("precision", tf.KEY_PRECISION)], "recall": [("recall", tf.KEY_RECALL)]}
    return {ours: float(out[theirs]) for m in metrics for ours, theirs in keys[m]}


# --------------------------------------------------------------------------- feature-level metrics

def _check_features(real_feats: torch.Tensor, fake_feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both [n, F] floating, same F, finite, at least 2 rows → float64 CPU contiguous copies."""
    out = []
    for x, name in ((real_feats, "real_feats"), (fake_feats, "fake_feats")):
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor [n, F], got "
                            f"{getattr(x, 'dtype', type(x).__name__)}")
        if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 1:
            raise ValueError(f"{name} must have shape [n, F] with n >= 2, got {tuple(x.shape)}")
        check_finite(x, name)
        out.append(x.detach().to("cpu", torch.float64).contiguous())
    if out[0].shape[1] != out[1].shape[1]:
        raise ValueError(f"real_feats and fake_feats differ in feature dimension: {out[0].shape[1]} vs "
                         f"{out[1].shape[1]}")
    return out[0], out[1]


def _check_k(n_real: int, n_fake: int, k: int, dc_k: int, metrics: Sequence[str]) -> None:
    for kk, name in ((k, "k"), (dc_k, "dc_k")):
        if int(kk) != kk or kk < 1:
            raise ValueError(f"{name} must be a positive integer, got {kk}")
    needs = [("precision", n_real, "k", k, "real"), ("recall", n_fake, "k", k, "fake"),
             ("density", n_real, "dc_k", dc_k, "real"), ("coverage", n_real, "dc_k", dc_k, "real")]
    for metric, n, name, kk, which in needs:
        if metric in metrics and n <= kk:
            raise ValueError(f"{metric} needs more {which} samples than its k-NN {name}={kk} "
                             f"(a point's k-th neighbour excludes itself), got {n}")


def _rows_per_block(n_cols: int, extra_rows: int = 0) -> int:
    """Rows of an [rows, n_cols] float64 block (plus ``extra_rows`` × rows of work) in _BLOCK_BYTES."""
    return max(1, _BLOCK_BYTES // (8 * max(1, n_cols + extra_rows)))


def _knn_radii(x: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """``[len(ks), n]``: distance from each row of x to its k-th nearest *other* row, per k.

    As in torch-fidelity (``kthvalue(k + 1)`` of a cdist row including the zero self-distance)
    and Naeem et al. (``NND_k``). Distances by ``torch.cdist``, row blocks of bounded memory.
    """
    n, kmax = x.shape[0], max(ks)
    out = torch.empty(len(ks), n, dtype=x.dtype)
    rows = _rows_per_block(n)
    for s in range(0, n, rows):
        d = torch.cdist(x[s:s + rows], x)  # [b, n]
        nearest = torch.topk(d, kmax + 1, dim=1, largest=False).values  # [b, kmax + 1], ascending
        for a, k in enumerate(ks):
            out[a, s:s + rows] = nearest[:, k]
    return out


def _point_scores(real: torch.Tensor, fake: torch.Tensor, k: int, dc_k: int,
                  metrics: Sequence[str]) -> dict[str, torch.Tensor]:
    """Per-sample scores whose means are the k-NN metrics; neighbourhoods from the full sets.

    With real radius ``r_j`` (k-th NN distance among the reals), fake radius ``s_i`` and
    ``d_ij = ‖fake_i − real_j‖``: ``precision[i] = any_j d_ij <= r_j(k)``, ``recall[j] = any_i
    d_ij <= s_i(k)`` (Kynkäänniemi et al.; torch-fidelity's ``<=``), ``density[i] = #{j: d_ij <
    r_j(dc_k)} / dc_k`` and ``coverage[j] = min_i d_ij < r_j(dc_k)`` (Naeem et al.'s strict ``<``).
    Each distance compared with a real radius is computed with the real point as cdist's row
    operand, in the same row blocks as the radii (and likewise for fake radii), so a fake that
    duplicates a real point ties with that point's neighbours bit for bit.
    """
    n_real, n_fake = real.shape[0], fake.shape[0]
    precision = torch.zeros(n_fake, dtype=torch.bool)
    density = torch.zeros(n_fake, dtype=torch.float64)
    coverage = torch.zeros(n_real, dtype=torch.bool)
    want_pr, want_dc = "precision" in metrics, "density" in metrics or "coverage" in metrics
    if want_pr or want_dc:
        radii = _knn_radii(real, (k if want_pr else dc_k, dc_k if want_dc else k))
        r_k, r_dc = radii[0], radii[1]  # [N] each
        rows = _rows_per_block(n_fake)
        for s in range(0, n_real, rows):
            d = torch.cdist(real[s:s + rows], fake)  # [b, M]
            if want_pr:
                precision |= (d <= r_k[s:s + rows, None]).any(dim=0)
            if want_dc:
                density += (d < r_dc[s:s + rows, None]).sum(dim=0)
                coverage[s:s + rows] = d.min(dim=1).values < r_dc[s:s + rows]
    recall = torch.zeros(n_real, dtype=torch.bool)
    if "recall" in metrics:
        s_k = _knn_radii(fake, (k,))[0]  # [M]
        rows = _rows_per_block(n_real)
        for s in range(0, n_fake, rows):
            d = torch.cdist(fake[s:s + rows], real)  # [b, N]
            recall |= (d <= s_k[s:s + rows, None]).any(dim=0)
    return {"precision": precision.to(torch.float64), "density": density / dc_k,
            "recall": recall.to(torch.float64), "coverage": coverage.to(torch.float64)}


def density_coverage(real_feats: torch.Tensor, fake_feats: torch.Tensor, k: int = 5) -> dict[str, float]:
    """Density and coverage (Naeem et al. 2020) of fake features ``[M, F]`` against real ``[N, F]``.

    With ``B_j`` the open ball around real ``x_j`` of radius its k-th nearest-neighbour distance
    among the reals: density = ``1/(k M) Σ_i Σ_j 1[y_i ∈ B_j]`` and coverage =
    ``1/N Σ_j 1[∃ i: y_i ∈ B_j]``. For identical sets in general position density is exactly 1
    (each fake lies in its own ball and in the balls of k−1 other reals) and coverage is 1.
    Raises ValueError for bad shapes, NaN/inf or ``N <= k``.
    """
    real, fake = _check_features(real_feats, fake_feats)
    _check_k(real.shape[0], fake.shape[0], 1, k, ("density", "coverage"))
    scores = _point_scores(real, fake, k, k, ("density", "coverage"))
    return {"density": float(scores["density"].mean()), "coverage": float(scores["coverage"].mean())}


def metrics_from_features(real_feats: torch.Tensor, fake_feats: torch.Tensor, *, k: int = 3,
                          dc_k: int = 5, kid_subsets: int = 100, kid_subset_size: int | None = None,
                          seed: int = 0, metrics: Sequence[str] = ALL_METRICS) -> dict[str, float]:
    """FID, KID, precision/recall (torch-fidelity's feature-level functions) and density/coverage.

    ``real_feats`` ``[N, F]`` and ``fake_feats`` ``[M, F]`` are computed on in float64 on CPU.
    FID: ``fid_features_to_statistics`` + ``fid_statistics_to_metric``; KID:
    ``kid_features_to_metric`` (poly kernel, ``kid_subsets`` subsets of ``min(1000, N, M)`` by
    default, seeded by ``seed``); precision/recall: ``prc_features_to_metric`` with neighbourhood
    ``k`` (fake = its features_1); density/coverage: ``density_coverage`` with ``dc_k``. Returns the
    requested keys among fid, kid_mean, kid_std, precision, recall, density, coverage. Raises
    TypeError/ValueError for bad shapes or dtypes, NaN/inf, or too few samples for k / dc_k.
    """
    tf = _tf()
    metrics = _check_metric_names(metrics, ALL_METRICS)
    real, fake = _check_features(real_feats, fake_feats)
    _check_k(real.shape[0], fake.shape[0], k, dc_k, metrics)
    out: dict[str, float] = {}
    if "fid" in metrics:
        stats_real, stats_fake = tf.fid_features_to_statistics(real), tf.fid_features_to_statistics(fake)
        out["fid"] = float(tf.fid_statistics_to_metric(stats_fake, stats_real, verbose=False)[tf.KEY_FID])
    if "kid" in metrics:
        kid = tf.kid_features_to_metric(
            fake, real, kid_subsets=kid_subsets, verbose=False, rng_seed=seed,
            kid_subset_size=_kid_subset_size(real.shape[0], fake.shape[0], kid_subset_size),
            kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None, kid_kernel_poly_coef0=1)
        out["kid_mean"], out["kid_std"] = float(kid[tf.KEY_KID_MEAN]), float(kid[tf.KEY_KID_STD])
    if "precision" in metrics or "recall" in metrics:
        prc = tf.prc_features_to_metric(fake, real, prc_neighborhood=k, prc_batch_size=10000,
                                        save_cpu_ram=True, verbose=False)
        for m, key in (("precision", tf.KEY_PRECISION), ("recall", tf.KEY_RECALL)):
            if m in metrics:
                out[m] = float(prc[key])
    if "density" in metrics or "coverage" in metrics:
        scores = _point_scores(real, fake, k, dc_k, ("density", "coverage"))
        for m in ("density", "coverage"):
            if m in metrics:
                out[m] = float(scores[m].mean())
    return out
