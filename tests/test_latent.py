"""The latent law as a seam: exact draws and log priors, identities, conditioning, spec_of, wrap."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from magnet_lab import latent, sampling


def test_gaussian_law_is_todays_draw_prior_and_identity():
    law = latent.GaussianLaw()
    spec = latent.LatentSpec(law, 5)
    drawn = spec.draw(7, seed=3)
    assert torch.equal(drawn.z, sampling.gaussian_latents(7, 5, seed=3))
    assert drawn.labels is None and drawn.seeds is None
    assert drawn.law == {"law": "gaussian", "seed": 3}  # the identity existing banks carry
    z = drawn.z.double()
    torch.testing.assert_close(law.log_prior(z), sampling.gaussian_log_prior(z))
    per_row = spec.draw(4, seed=10, per_row=True, dtype=torch.float64)
    assert per_row.law == {"law": "gaussian_per_row", "first_seed": 10}
    assert torch.equal(per_row.seeds, torch.arange(10, 14))
    assert torch.equal(per_row.z, sampling.latents_from_seeds(torch.arange(10, 14), 5,
                                                              dtype=torch.float64))
    assert drawn.bank_arguments() == {"latent_law": drawn.law, "seeds": None}


@pytest.mark.parametrize("bound, scale", [(2.0, 1.0), (0.5, 3.0), (4.0, 0.25)])
def test_truncated_normal_log_prior_is_scipys_normalised_density(bound, scale):
    law = latent.TruncatedNormalLaw(bound=bound, scale=scale)
    z = law.sample(50, 3, rng=torch.Generator().manual_seed(0), dtype=torch.float64)  # [50, 3]
    ref = stats.truncnorm(-bound, bound, scale=scale).logpdf(z.numpy()).sum(1)  # [50]
    np.testing.assert_allclose(law.log_prior(z).numpy(), ref, rtol=1e-12, atol=1e-12)
    outside = z.clone()
    outside[0, 1] = 1.01 * bound * scale
    lp = law.log_prior(outside)
    assert lp[0] == -math.inf and torch.isfinite(lp[1:]).all()


def test_truncated_normal_draws_follow_the_law_and_are_seeded():
    law = latent.TruncatedNormalLaw(bound=2.0, scale=1.5)
    g = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    z = law.sample(4000, 5, rng=g(1), dtype=torch.float64)  # [4000, 5]
    assert z.dtype == torch.float64 and float(z.abs().max()) <= 3.0
    ks = stats.kstest(z.flatten().numpy(), stats.truncnorm(-2.0, 2.0, scale=1.5).cdf)
    assert ks.pvalue > 1e-3
    assert torch.equal(z, law.sample(4000, 5, rng=g(1), dtype=torch.float64))
    assert not torch.equal(z, law.sample(4000, 5, rng=g(2), dtype=torch.float64))
    # float32 draws are the float64 draws rounded
    assert torch.equal(law.sample(10, 5, rng=g(1)), law.sample(10, 5, rng=g(1),
                                                               dtype=torch.float64).float())


def test_truncated_normal_identity_adds_its_fields_and_round_trips():
    law = latent.TruncatedNormalLaw(bound=1.0, scale=0.7)
    ident = law.identity(5)
    assert ident == {"law": "truncated_normal", "seed": 5, "bound": 1.0, "scale": 0.7}
    assert law.identity(5, per_row=True)["law"] == "truncated_normal_per_row"
    assert latent.law_from_identity(ident) == law
    assert latent.law_from_identity({"law": "gaussian", "seed": 0}) == latent.GaussianLaw()
    with pytest.raises(ValueError, match="'given'"):
        latent.law_from_identity({"law": "given"})
    with pytest.raises(ValueError, match="None"):
        latent.law_from_identity(None)


@pytest.mark.parametrize("kwargs", [dict(bound=0.0), dict(scale=-1.0), dict(bound=math.inf),
                                    dict(scale=True)])
def test_truncated_normal_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError, match="finite positive"):
        latent.TruncatedNormalLaw(**kwargs)


def test_conditional_draws_store_uniform_classes_without_changing_the_latents():
    spec = latent.LatentSpec(latent.GaussianLaw(), 4, n_classes=5)
    drawn = spec.draw(5000, seed=2)
    assert torch.equal(drawn.z, sampling.gaussian_latents(5000, 4, seed=2))
    counts = torch.bincount(drawn.labels, minlength=5).double()  # [5]
    chi2 = stats.chisquare(counts.numpy())
    assert drawn.labels.dtype == torch.int64 and chi2.pvalue > 1e-3
    assert drawn.law == {"law": "gaussian", "seed": 2, "n_classes": 5, "classes": [0, 1, 2, 3, 4]}
    assert drawn.bank_arguments()["n_classes"] == 5
    two = spec.draw(300, seed=2, classes=[1, 3])
    assert set(two.labels.tolist()) == {1, 3} and two.law["classes"] == [1, 3]
    one = spec.draw(6, seed=0, per_row=True, classes=[4])
    assert one.labels.tolist() == [4] * 6
    row = spec.draw(1, seed=3, per_row=True, classes=[1, 3])  # row 3 of a per-row draw, alone
    assert torch.equal(spec.draw(4, seed=0, per_row=True, classes=[1, 3]).labels[3:], row.labels)
    with pytest.raises(ValueError, match="classes"):
        spec.draw(3, seed=0, classes=[5])
    with pytest.raises(ValueError, match="unconditional"):
        latent.LatentSpec(latent.GaussianLaw(), 4).draw(3, seed=0, classes=[0])


def test_spec_of_loaded_generators_and_plain_modules():
    import magnet_lab

    G = magnet_lab.load_generator("fmnist-dcgan")
    spec = latent.spec_of(G)
    assert spec is G.latent_spec and spec.law == latent.GaussianLaw()
    assert spec.z_dim == G.z_dim and spec.n_classes is None and spec.run_options == {}
    S = magnet_lab.load_generator("fmnist-stylegan2", psi=0.7)
    assert latent.spec_of(S).run_options == {"psi": 0.7}

    class Plain(torch.nn.Module):
        z_dim = 3
        c_dim = 4

    assert latent.spec_of(Plain()) == latent.LatentSpec(latent.GaussianLaw(), 3, n_classes=4)
    with pytest.raises(ValueError, match="latent.wrap"):
        latent.spec_of(torch.nn.Linear(2, 2))


def test_wrap_gives_a_users_callable_its_law_once():
    from magnet_lab import models

    net = torch.nn.Linear(3, 4)
    G = latent.wrap(net, 3, law=latent.TruncatedNormalLaw(bound=1.0))
    assert latent.spec_of(G).law == latent.TruncatedNormalLaw(bound=1.0) and G.z_dim == 3
    z = torch.randn(2, 3)
    assert torch.equal(G(z), net(z))
    before = models.fingerprint(G)
    with torch.no_grad():
        net.bias.add_(1.0)
    assert models.fingerprint(G) != before  # the wrapped module's weights are in it
    f = latent.wrap(lambda z: z.sum(1, keepdim=True), 3, fingerprint="sum-v1")
    assert models.fingerprint(f) != models.fingerprint(
        latent.wrap(lambda z: z.sum(1, keepdim=True), 3, fingerprint="sum-v2"))
    with pytest.raises(ValueError, match="fingerprint"):
        latent.wrap(lambda z: z, 3)
    with pytest.raises(ValueError, match="z_dim"):
        latent.wrap(net, 0)


def test_spec_of_a_biggan_built_without_a_loader_has_its_truncated_law():
    """A BigGAN-deep built or trained in this process (no loader attached a spec) draws its
    candidates from truncation · truncnorm(−2, 2), as a loaded one does, not from N(0, I)."""
    from magnet_lab.models.biggan import BigGANDeep
    from magnet_lab.models.fmnist import FmnistBigGAN

    for G in (FmnistBigGAN(), BigGANDeep(output_dim=32, z_dim=4, class_embed_dim=4,
                                         channel_width=8, num_classes=3,
                                         layers=[[True, 1, 1]] * 3, attention_layer_position=1,
                                         eps=1e-4, n_stats=3)):
        spec = latent.spec_of(G.with_options(truncation=0.5))
        assert isinstance(spec.law, latent.TruncatedNormalLaw)
        assert spec.law.bound == 2.0 and spec.law.scale == 0.5 and spec.n_classes == G.c_dim
        z = spec.draw(2000, seed=0).z
        assert float(z.abs().max()) <= 1.0 and float(z.std()) < 0.5
