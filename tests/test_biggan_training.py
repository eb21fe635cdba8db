"""Training our BigGAN-deep (magnet_lab.models.biggan_training, training.train_biggan, and
train_fmnist.py --what biggan): the train-mode twin exports to a BigGANDeep that computes what the
twin computes in eval mode; standing statistics are the pooled statistics of each truncation, in
grid order; spectral norm's σ is the top singular value (float64, against svdvals); a resumed run
equals an uninterrupted one bit for bit; the command line writes a loadable checkpoint."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import magnet_lab
from magnet_lab import latent, training
from magnet_lab.models.biggan import BigGANDeep, stats_weights
from magnet_lab.models.biggan_training import (ProjectionDiscriminator,
                                               TrainableBigGANDeep,
                                               TrainableConditionalBatchNorm, export,
                                               power_iterate, sn_sigma, standing_statistics,
                                               truncation_grid)
from magnet_lab.models.fmnist import FmnistBigGAN
from magnet_lab.models.readers import file_sha256

from builders import BIGGAN_TINY

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors on a shared 2-core runner

TINY = dict(BIGGAN_TINY, n_stats=6)  # truncations 0, 0.2, ..., 1
# the smallest embedded configuration train_biggan accepts (32×32 output, one channel)
TINY_TRAIN = dict(config=dict(channel_width=8, n_stats=3), d_channel_width=4, batch_size=8,
                  stats_samples=20, threads=1, log_every=1, log=lambda msg: None)


def _randomised_twin(seed: int = 0) -> TrainableBigGANDeep:
    """A float64 twin with Gaussian weights (distinct singular values) and moved u, v."""
    torch.manual_seed(seed)
    G = TrainableBigGANDeep(**TINY).double()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in G.named_parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g, dtype=torch.float64)
                    + (1.0 if name.endswith("bn.weight") else 0.0))
    power_iterate(G, 3)
    return G


def _inputs(G, n: int = 6, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.z_dim, generator=g, dtype=torch.float64)  # [n, z_dim]
    return z, G.one_hot(torch.arange(n) % G.c_dim)  # [n, K]


def test_export_computes_what_the_twin_computes_in_eval_mode():
    G = _randomised_twin()
    standing_statistics(G, n_samples=60, batch_size=25, seed=3)
    E = export(G)
    assert type(E) is BigGANDeep and not E.training
    assert E.state_dict().keys() == BigGANDeep(**TINY).state_dict().keys()
    z, c = _inputs(G)
    G.eval()
    with torch.no_grad():
        for t in (1.0, 0.6, 0.37, 0.2):
            torch.testing.assert_close(E(z, c, truncation=t), G(z, c, truncation=t),
                                       rtol=0, atol=1e-12)
        # the statistics matter: another truncation gives other images
        assert (E(z, c, truncation=1.0) - E(z, c, truncation=0.2)).abs().max() > 1e-3
    cropped = G.export(FmnistBigGAN, crop=2)
    torch.testing.assert_close(cropped(z, c), E(z, c)[..., 2:-2, 2:-2], rtol=0, atol=0)


def test_standing_statistics_are_pooled_per_truncation_in_grid_order():
    G = _randomised_twin()
    n, bs, seed = 50, 20, 7  # batches of 20, 20, 10: pooled, not a mean of batch means
    standing_statistics(G, n_samples=n, batch_size=bs, seed=seed)
    bn = G.generator.layers[0].bn_0  # its input is gen_z's output
    assert bn.running_means.shape == (TINY["n_stats"], bn.running_means.shape[1])
    labels = torch.arange(n) % G.c_dim
    for i, t in enumerate(truncation_grid(TINY["n_stats"])):
        assert t == pytest.approx(i / (TINY["n_stats"] - 1))
        if t == 0:
            z = torch.zeros(n, G.z_dim, dtype=torch.float64)
        else:
            z = latent.TruncatedNormalLaw(2.0, t).sample(
                n, G.z_dim, rng=torch.Generator().manual_seed(seed + i), dtype=torch.float64)
        G.eval()
        with torch.no_grad():
            cond = torch.cat([z, G.embeddings(G.one_hot(labels))], dim=1)
            x = G.generator.gen_z(cond).reshape(n, 4, 4, -1).permute(0, 3, 1, 2)  # [n, C, 4, 4]
        torch.testing.assert_close(bn.running_means[i], x.mean(dim=(0, 2, 3)), rtol=1e-12,
                                   atol=1e-12)
        torch.testing.assert_close(bn.running_vars[i], x.var(dim=(0, 2, 3), unbiased=False),
                                   rtol=1e-10, atol=1e-12)
    assert not torch.allclose(bn.running_vars[0], bn.running_vars[-1])
    before = bn.running_means.clone()
    standing_statistics(G, n_samples=n, batch_size=bs, seed=seed + 1, indices=[2])
    changed = (bn.running_means != before).any(dim=1)
    assert changed.tolist() == [False, False, True, False, False, False]
    assert stats_weights(1.0, TINY["n_stats"]) == [(TINY["n_stats"] - 1, 1.0)]  # t = 1: last row
    with pytest.raises(ValueError, match="indices must lie in"):
        standing_statistics(G, n_samples=n, indices=[6])


def test_spectral_norm_sigma_is_the_top_singular_value():
    G = _randomised_twin()
    torch.manual_seed(0)
    D = ProjectionDiscriminator(1, 16, 4, 3).double()
    with torch.no_grad():
        for p in D.parameters():
            p.normal_()
    for model in (G, D):
        power_iterate(model, 500)
        n = 0
        for m in model.modules():
            if hasattr(m, "parametrizations"):
                w = m.parametrizations.weight.original.flatten(1)  # [out, in·k·k]
                top = torch.linalg.svdvals(w)[0]
                torch.testing.assert_close(sn_sigma(m), top, rtol=1e-9, atol=0)
                n += 1
        assert n >= 8
    E = export(G)
    w = G.generator.gen_z.parametrizations.weight.original
    torch.testing.assert_close(E.generator.gen_z.weight, w / torch.linalg.svdvals(w)[0],
                               rtol=1e-9, atol=1e-12)
    assert "embeddings.weight" in dict(G.named_parameters())  # the class embedding: no σ


def test_batch_norm_uses_batch_statistics_in_train_mode_and_stored_ones_in_eval():
    torch.manual_seed(0)
    bn = TrainableConditionalBatchNorm(5, 4, n_stats=3, eps=1e-4).double()
    x = 2 + 3 * torch.randn(8, 5, 3, 3, dtype=torch.float64)
    cond = torch.randn(8, 4, dtype=torch.float64)
    with torch.no_grad():
        bn.running_means[1] = 0.5
        bn.running_vars[1] = 4.0
    w = stats_weights(0.5, 3)
    gain = 1 + bn.scale(cond)[:, :, None, None]
    offset = bn.offset(cond)[:, :, None, None]
    batch = F.batch_norm(x, None, None, training=True, eps=1e-4)
    torch.testing.assert_close(bn.train()(x, cond, w), batch * gain + offset)
    torch.testing.assert_close(bn.eval()(x, cond, w),
                               (x - 0.5) / (4.0 + 1e-4) ** 0.5 * gain + offset)


def _evaluate(G) -> dict:
    """An evaluation that draws from the global RNG: it must not perturb training."""
    z = torch.randn(4, G.z_dim)
    return {"metrics": {}, "mean": float(G(z, G.one_hot([0, 1, 2, 3])).mean())}


def test_a_resumed_biggan_run_equals_an_uninterrupted_one_bit_for_bit(tmp_path):
    G_a, rec_a = training.train_biggan(0, 4, state_path=tmp_path / "a.pt", eval_every=2,
                                       evaluate=_evaluate, **TINY_TRAIN)
    G_half, _ = training.train_biggan(0, 2, state_path=tmp_path / "b.pt", eval_every=2,
                                      evaluate=_evaluate, **TINY_TRAIN)
    G_b, rec_b = training.train_biggan(0, 4, state_path=tmp_path / "b.pt", eval_every=2,
                                       evaluate=_evaluate, **TINY_TRAIN)
    a = torch.load(tmp_path / "a.pt", weights_only=True)
    b = torch.load(tmp_path / "b.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for key in ("G", "D", "G_ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    for name, t in G_a.state_dict().items():
        assert torch.equal(t, G_b.state_dict()[name]), name
    assert not torch.equal(G_half.generator.gen_z.weight, G_b.generator.gen_z.weight)
    assert [r["loss_d"] for r in rec_a["history"]] == [r["loss_d"] for r in rec_b["history"]]
    assert [e["quality"] for e in rec_a["quality_curve"]] == \
        [e["quality"] for e in rec_b["quality_curve"]]
    moved = [r["loss_d"] for r in rec_a["history"]]
    assert len(set(moved)) == len(moved)  # the losses move
    assert isinstance(G_a, FmnistBigGAN) and rec_a["steps"] == 4


def test_cli_biggan_writes_a_loadable_checkpoint_with_per_class_quality(tmp_path):
    import importlib.util

    for suffix in (".safetensors", ".json"):
        shutil.copy(Path(magnet_lab.paths.data_dir()) / f"fmnist-classifier{suffix}", tmp_path)
    spec = importlib.util.spec_from_file_location(
        "train_fmnist", Path(__file__).parents[1] / "scripts" / "train_fmnist.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert cli.main(["--what", "biggan", "--out", str(tmp_path), "--steps", "3",
                     "--batch-size", "8", "--channel-width", "8", "--d-channel-width", "4",
                     "--n-stats", "3", "--stats-samples", "20", "--per-class-n", "12", "--n-boot", "20",
                     "--threads", "1", "--eval-every", "3", "--state", str(tmp_path / "s.pt"),
                     "--grid", str(tmp_path / "grid.png")]) == 0
    path = tmp_path / "fmnist-biggan.safetensors"
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["weights_sha256"] == file_sha256(path) and path.stat().st_size < 20e6
    assert side["architecture"] == "FmnistBigGAN" and side["kwargs"]["n_stats"] == 3
    per_class = side["final_metrics"]["per_class_quality"]["classes"]
    assert len(per_class) == 10 and per_class["Coat"]["n"] == 12
    assert side["final_metrics"]["per_class_quality"]["n_boot"] == 20
    for q in per_class.values():
        a = q["agreement"]
        assert 0 <= a["lo"] <= a["value"] <= a["hi"] <= 1
        assert {"precision", "recall", "fid"} <= set(q["metrics"])
    assert [e["step"] for e in side["quality_curve"]] == [3]
    assert len(side["quality_curve"][0]["quality"]["agreement"]) == 10
    G = magnet_lab.load_generator(path, truncation=0.5)
    spec_ = latent.spec_of(G)
    assert isinstance(G, FmnistBigGAN) and spec_.n_classes == 10
    assert spec_.law == latent.TruncatedNormalLaw(2.0, 0.5)
    assert G(torch.zeros(2, 32), G.one_hot([3, 4])).shape == (2, 1, 28, 28)
    assert (tmp_path / "fmnist-biggan-samples.png").is_file()


@pytest.mark.parametrize("kwargs, match", [(dict(steps=0), "steps must be >= 1"),
                                           (dict(minutes=0.0), "minutes must be > 0"),
                                           (dict(d_steps=0), "d_steps must be >= 1")])
def test_train_biggan_refuses_bad_budgets(kwargs, match):
    with pytest.raises(ValueError, match=match):
        training.train_biggan(**{"steps": 5, **kwargs})
