"""Per-class quality of a conditional generator (magnet_lab.class_quality): on "generators" whose
answer is known (real images of the requested class, or of the wrong one) and on a tiny BigGAN."""
from __future__ import annotations

import pytest
import torch

import magnet_lab
from magnet_lab import class_quality, data, latent
from magnet_lab.models.biggan import BigGANDeep

from builders import BIGGAN_TINY, randomise_biggan

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors on a shared 2-core runner

CLASSES = [1, 4]  # Trouser (a majority class of the split), Coat (a minority one)


@pytest.fixture(scope="module")
def classifier():
    return magnet_lab.load_classifier("fmnist")


@pytest.fixture(scope="module")
def all_real_by_class(classifier):
    return class_quality.real_features_by_class(classifier, classes=CLASSES)


@pytest.fixture(scope="module")
def real_by_class(all_real_by_class):
    return {c: f[:400] for c, f in all_real_by_class.items()}  # a smaller reference: faster CIs


def _real_image_generator(shift: int) -> torch.nn.Module:
    """A conditional "generator" returning real *training* images of class (c + shift) % 10,
    the row picked by z, so it makes what it is asked for (shift 0) or the wrong class."""
    images, labels = data.fashion_mnist("train")
    pools = [data.to_model_range(images[labels == c][:300]) for c in range(10)]

    def fn(z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        want = (c.argmax(1) + shift) % 10  # [B]
        row = (torch.special.ndtr(z[:, 0].double()) * 299.999).long()  # [B] in [0, 300)
        return torch.stack([pools[int(k)][int(r)] for k, r in zip(want, row)])  # [B, 1, 28, 28]

    return latent.wrap(fn, 3, n_classes=10, fingerprint=f"real-images-shift-{shift}")


def test_real_features_by_class_holds_each_class_of_the_test_set(all_real_by_class):
    assert sorted(all_real_by_class) == CLASSES
    for feats in all_real_by_class.values():
        assert feats.shape == (1000, 128) and feats.dtype == torch.float64


def test_class_images_are_class_major_seeded_and_of_the_requested_class():
    G = _real_image_generator(0)
    imgs, labels = class_quality.class_images(G, CLASSES, 5, seed=3, batch_size=4)
    assert imgs.shape == (10, 1, 28, 28) and labels.tolist() == [1] * 5 + [4] * 5
    again, _ = class_quality.class_images(G, CLASSES, 5, seed=3)
    other, _ = class_quality.class_images(G, CLASSES, 5, seed=4)
    assert torch.equal(imgs, again) and not torch.equal(imgs, other)


def _quality(shift, classifier, real_by_class):
    imgs, labels = class_quality.class_images(_real_image_generator(shift), CLASSES, 150, seed=0)
    return class_quality.per_class_quality(imgs, labels, real_by_class, classifier, n_boot=50)


@pytest.fixture(scope="module")
def right(classifier, real_by_class):
    return _quality(0, classifier, real_by_class)


def test_a_generator_of_the_requested_class_agrees_and_is_precise(right):
    q = right
    assert sorted(q) == CLASSES
    for c in CLASSES:
        assert q[c]["n"] == 150 and sum(q[c]["predicted"]) == 150
        a = q[c]["agreement"]
        assert a["value"] > 0.85 and a["lo"] <= a["value"] <= a["hi"]  # the classifier is ~91 %
        assert q[c]["metrics"]["precision"]["value"] > 0.8
        assert q[c]["metrics"]["recall"]["value"] > 0.5


def test_a_generator_of_the_wrong_class_has_agreement_near_zero(classifier, real_by_class,
                                                               right):
    q = _quality(1, classifier, real_by_class)
    for c in CLASSES:
        assert q[c]["agreement"]["value"] < 0.1
        assert q[c]["metrics"]["precision"]["value"] < 0.5
        assert q[c]["metrics"]["fid"]["value"] > 5 * right[c]["metrics"]["fid"]["value"]
    table = class_quality.class_quality_table(q)
    assert list(table.index) == ["Trouser", "Coat"]
    assert table.loc["Coat", "agreement"] == q[4]["agreement"]["value"]


def test_class_images_of_biggan_draw_its_truncated_law_and_use_its_statistics():
    G = randomise_biggan(BigGANDeep(**BIGGAN_TINY)).eval()
    G.latent_spec = latent.LatentSpec(latent.TruncatedNormalLaw(2.0, 1.0), G.z_dim, n_classes=3)
    imgs, labels = class_quality.class_images(G, [2, 0], 4, seed=7, truncation=0.4)
    z = latent.TruncatedNormalLaw(2.0, 0.4).sample(8, G.z_dim, rng=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = G(z, G.one_hot(labels), truncation=0.4).clamp(-1, 1)
        at_one = G(z, G.one_hot(labels), truncation=1.0).clamp(-1, 1)
    assert labels.tolist() == [2] * 4 + [0] * 4
    torch.testing.assert_close(imgs, expected, rtol=0, atol=1e-6)
    assert not torch.allclose(imgs, at_one, atol=1e-3)  # truncation chose other statistics


def test_class_quality_refuses_bad_input(classifier, real_by_class):
    unconditional = latent.wrap(lambda z: z, 2, fingerprint="identity")
    with pytest.raises(ValueError, match="class-conditional"):
        class_quality.class_images(unconditional, [0], 2, seed=0)
    G = _real_image_generator(0)
    with pytest.raises(ValueError, match="class id"):
        class_quality.class_images(G, [10], 2, seed=0)
    with pytest.raises(ValueError, match="distinct"):
        class_quality.class_images(G, [1, 1], 2, seed=0)
    with pytest.raises(ValueError, match="truncated-normal"):
        class_quality.class_images(G, [1], 2, seed=0, truncation=0.5)
    imgs, labels = class_quality.class_images(G, [0], 10, seed=0)
    with pytest.raises(ValueError, match="no real features for class"):
        class_quality.per_class_quality(imgs, labels, real_by_class, classifier)
    with pytest.raises(ValueError, match="labels must be integer"):
        class_quality.per_class_quality(imgs, labels[:3], real_by_class, classifier)
