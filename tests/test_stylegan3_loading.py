"""StyleGAN3 pickles through the restricted reader and the one door: files shaped like the
stylegan3 repository's training snapshots (``G``, ``D``, ``G_ema``, ``augment_pipe``,
``training_set_kwargs``; each network a persistence record with its module source as text, its
``__dict__`` state and flat constructor kwargs) are built here by our own code from the published
layout — no NVIDIA code or weights. Embedded sources carry a payload that would create a marker
file if they were ever executed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import magnet_lab
from magnet_lab import spectra
from magnet_lab.models.readers import (identify, nvidia_pickle, read_generator, read_state_dict,
                                       read_stylegan2, read_stylegan3)
from magnet_lab.models.stylegan3 import StyleGAN3Generator, input_transform
from payloads import payload
from builders import (PersistentNet, Z, ada_generator, ada_pickle, make_stylegan3 as make_G,
                      nvidia_dumps, stylegan3_record)

def _snapshot(path: Path, g: PersistentNet) -> Path:
    return ada_pickle(path, g)  # G, D, G_ema, augment_pipe, training_set_kwargs, as training does


@pytest.fixture
def t_pkl(tmp_path):
    G = make_G("T").float()
    return _snapshot(tmp_path / "stylegan3-t.pkl", stylegan3_record(G, tmp_path / "src_ran", "T")), G


@pytest.mark.parametrize("config, c_dim", [("T", 0), ("R", 3)])
def test_snapshot_reads_back_exact_state_and_normalised_config(tmp_path, config, c_dim):
    G = make_G(config, c_dim).float()
    marker = tmp_path / "src_ran"
    path = _snapshot(tmp_path / "network-snapshot-000000.pkl", stylegan3_record(G, marker, config))
    assert identify(path) is nvidia_pickle
    state, cfg = read_stylegan3(path)
    want = G.state_dict()
    assert set(state) == set(want)
    assert all(torch.equal(state[k], want[k]) for k in want)
    assert cfg["synthesis_kwargs"]["use_radial_filters"] == (config == "R")
    assert cfg["synthesis_kwargs"]["conv_kernel"] == (1 if config == "R" else 3)
    assert cfg["synthesis_kwargs"]["conv_clamp"] == 256 and cfg["mapping_kwargs"]["w_avg_beta"] == 0.998
    assert json.loads(json.dumps(cfg)) == cfg
    H = StyleGAN3Generator(**cfg)
    H.load_state_dict(state, strict=True)
    assert H.synthesis.layer_names == G.synthesis.layer_names
    arch, state2, cfg2 = read_generator(path)
    assert arch == "StyleGAN3Generator" and cfg2 == cfg and set(state2) == set(state)
    assert set(read_state_dict(path)) == set(want)
    assert not marker.exists()  # module_src was never executed


def test_load_generator_gives_our_stylegan3_with_the_same_images_and_options(t_pkl):
    path, G = t_pkl
    H = magnet_lab.load_generator(path, dtype=torch.float64)
    assert isinstance(H, StyleGAN3Generator) and not H.training
    assert H.sidecar["architecture"] == "StyleGAN3Generator"
    assert H.sidecar["source"]["reader"] == "nvidia-pickle"
    z = torch.randn(3, Z, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    G64 = G.double()
    assert torch.allclose(H(z), G64(z), rtol=0, atol=1e-12)
    M = input_transform(translate=(0.05, 0.0), rotate_deg=5)
    Ht = magnet_lab.load_generator(path, dtype=torch.float64, psi=0.7, cutoff=3, transform=M)
    assert torch.allclose(Ht(z), G64(z, psi=0.7, cutoff=3, transform=M), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="unknown option"):
        magnet_lab.load_generator(path, noise_mode="const")  # StyleGAN3 has no noise inputs
    assert not (path.parent / "src_ran").exists()


def test_spectra_of_a_loaded_stylegan3_match_the_autograd_jacobian(t_pkl):
    path, _ = t_pkl
    G = magnet_lab.load_generator(path, dtype=torch.float64, psi=0.7)
    z = torch.randn(1, Z, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    log_sv = spectra.log_singular_values(G, z, spectra.SpectraOptions(method="exact"),
                                          speed=spectra.SpeedOptions(progress=False))  # [1, 8]
    J = torch.func.jacfwd(lambda v: G(v[None]).reshape(-1))(z[0])  # [D, d], d JVPs
    ref = torch.linalg.svdvals(J)
    # z is normalised first, so J z = 0 and the last σ is zero up to rounding
    assert (log_sv[0, :-1].exp() - ref[:-1]).abs().max() <= 1e-9 * ref[0]


def test_stylegan2_and_stylegan3_readers_refuse_each_others_files(tmp_path, t_pkl):
    path, _ = t_pkl
    with pytest.raises(ValueError, match="StyleGAN3 generator.*read it with read_stylegan3") as err:
        read_stylegan2(path)
    assert str(path) in str(err.value)
    g2, _ = ada_generator(tmp_path / "sg2_src_ran")
    sg2 = ada_pickle(tmp_path / "sg2.pkl", g2)
    with pytest.raises(ValueError, match="not a StyleGAN3 generator"):
        read_stylegan3(sg2)
    assert read_generator(sg2)[0] == "StyleGAN2Generator"


def test_positional_constructor_arguments_are_read(tmp_path):
    G = make_G("T").float()
    g = stylegan3_record(G, tmp_path / "ran", "T")
    kw = g.meta["state"]["_init_kwargs"]
    g.meta["state"]["_init_args"] = tuple(kw.pop(k) for k in ("z_dim", "c_dim", "w_dim",
                                                             "img_resolution", "img_channels"))
    _, cfg = read_stylegan3(_snapshot(tmp_path / "g.pkl", g))
    assert cfg["z_dim"] == Z and cfg["img_resolution"] == 16


@pytest.mark.parametrize("edit, message", [
    (lambda kw: kw.update(channel_max=16), "do not match the StyleGAN3 configuration"),
    (lambda kw: kw.update(architecture="skip"), r"unknown StyleGAN3 synthesis kwargs \['architecture'\]"),
    (lambda kw: kw.pop("img_channels"), "lack"),
])
def test_kwargs_that_disagree_with_the_weights_give_named_errors(tmp_path, edit, message):
    G = make_G("T").float()
    g = stylegan3_record(G, tmp_path / "ran", "T")
    edit(g.meta["state"]["_init_kwargs"])
    path = _snapshot(tmp_path / "g.pkl", g)
    with pytest.raises(ValueError, match=message) as err:
        magnet_lab.load_generator(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


KINDS = ["posix.system", "builtins.eval", "builtins.exec", "builtins.getattr", "subprocess.Popen"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("where", ["layer_state", "init_kwargs", "training_set_kwargs"])
def test_stylegan3_snapshot_with_a_code_executing_global_is_refused_without_side_effect(
        tmp_path, kind, where):
    marker = tmp_path / "pwned"
    evil, name = payload(kind, marker)
    G = make_G("T").float()
    g = stylegan3_record(G, tmp_path / "src_ran", "T")
    path = tmp_path / "stylegan3-t-afhqv2-512x512.pkl"
    if where == "layer_state":
        layer = g.meta["state"]["_modules"]["synthesis"].meta["state"]["_modules"]["L2_20_8"]
        layer.meta["state"]["in_cutoff"] = evil
    elif where == "init_kwargs":
        g.meta["state"]["_init_kwargs"]["magnitude_ema_beta"] = evil
    if where == "training_set_kwargs":
        path.write_bytes(nvidia_dumps({"G_ema": g, "training_set_kwargs": {"path": evil}}, 4))
    else:
        _snapshot(path, g)
    for read in (read_stylegan3, read_generator, magnet_lab.load_generator):
        with pytest.raises(ValueError) as err:
            read(path)
        msg = str(err.value)
        assert f"global {name}," in msg and "refused" in msg and str(path) in msg, msg
        assert "nothing in the file was executed" in msg
    assert not marker.exists() and not (tmp_path / "src_ran").exists()


def test_official_check_script_imports_no_nvidia_code_and_needs_a_checkout(tmp_path, monkeypatch):
    import importlib.util
    import sys
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "stylegan3_check.py"
    spec = importlib.util.spec_from_file_location("stylegan3_check", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert not {"training", "torch_utils", "dnnlib"} & set(sys.modules)
    monkeypatch.setattr(sys, "argv", ["stylegan3_check.py", "--official", str(tmp_path)])
    with pytest.raises(SystemExit, match="not a NVlabs/stylegan3 checkout"):
        mod.main()


def test_cli_banks_a_stylegan3_pickle_with_its_run_options_and_samples_from_the_bank(
        tmp_path, capsys):
    """``bank --psi --cutoff --transform`` on a StyleGAN3 snapshot records the run options and
    banks G under them (the log σ are those of load_generator(path, **options) on the bank's
    latents); ``sample`` reloads G from the bank alone, fingerprint checked, and by default
    leaves out the σ that z-normalisation zeroes at every latent."""
    from magnet_lab import models
    from magnet_lab.__main__ import main
    from magnet_lab.bank import VolumeBank
    from builders import stylegan3_snapshot

    path, _ = stylegan3_snapshot(tmp_path / "stylegan3-t.pkl")
    M = input_transform(translate=(0.125, -0.0625), rotate_deg=15)
    out = tmp_path / "bank"
    assert main(["bank", "--generator", str(path), "--n", "5", "--shard-size", "3",
                 "--method", "projected", "--proj-dim", "16", "--psi", "0.7", "--cutoff", "3",
                 "--transform", json.dumps(M), "--out", str(out)]) == 0
    vb = VolumeBank.load(out)
    opts = vb.meta["generator_options"]
    assert opts["psi"] == 0.7 and opts["cutoff"] == 3
    assert torch.allclose(torch.tensor(opts["transform"]), torch.tensor(M), rtol=0, atol=1e-15)
    G = magnet_lab.load_generator(path, psi=0.7, cutoff=3, transform=M)
    assert vb.meta["identity"]["generator_fingerprint"] == models.fingerprint(G)
    assert models.fingerprint(G) != models.fingerprint(magnet_lab.load_generator(path))
    ref = spectra.log_singular_values(G, vb.latents, spectra.SpectraOptions(
        "projected", proj_dim=16, seed=0), speed=spectra.SpeedOptions(progress=False))  # [5, 8]
    assert vb.rank == Z and torch.isneginf(vb.log_sv[:, -1]).all()  # J z = 0
    assert torch.allclose(vb.log_sv[:, :-1], ref[:, :-1], rtol=0, atol=1e-4)
    stem = tmp_path / "samples"
    assert main(["sample", "--bank", str(out), "--n", "4", "--out", str(stem)]) == 0
    picked = json.loads(stem.with_suffix(".indices.json").read_text())
    assert picked["top_k"] == Z - 1 and len(set(picked["indices"])) == 4
    assert picked["generator_fingerprint"] == models.fingerprint(G)
    assert stem.with_suffix(".png").stat().st_size > 0
    assert not (tmp_path / "src_ran").exists()
    capsys.readouterr()
    assert main(["bank", "--generator", str(path), "--n", "2", "--noise-mode", "const",
                 "--out", str(tmp_path / "b2")]) == 2  # StyleGAN3 has no noise inputs
    assert "unknown option(s) ['noise_mode']" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:  # argparse's usage error, before any work
        main(["bank", "--generator", str(path), "--transform", "[[1, 0], [0, 1]]"])
    assert stop.value.code == 2 and "--transform takes a 3x3 matrix" in capsys.readouterr().err
