"""Our BigGAN-deep: torch.func differentiability w.r.t. z with the class fixed (float64, tiny
configurations), batch independence, the truncation's statistics rule, clear errors, and the
strict reading of pytorch-pretrained-biggan folders (pytorch_model.bin + config.json). The
comparison with the reference implementation itself is in tests/test_biggan_reference.py."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.func import jvp, vjp, vmap

import magnet_lab
from magnet_lab.models import fingerprint
from magnet_lab.models.biggan import (AUTHORS_RECIPE, RELEASED_CONFIGS, BigGANDeep,
                                      BigGANDeepConfig, stats_weights)
from magnet_lab.models.readers import biggan_folder
from builders import BIGGAN_TINY, randomise_biggan, write_biggan_folder
from payloads import payload

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors on a shared 2-core runner

@pytest.fixture(scope="module")
def G() -> BigGANDeep:
    return randomise_biggan(BigGANDeep(**BIGGAN_TINY)).double().eval().requires_grad_(False)


def latents(n: int, seed: int = 1, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, BIGGAN_TINY["z_dim"], generator=g, dtype=dtype)
    labels = torch.arange(n) % BIGGAN_TINY["num_classes"]
    return z, torch.nn.functional.one_hot(labels, BIGGAN_TINY["num_classes"]).to(dtype)


# -- the model ------------------------------------------------------------------------------------


def test_forward_shapes_range_and_dtype(G):
    z, c = latents(4)
    x = G(z, c)
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float64
    assert x.abs().max() < 1 and x.std() > 0.05  # tanh output, not degenerate
    assert G(z[0], c[0]).shape == (3, 16, 16)
    assert torch.allclose(G(z[0], c[0]), x[0], atol=1e-14)  # batched BLAS rounding aside
    G32 = randomise_biggan(BigGANDeep(**BIGGAN_TINY)).eval()
    assert torch.allclose(G32(z.float(), c.float()).double(), x, atol=1e-5)


def test_truncation_option_selects_statistics_and_never_scales_z(G):
    z, c = latents(2)
    x1, x4 = G(z, c), G(z, c, truncation=0.4)
    assert (x1 - x4).abs().max() > 1e-3  # different statistics, same z
    assert torch.equal(G.with_options(truncation=0.4)(z, c), x4)
    assert G.with_options(truncation=0.4).generator is G.generator  # shared weights
    assert G.options() == dict(truncation=1.0, stats_rule="reference", z_scale=1.0)
    # z is used as given: scaling z is not the same as the truncation option
    assert (G(0.4 * z, c, truncation=0.4) - x4).abs().max() > 1e-3


def test_z_scale_option_multiplies_z_and_the_authors_recipe_is_truncation_1_and_z_times_0_9(G):
    z, c = latents(3)
    Ga = G.with_options(z_scale=0.9)
    assert torch.equal(Ga(z, c), G(0.9 * z, c)) and Ga.generator is G.generator
    assert AUTHORS_RECIPE == {"truncation": 1.0, "z_scale": 0.9}
    authors = G.with_options(truncation=0.4).with_options(**AUTHORS_RECIPE)
    assert authors.options() == dict(truncation=1.0, stats_rule="reference", z_scale=0.9)
    assert torch.equal(authors(z, c), G(0.9 * z, c, truncation=1.0))
    both = G.with_options(truncation=0.5, z_scale=0.5)  # option and call-time truncation alike
    assert torch.equal(both(z, c), G(0.5 * z, c, truncation=0.5))
    assert fingerprint(Ga) != fingerprint(G)  # the option is part of what G computes
    for bad in (0.0, -1.0, float("nan"), True, "0.9"):
        with pytest.raises(ValueError, match="z_scale"):
            G.with_options(z_scale=bad)


def test_generate_gives_biggan_its_classes_and_refuses_psi_pointing_to_truncation(G):
    from magnet_lab import models

    z, c = latents(4)
    labels = c.argmax(1)
    torch.testing.assert_close(models.generate(G, z, labels=labels, batch_size=3),
                               G(z, c).clamp(-1, 1).float())
    torch.testing.assert_close(models.generate(G.with_options(z_scale=0.9), z, labels=labels),
                               G(0.9 * z, c).float())
    with pytest.raises(ValueError, match="truncation is a run option"):
        models.generate(G, z, labels=labels, psi=0.7)
    with pytest.raises(ValueError, match="truncation is a run option"):
        models.truncate(G, z, 0.7)
    with pytest.raises(ValueError, match="class-conditional"):
        models.generate(G, z)
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        models.generate(G, z, labels=torch.tensor([0, 1, 2, 3]))


def test_stats_rule_reference_reverses_interpolation_weights_and_lands_below_some_grid_values():
    assert stats_weights(0.4, 51) == [(20, 1.0)] == stats_weights(0.4, 51, "linear")
    assert stats_weights(1.0, 51) == [(50, 1.0)]
    (i, a), (j, b) = stats_weights(0.405, 51)  # 0.405 / 0.02 = 20.25
    assert (i, j) == (20, 21) and a == pytest.approx(0.25) and b == pytest.approx(0.75)
    (i, a), (j, b) = stats_weights(0.405, 51, "linear")
    assert (i, j) == (20, 21) and a == pytest.approx(0.75) and b == pytest.approx(0.25)
    (i, a), (j, b) = stats_weights(0.58, 51)  # 0.58 / 0.02 = 28.999999999999996
    assert (i, j) == (28, 29) and a > 1 - 1e-12  # the statistics stored for 0.56
    assert stats_weights(0.58, 51, "linear") == [(29, 1.0)]


def test_stats_rules_agree_on_exact_grid_values_and_differ_between_them(G):
    z, c = latents(2)
    Gl = G.with_options(stats_rule="linear")
    assert torch.equal(Gl(z, c, truncation=0.7), G(z, c, truncation=0.7))
    assert (Gl(z, c, truncation=0.405) - G(z, c, truncation=0.405)).abs().max() > 1e-6


def test_jvp_matches_central_differences_with_the_class_fixed(G):
    z, c = latents(2, seed=3)
    dz = torch.randn(z.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    f = lambda z_: G(z_, c, truncation=0.6)  # noqa: E731
    _, Jd = jvp(f, (z,), (dz,))
    h = 1e-5
    fd = (f(z + h * dz) - f(z - h * dz)) / (2 * h)
    assert (Jd - fd).abs().max() <= 1e-7 * Jd.abs().max()
    assert Jd.abs().max() > 1e-3


def test_vjp_is_the_adjoint_of_jvp(G):
    z, c = latents(3, seed=5)
    g = torch.Generator().manual_seed(6)
    dz = torch.randn(z.shape, generator=g, dtype=torch.float64)
    u = torch.randn(3, 3, 16, 16, generator=g, dtype=torch.float64)
    f = lambda z_: G(z_, c)  # noqa: E731
    _, Jd = jvp(f, (z,), (dz,))
    _, pullback = vjp(f, z)
    (JTu,) = pullback(u)
    assert torch.allclose((u * Jd).sum(), (JTu * dz).sum(), rtol=1e-12)


def test_vmap_over_the_batch_equals_the_loop_and_the_batched_call(G):
    z, c = latents(3, seed=7)
    loop = torch.stack([G(z[i], c[i]) for i in range(3)])
    assert torch.allclose(vmap(G)(z, c), loop, atol=1e-14)
    assert torch.allclose(G(z, c), loop, atol=1e-14)


def test_samples_are_independent_within_a_batch(G):
    z, c = latents(3, seed=8)
    x = G(z, c)
    z2 = z.clone()
    z2[1:] = torch.randn(2, BIGGAN_TINY["z_dim"], dtype=torch.float64)
    c2 = torch.roll(c, 1, dims=0)
    c2[0] = c[0]
    assert torch.allclose(G(z2, c2)[0], x[0], atol=1e-14)  # no batch statistics anywhere


def test_not_piecewise_affine_the_jacobian_moves_continuously(G):
    """A piecewise-affine G has a locally constant Jacobian; ours changes in proportion to the
    step (z enters every batch-norm gain; softmax attention; tanh)."""
    z, c = latents(1, seed=9)
    d = torch.randn(z.shape, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    f = lambda z_: G(z_, c)  # noqa: E731
    Jd = lambda z_: jvp(f, (z_,), (d,))[1]  # noqa: E731
    base = Jd(z)
    small, half = (Jd(z + 1e-4 * d) - base).norm(), (Jd(z + 0.5e-4 * d) - base).norm()
    assert small > 1e-8 * base.norm()
    assert small / half == pytest.approx(2.0, rel=1e-2)


def test_spectra_of_a_class_fixed_closure_equal_the_svd_of_the_jacobian(G):
    """What per-class banks will differentiate: z ↦ G(z, c) with one class for every row."""
    from magnet_lab import spectra

    c = G.one_hot([2])  # [1, 3]
    f = lambda z_: G(z_, c.expand(z_.shape[0], -1))  # noqa: E731
    z, _ = latents(2, seed=11)
    exact = spectra.SpectraOptions(method="exact")
    quiet = spectra.SpeedOptions(progress=False)
    log_sv = spectra.log_singular_values(f, z, exact, speed=quiet)  # [2, 4]
    # the same through spectra's conditioning seam: G(z, c) with c chunked along z
    c_rows = c.expand(2, -1)  # [2, 3]
    assert torch.equal(spectra.log_singular_values(G, z, exact, speed=quiet, c=c_rows), log_sv)
    for i in range(2):
        J = torch.func.jacrev(lambda z_: G(z_, c[0]).reshape(-1))(z[i])  # [768, 4]
        assert torch.allclose(log_sv[i], torch.linalg.svdvals(J).log(), atol=1e-10)


def test_class_vector_changes_the_image_and_one_hot_builds_it(G):
    z, _ = latents(1)
    c = G.one_hot(torch.tensor([0, 2]))
    assert c.dtype == torch.float64 and c.tolist() == [[1, 0, 0], [0, 0, 1]]
    x = G(z.expand(2, -1), c)
    assert (x[0] - x[1]).abs().max() > 1e-3
    assert G.one_hot(1).shape == (1, 3)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        G.one_hot([3])
    with pytest.raises(TypeError, match="integers"):
        G.one_hot(torch.tensor([0.0]))


@pytest.mark.parametrize("call, error, words", [
    (lambda G, z, c: G(z), ValueError, "class-conditional: pass c"),
    (lambda G, z, c: G(z[:, :3], c), ValueError, r"z must have shape \[B, z_dim=4\]"),
    (lambda G, z, c: G(z, c[:, :2]), ValueError, r"c must have shape \[B=2, num_classes=3\]"),
    (lambda G, z, c: G(z, c[:1]), ValueError, r"c must have shape \[B=2"),
    (lambda G, z, c: G(z, c.argmax(1)), TypeError, "one_hot"),
    (lambda G, z, c: G(z.numpy(), c), TypeError, "z must be a torch.Tensor"),
    (lambda G, z, c: G(z * float("nan"), c), ValueError, "non-finite"),
    (lambda G, z, c: G(z, c, truncation=0.0), ValueError,
     r"truncation must be a number in \(0, 1\]"),
    (lambda G, z, c: G(z, c, truncation=1.5), ValueError, r"in \(0, 1\]"),
    (lambda G, z, c: G.with_options(truncation=float("nan")), ValueError, r"in \(0, 1\]"),
    (lambda G, z, c: G.with_options(psi=0.5), ValueError, r"unknown option\(s\) \['psi'\]"),
    (lambda G, z, c: G.with_options(stats_rule="cubic"), ValueError, "unknown stats_rule"),
])
def test_bad_inputs_give_named_errors(G, call, error, words):
    z, c = latents(2)
    with pytest.raises(error, match=words):
        call(G, z, c)


@pytest.mark.parametrize("edit, words", [
    (dict(class_embed_dim=8), "class_embed_dim .* must equal z_dim"),
    (dict(output_dim=32), "output_dim 32 does not match the layers, which make 16"),
    (dict(layers=[[True, 4, 2], [True, 4, 1]]), r"layers\[1\] takes 4·ch channels but"),
    (dict(layers=[[True, 4, 1], [True, 1, 1]]), r"layers\[0\] maps 4 to 1"),
    (dict(layers=[[True, 4, 2], [True, 2, 2]]), "last block must output channel_width"),
    (dict(layers=[[True, 4, 2], ["yes", 2, 1]]), r"layers\[1\] must be \[upsample"),
    (dict(attention_layer_position=3), r"attention_layer_position must be an integer in \[0, 2\]"),
    (dict(n_stats=1), "n_stats must be an integer >= 2"),
    (dict(eps=0), "eps must be a finite positive number"),
    (dict(img_channels=9), r"img_channels \(9\) cannot exceed channel_width \(8\)"),
    (dict(depth=3), r"unknown BigGAN-deep config field\(s\) \['depth'\]"),
])
def test_inconsistent_configs_are_refused_naming_the_field(edit, words):
    with pytest.raises(ValueError, match=words):
        BigGANDeep(**{**BIGGAN_TINY, **edit})


def test_config_round_trips_through_json_and_options_enter_the_fingerprint(G):
    cfg = json.loads(json.dumps(G.config()))
    assert cfg == {**BIGGAN_TINY, "img_channels": 3}
    assert BigGANDeep(**cfg).state_dict().keys() == G.state_dict().keys()
    assert fingerprint(G) != fingerprint(G.with_options(truncation=0.5))
    no_attention = BigGANDeep(**dict(BIGGAN_TINY, attention_layer_position=2))  # len(layers): none
    assert [type(m).__name__ for m in no_attention.generator.layers] == ["GenBlock", "GenBlock"]
    assert [type(m).__name__ for m in G.generator.layers] == ["GenBlock", "SelfAttention",
                                                               "GenBlock"]
    one = randomise_biggan(BigGANDeep(**BIGGAN_TINY, img_channels=1)).double()
    assert one(*latents(1)).shape == (1, 1, 16, 16)


def test_released_configs_build_with_the_published_sizes():
    """biggan-deep-128/256/512: 10/12/14 blocks, attention before block 8, 51 statistics."""
    for name, blocks in (("biggan-deep-128", 10), ("biggan-deep-256", 12),
                         ("biggan-deep-512", 14)):
        cfg = BigGANDeepConfig(**RELEASED_CONFIGS[name])
        assert len(cfg.layers) == blocks and cfg.output_dim == int(name.rsplit("-", 1)[1])
        assert (cfg.z_dim, cfg.channel_width, cfg.num_classes, cfg.n_stats) == (128, 128, 1000, 51)
    shapes = biggan_folder.reference_shapes(RELEASED_CONFIGS["biggan-deep-128"])
    assert shapes["generator.gen_z.weight_orig"] == (4 * 4 * 16 * 128, 256)
    assert shapes["generator.layers.8.snconv1x1_theta.weight_orig"] == (32, 256, 1, 1)
    assert shapes["embeddings.weight"] == (128, 1000)
    assert shapes["generator.layers.0.bn_0.running_means"] == (51, 2048)


# -- the folder reader ----------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path) -> Path:
    write_biggan_folder(randomise_biggan(BigGANDeep(**BIGGAN_TINY)), tmp_path / "biggan-tiny")
    return tmp_path / "biggan-tiny"


def test_folder_loads_by_content_with_spectral_norm_folded(folder):
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    G = magnet_lab.load_generator(folder, truncation=0.5)
    assert isinstance(G, BigGANDeep) and not G.training and G.options()["truncation"] == 0.5
    assert G.sidecar["architecture"] == "BigGANDeep" and G.sidecar["kwargs"]["z_dim"] == 4
    w = state["generator.layers.0.conv_1.weight_orig"].double()
    sigma = torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2)
    assert torch.allclose(G.generator.layers[0].conv_1.weight.double(), w / sigma, rtol=1e-6)
    top = torch.linalg.matrix_norm(G.generator.gen_z.weight.double(), ord=2)
    assert top == pytest.approx(1, rel=1e-5)  # W / σ_max
    assert torch.equal(G.embeddings.weight, state["embeddings.weight"])  # not normalised
    assert biggan_folder.is_biggan_folder(folder)
    G64 = magnet_lab.load_generator(folder / "pytorch_model.bin", dtype=torch.float64)
    z, c = latents(2)
    assert torch.allclose(G64(z, c, truncation=0.5), G(z.float(), c.float()).double(), atol=1e-5)


def _edit_state(folder: Path, fn) -> None:
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    fn(state)
    torch.save(state, folder / "pytorch_model.bin")


@pytest.mark.parametrize("edit, words", [
    (lambda s: s.pop("generator.layers.0.bn_2.scale.weight_v"),
     r"1 missing \['generator.layers.0.bn_2.scale.weight_v'\]"),
    (lambda s: s.update(extra=torch.zeros(2)), r"1 unexpected \['extra'\]"),
    (lambda s: s.update({"generator.layers.0.bn_2.scale.weight_orig": torch.zeros(2, 8)}),
     r"1 mis-shaped \['generator.layers.0.bn_2.scale.weight_orig: file \(2, 8\) vs config "
     r"\(8, 8\)'\]"),
    (lambda s: s["generator.layers.2.conv_3.bias"].__setitem__(0, float("inf")),
     r"non-finite \(NaN/inf\) weights in \['generator.layers.2.conv_3.bias'\]"),
    (lambda s: s["generator.layers.2.bn_0.running_vars"].__setitem__(0, -1.0),
     r"var \+ eps <= 0 in \['generator.layers.2.bn_0.running_vars'\]"),
    (lambda s: s["generator.conv_to_rgb.weight_u"].mul_(-1),
     r"generator.conv_to_rgb: spectral-norm estimate .* is not positive"),
    (lambda s: s.update({"embeddings.weight": torch.zeros(4, 3, dtype=torch.int64)}),
     r"non-floating tensors \['embeddings.weight'\]"),
])
def test_a_wrong_bin_is_a_named_error(folder, edit, words):
    _edit_state(folder, edit)
    with pytest.raises(ValueError, match=words):
        magnet_lab.load_generator(folder)


def test_a_file_from_another_config_lists_a_few_keys_of_each_kind(folder, tmp_path):
    other = dict(BIGGAN_TINY, layers=[[True, 4, 2], [True, 2, 1], [False, 1, 1]], output_dim=16,
                 attention_layer_position=0)
    write_biggan_folder(randomise_biggan(BigGANDeep(**other)), tmp_path / "other")
    (tmp_path / "other" / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(ValueError, match=r"weights do not match config.json .* \d+ missing "
                                         r"\[.*\] and \d+ more, \d+ unexpected"):
        magnet_lab.load_generator(tmp_path / "other")


@pytest.mark.parametrize("edit, error, words", [
    (lambda c: c.pop("n_stats"), ValueError, r"missing \['n_stats'\], unknown \[\]"),
    (lambda c: c.update(depth=3), ValueError, r"missing \[\], unknown \['depth'\]"),
    (lambda c: c.update(output_dim=64), ValueError, "config.json: BigGAN-deep config: output_dim"),
])
def test_a_wrong_config_is_a_named_error(folder, edit, error, words):
    cfg = json.loads((folder / "config.json").read_text())
    edit(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(error, match=words):
        magnet_lab.load_generator(folder)


def test_folder_errors_name_what_is_missing_and_pickles_are_refused(folder, tmp_path):
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        magnet_lab.load_generator(folder)
    assert not biggan_folder.is_biggan_folder(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        magnet_lab.load_generator(empty)
    with pytest.raises(ValueError, match="is a directory"):
        magnet_lab.load_classifier(empty)

    bad = tmp_path / "bad"
    write_biggan_folder(randomise_biggan(BigGANDeep(**BIGGAN_TINY)), bad)
    marker = tmp_path / "ran"
    torch.save({"embeddings.weight": torch.zeros(4, 3), "x": payload("os.system", marker)[0]},
               bad / "pytorch_model.bin")
    with pytest.raises(ValueError, match="refused to load: it holds the disallowed global"):
        magnet_lab.load_generator(bad)
    assert not marker.exists()


def test_loaded_biggan_draws_candidates_from_the_truncated_normal_scaled_by_its_truncation(tmp_path):
    """load_generator attaches BigGAN's latent law: truncation · truncnorm(−2, 2), with the
    classes of a conditional generator; a Gaussian generator keeps the Gaussian law."""
    from magnet_lab import latent

    write_biggan_folder(randomise_biggan(BigGANDeep(**BIGGAN_TINY)), tmp_path / "bg")
    G = magnet_lab.load_generator(tmp_path / "bg", truncation=0.4)
    spec = latent.spec_of(G)
    assert spec.law == latent.TruncatedNormalLaw(bound=2.0, scale=0.4)
    assert spec.n_classes == BIGGAN_TINY["num_classes"] and spec.run_options["truncation"] == 0.4
    drawn = spec.draw(4000, seed=0)
    assert drawn.z.abs().max() <= 0.8 and drawn.z.abs().max() > 0.78
    assert set(drawn.labels.tolist()) == set(range(BIGGAN_TINY["num_classes"]))
    assert isinstance(latent.spec_of(magnet_lab.load_generator("fmnist-dcgan")).law, latent.GaussianLaw)


def test_the_authors_recipe_loads_through_the_registry_and_keeps_the_unscaled_law(tmp_path):
    """load_generator(folder, **AUTHORS_RECIPE): truncation 1, z × 0.9 inside G; candidates stay
    truncnorm(−2, 2) (scale 1) and the recipe is the spec's run options (what a bank records)."""
    from magnet_lab import latent

    write_biggan_folder(randomise_biggan(BigGANDeep(**BIGGAN_TINY)), tmp_path / "bg")
    plain = magnet_lab.load_generator(tmp_path / "bg")
    G = magnet_lab.load_generator(tmp_path / "bg", **AUTHORS_RECIPE)
    spec = latent.spec_of(G)
    assert spec.law == latent.TruncatedNormalLaw(bound=2.0, scale=1.0)
    assert spec.run_options == AUTHORS_RECIPE and G.options()["z_scale"] == 0.9
    z, c = latents(2, dtype=torch.float32)
    assert torch.equal(G(z, c), plain(0.9 * z, c))
    assert fingerprint(G) != fingerprint(plain)
    with pytest.raises(ValueError, match="z_scale"):
        magnet_lab.load_generator(tmp_path / "bg", z_scale=-0.9)
