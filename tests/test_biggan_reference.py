"""Our BigGAN-deep against the reference implementation, ``pytorch-pretrained-biggan`` 0.1.1 (MIT,
a test-only dependency; its import needs boto3, requests and tqdm). Random-weight tiny models are
built offline with ``BigGAN(BigGANConfig(...))``, run in train() mode first (power iteration for
the spectral-norm vectors), saved as the reference's converter saves a model (``torch.save`` of
the state dict as pytorch_model.bin, ``config.to_json_string()`` as config.json) and read back by
``magnet_lab.load_generator``; images must equal the reference's to float32 rounding."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import magnet_lab
from magnet_lab.models.biggan import RELEASED_CONFIGS, stats_weights
from magnet_lab.models.readers import biggan_folder

pb = pytest.importorskip(
    "pytorch_pretrained_biggan",
    reason="the reference BigGAN-deep (test-only dependency): pip install "
           "pytorch-pretrained-biggan==0.1.1 boto3")
from pytorch_pretrained_biggan.model import CONFIG_NAME, WEIGHTS_NAME  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors on a shared 2-core runner

TOL = 1e-6  # max |ours − reference| on images in [-1, 1]; measured <= 5.3e-7 (float32 rounding)
TRUNCATIONS = [0.4, 0.7, 1.0, 0.405, 0.58, 0.33]  # grid values, between them, and 0.58's quirk
CONFIGS = {  # (layers, attention_layer_position)
    "attention-mid": ([(False, 16, 16), (True, 16, 8), (True, 8, 4), (False, 4, 2),
                       (True, 2, 1)], 2),
    "attention-first": ([(True, 16, 8), (True, 8, 4), (False, 4, 2), (False, 2, 1)], 0),
    "no-attention": ([(True, 16, 8), (False, 8, 4), (True, 4, 2), (True, 2, 1)], 4),
}


def reference_model(layers, attention: int, seed: int = 0):
    """A random reference BigGAN-deep (8 channels per multiplier, z 8, 5 classes) with random
    statistics for each of the 51 truncations, random biases, a final batch-norm weight near 1
    and a non-zero attention gain, after 10 power iterations (train-mode forward passes), so
    that σ = u·(W v) is the top singular value; eval mode."""
    torch.manual_seed(seed)
    n_up = sum(up for up, _, _ in layers)
    cfg = pb.BigGANConfig(output_dim=4 * 2 ** n_up, z_dim=8, class_embed_dim=8, channel_width=8,
                          num_classes=5, layers=layers, attention_layer_position=attention,
                          eps=1e-4, n_stats=51)
    ref = pb.BigGAN(cfg)
    with torch.no_grad():
        for name, b in ref.named_buffers():
            if name.endswith("running_means"):
                b.copy_(0.3 * torch.randn_like(b))
            elif name.endswith("running_vars"):
                b.copy_(0.5 + torch.rand_like(b))
        for name, p in ref.named_parameters():
            if name.endswith("gamma"):
                p.fill_(0.7)
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
        # the final batch norm's weight and bias are created uninitialised (torch.Tensor(n))
        ref.generator.bn.weight.copy_(1 + 0.1 * torch.randn_like(ref.generator.bn.weight))
        ref.train()
        z, c = torch.randn(4, 8), torch.eye(5)[[0, 1, 2, 4]]
        for _ in range(10):
            ref(z, c, 1.0)
    return ref.eval(), cfg


def save_like_the_reference(ref, cfg, path: Path) -> Path:
    """What convert_tf_to_pytorch.py writes (the package has no save_pretrained)."""
    path.mkdir(parents=True, exist_ok=True)
    torch.save(ref.state_dict(), path / WEIGHTS_NAME)
    (path / CONFIG_NAME).write_text(cfg.to_json_string())
    return path


@pytest.mark.parametrize("name", list(CONFIGS))
def test_images_equal_the_reference_at_several_truncations(tmp_path, name):
    ref, cfg = reference_model(*CONFIGS[name])
    folder = save_like_the_reference(ref, cfg, tmp_path / name)
    G = magnet_lab.load_generator(folder)
    g = torch.Generator().manual_seed(1)
    z = 0.8 * torch.randn(6, 8, generator=g)
    c = torch.eye(5)[[0, 1, 2, 3, 4, 2]]
    images = {}
    with torch.no_grad():
        again = pb.BigGAN.from_pretrained(str(folder)).eval()  # the reference reads our folder
        for t in TRUNCATIONS:
            want, got = ref(z, c, t), G(z, c, truncation=t)
            assert got.shape == want.shape == (6, 3, cfg.output_dim, cfg.output_dim)
            assert (got - want).abs().max() <= TOL, t
            assert torch.equal(again(z, c, t), want)
            images[t] = want
    assert min(x.std() for x in images.values()) > 0.03  # not degenerate images
    assert (images[0.4] - images[1.0]).abs().max() > 1e-2  # the statistics matter
    assert (images[0.405] - images[0.4]).abs().max() > 1e-4  # between grid values too


def test_linear_rule_differs_from_the_reference_only_off_the_grid(tmp_path):
    ref, cfg = reference_model(*CONFIGS["attention-mid"])
    G = magnet_lab.load_generator(save_like_the_reference(ref, cfg, tmp_path / "m"),
                                  stats_rule="linear")
    z, c = torch.randn(2, 8, generator=torch.Generator().manual_seed(2)), torch.eye(5)[:2]
    with torch.no_grad():
        assert (G(z, c, truncation=0.7) - ref(z, c, 0.7)).abs().max() <= TOL
        assert (G(z, c, truncation=0.405) - ref(z, c, 0.405)).abs().max() > 1e-4
        # the reference at 0.58 uses the statistics stored for 0.56 (t / step lands below 29)
        assert stats_weights(0.58, 51)[0][0] == 28
        assert (G(z, c, truncation=0.56) - ref(z, c, 0.58)).abs().max() <= TOL


@pytest.mark.parametrize("name", list(RELEASED_CONFIGS))
def test_released_configs_have_the_reference_keys_and_shapes(name):
    """The converter's configs for biggan-deep-128/256/512 equal ours, and the reference model
    built from each has exactly the keys and shapes our reader expects (built on the CPU:
    ~2 s each, where the meta device's python-level normal_ takes 5-12 s here)."""
    from pytorch_pretrained_biggan import convert_tf_to_pytorch as conv

    cfg = {"biggan-deep-128": conv.BigGAN128, "biggan-deep-256": conv.BigGAN256,
           "biggan-deep-512": conv.BigGAN512}[name]
    assert json.loads(cfg.to_json_string()) == RELEASED_CONFIGS[name]
    if name == "biggan-deep-128":
        assert json.loads(pb.BigGANConfig().to_json_string()) == RELEASED_CONFIGS[name]
    ref = pb.BigGAN(cfg)
    want = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert biggan_folder.reference_shapes(RELEASED_CONFIGS[name]) == want


def test_the_reference_loads_a_mismatched_file_silently_ours_refuses(tmp_path):
    ref, cfg = reference_model(*CONFIGS["attention-first"])
    state = ref.state_dict()
    state.pop("generator.layers.1.conv_1.weight_orig")
    state["generator.layers.1.conv_1.weight"] = torch.zeros(1)  # a misnamed tensor
    folder = tmp_path / "broken"
    folder.mkdir()
    torch.save(state, folder / WEIGHTS_NAME)
    (folder / CONFIG_NAME).write_text(cfg.to_json_string())
    pb.BigGAN.from_pretrained(str(folder))  # strict=False: no error, a random weight left
    with pytest.raises(ValueError, match=r"1 missing \['generator.layers.1.conv_1.weight_orig'\]"
                                         r", 1 unexpected \['generator.layers.1.conv_1.weight'\]"):
        magnet_lab.load_generator(folder)


def test_a_fresh_reference_model_without_power_iteration_is_refused(tmp_path):
    """Random u, v: σ = u·(W v) is tiny or negative for some layers, so the reference's weights
    W/σ blow up (its activations overflow: NaN by block 3 of biggan-deep-128); our reader names
    such a layer instead."""
    torch.manual_seed(0)
    layers, attention = CONFIGS["attention-mid"]
    cfg = pb.BigGANConfig(output_dim=32, z_dim=8, class_embed_dim=8, channel_width=8,
                          num_classes=5, layers=layers, attention_layer_position=attention)
    ref = pb.BigGAN(cfg).eval()
    with torch.no_grad():
        ref.generator.bn.weight.fill_(1.0)
        ref.generator.bn.bias.zero_()
        sigmas = [float(m.weight_u @ (m.weight_orig.reshape(len(m.weight_u), -1) @ m.weight_v))
                  for m in ref.modules() if hasattr(m, "weight_u")]
    assert min(sigmas) <= 0
    folder = save_like_the_reference(ref, cfg, tmp_path / "fresh")
    with pytest.raises(ValueError, match="spectral-norm estimate .* is not positive"):
        magnet_lab.load_generator(folder)
