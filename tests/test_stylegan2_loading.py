"""StyleGAN2 files through the one door: NVIDIA pickles, TensorFlow pickles and rosinality
checkpoints become our ``StyleGAN2Generator`` via ``load_generator``, run, give Jacobian spectra,
and take their run options (ψ, cutoff, noise) — all from tiny replicas of the official structures
built by ``test_nvidia_readers``' own code, never NVIDIA's."""
from __future__ import annotations

import argparse

import pytest
import torch

import magnet_lab
from magnet_lab import spectra
from magnet_lab.__main__ import main
from magnet_lab.bank import VolumeBank
from magnet_lab.models import fingerprint
from magnet_lab.models.stylegan2 import StyleGAN2Generator
from builders import ada_generator, ada_pickle, rosinality_state, tf_pickle

Z = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def ada_pkl(tmp_path):
    g, _ = ada_generator(tmp_path / "src_ran")
    return ada_pickle(tmp_path / "network-snapshot.pkl", g)


def test_ada_pickle_loads_as_our_generator_without_running_its_source(ada_pkl):
    G = magnet_lab.load_generator(ada_pkl)
    assert isinstance(G, StyleGAN2Generator) and not G.training
    assert G.z_dim == 8 and G.num_ws == 4 and G.sidecar["source"]["reader"] == "nvidia-pickle"
    x = G(Z)
    assert x.shape == (3, 3, 8, 8) and torch.isfinite(x).all()
    assert not (ada_pkl.parent / "src_ran").exists()  # the embedded module_src never ran


def test_run_options_are_those_of_the_official_call(ada_pkl):
    """load_generator(path, psi, cutoff, noise_mode) is G(z, psi=..., cutoff=..., noise_mode=...)
    of the plain generator: a plain call (what spectra makes) follows the options."""
    plain = magnet_lab.load_generator(ada_pkl, dtype=torch.float64)
    G = magnet_lab.load_generator(ada_pkl, dtype=torch.float64, psi=0.5, cutoff=2,
                                  noise_mode="none")
    z = Z.double()
    assert torch.equal(G(z), plain(z, psi=0.5, cutoff=2, noise_mode="none"))
    assert not torch.allclose(G(z), plain(z))
    ws = plain.mapping(z, psi=0.0, cutoff=2)  # ψ = 0: the first `cutoff` ws are w_avg
    assert torch.allclose(ws[:, :2], plain.mapping.w_avg.expand(3, 2, -1))
    assert fingerprint(G) != fingerprint(plain)  # a bank at ψ = 0.5 is another bank
    with pytest.raises(ValueError, match="unknown option"):
        magnet_lab.load_generator(ada_pkl, truncation=0.5)
    with pytest.raises(ValueError, match="takes no run options"):
        magnet_lab.load_generator("fmnist-dcgan", psi=0.5)


def test_spectra_of_a_loaded_pickle_match_the_autograd_jacobian(ada_pkl):
    G = magnet_lab.load_generator(ada_pkl, dtype=torch.float64, psi=0.7)
    z = Z.double()
    quiet = spectra.SpeedOptions(progress=False)
    log_sv = spectra.log_singular_values(G, z, speed=quiet)  # [3, 8]
    with torch.no_grad():  # z is normalised first: the radial direction is in J's null space
        Jz = torch.func.jvp(G, (z,), (z,))[1]
    assert Jz.abs().max() <= 1e-9 * G(z).abs().max()
    for i in range(3):
        J = torch.autograd.functional.jacobian(lambda v: G(v[None]).reshape(-1), z[i])  # [D, d]
        ref = torch.linalg.svdvals(J)  # σ are determined to about eps·σ_max, the smallest
        assert (log_sv[i].exp() - ref).abs().max() <= 1e-10 * ref[0]  # too in relative terms


def test_tensorflow_and_rosinality_files_load_and_run(tmp_path):
    tf = tmp_path / "stylegan2-ffhq-config-f.pkl"
    tf_pickle(tf, tmp_path / "tf_src_ran")
    G = magnet_lab.load_generator(tf)
    assert isinstance(G, StyleGAN2Generator) and torch.isfinite(G(Z)).all()
    assert not (tmp_path / "tf_src_ran").exists()
    ros = tmp_path / "550000.pt"
    torch.save({"g_ema": rosinality_state(), "latent_avg": torch.randn(8),
                "args": argparse.Namespace(size=8)}, ros)
    G = magnet_lab.load_generator(ros)
    assert isinstance(G, StyleGAN2Generator) and G(Z).shape == (3, 3, 8, 8)


def test_a_missing_pickle_is_not_found_rather_than_unknown(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        magnet_lab.load_generator(tmp_path / "stylegan2-ffhq-config-f.pkl")
    with pytest.raises(FileNotFoundError):
        magnet_lab.load_generator("stylegan2-ffhq-config-f.pkl")


def test_cli_builds_a_bank_of_a_pickle_and_samples_from_it(ada_pkl, tmp_path):
    out = tmp_path / "bank"
    assert main(["bank", "--generator", str(ada_pkl), "--n", "6", "--method", "projected",
                 "--proj-dim", "16", "--k", "8", "--out", str(out)]) == 0
    vb = VolumeBank.load(out)
    # G(c z) = G(z) (z is normalised first), so J z = 0: one singular value is exactly zero
    assert vb.rank == 8 and torch.isfinite(vb.log_sv[:, :7]).all()
    assert torch.isneginf(vb.log_sv[:, 7]).all()
    assert main(["sample", "--bank", str(out), "--n", "4", "--top-k", "7",
                 "--out", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s.png").stat().st_size > 0


def test_cli_bank_at_a_psi_samples_with_the_same_options(ada_pkl, tmp_path, capsys):
    """The bank records the run options; sample reloads the generator with them (its
    fingerprint must match), and a bank at psi 0.7 is a different bank from one at psi 1."""
    out = tmp_path / "bank"
    common = ["bank", "--generator", str(ada_pkl), "--n", "4", "--shard-size", "2",
              "--method", "projected", "--proj-dim", "16", "--k", "7", "--out", str(out)]
    assert main(common + ["--psi", "0.7", "--noise-mode", "none", "--worker", "0/2"]) == 0
    vb_meta = VolumeBank.load(out / "shard-00000.safetensors").meta
    assert vb_meta["generator_options"] == {"psi": 0.7, "noise_mode": "none"}
    capsys.readouterr()
    assert main(common + ["--worker", "1/2"]) == 2  # psi 1 is another generator
    assert "generator_fingerprint differs" in capsys.readouterr().err
    assert main(common + ["--psi", "0.7", "--noise-mode", "none", "--worker", "1/2"]) == 0
    assert main(["sample", "--bank", str(out), "--n", "3", "--out", str(tmp_path / "s")]) == 0
