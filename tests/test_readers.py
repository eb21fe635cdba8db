"""Checkpoint readers: format chosen by content, configuration bound to the weights, and malicious
files refused through every library door without running them."""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from magnet_lab import features, paths
from magnet_lab.models.fmnist import FmnistDCGAN
from magnet_lab.models.readers import (identify, load_checkpoint, nvidia_pickle, pickle_file,
                                       read_state_dict, safetensors_file, save_checkpoint,
                                       sidecar_path, torch_file)
from magnet_lab.registry import load_classifier, load_generator
from payloads import Reduce, payload


def _tiny(tmp_path: Path) -> tuple[Path, FmnistDCGAN]:
    torch.manual_seed(0)
    model = FmnistDCGAN(z_dim=4, channels=8).eval()
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(model, path, {"architecture": "FmnistDCGAN", "kwargs": model.config()})
    return path, model


def _with_sidecar(path: Path, like: Path) -> Path:
    """Give ``path`` the sidecar of ``like`` without its weights digest (it describes another file)."""
    import json

    side = json.loads(sidecar_path(like).read_text())
    side.pop("weights_sha256", None)
    sidecar_path(path).write_text(json.dumps(side))
    return path


# --------------------------------------------------------------------------- dispatch by content

def test_each_container_is_identified_by_its_first_bytes(tmp_path):
    path, model = _tiny(tmp_path)
    state = model.state_dict()
    torch.save(state, tmp_path / "zip.bin")
    torch.save(state, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    (tmp_path / "raw.bin").write_bytes(pickle.dumps({"a": 1}, protocol=4))
    assert identify(path) is safetensors_file
    assert identify(tmp_path / "zip.bin") is torch_file
    assert identify(tmp_path / "legacy.bin") is torch_file
    assert identify(tmp_path / "raw.bin") is pickle_file


def test_file_named_against_its_content_is_read_by_content(tmp_path):
    path, model = _tiny(tmp_path)
    zip_named_st = _with_sidecar(tmp_path / "zip.safetensors", path)
    torch.save(model.state_dict(), tmp_path / "zip.pt")
    shutil.move(tmp_path / "zip.pt", zip_named_st)
    st_named_pt = _with_sidecar(tmp_path / "st.pt", path)
    shutil.copy(path, st_named_pt)
    z = torch.randn(3, 4)
    for p in (zip_named_st, st_named_pt):
        assert torch.equal(load_generator(p)(z), model(z)), p


def test_legacy_torch_save_format_loads_weights_only(tmp_path):
    path, model = _tiny(tmp_path)
    legacy = _with_sidecar(tmp_path / "legacy.pth", path)
    torch.save({"state_dict": model.state_dict()}, legacy, _use_new_zipfile_serialization=False)
    z = torch.randn(2, 4)
    assert torch.equal(load_generator(legacy)(z), model(z))


def test_nvidia_style_pickle_goes_to_the_restricted_nvidia_reader(tmp_path):
    pkl = tmp_path / "stylegan2-ffhq-config-f.pkl"
    # what the start of NVIDIA's pickles looks like: a global from their dnnlib package (here a
    # TF network with no state; tests/test_nvidia_readers.py reads complete ones)
    pkl.write_bytes(b"\x80\x03cdnnlib.tflib.network\nNetwork\nq\x00)\x81q\x01.")
    assert identify(pkl) is nvidia_pickle
    with pytest.raises(ValueError, match="TensorFlow network pickle version None < 4") as err:
        load_generator(pkl)
    assert str(pkl) in str(err.value) and "\n" not in str(err.value)
    assert "suggesting" not in str(err.value)  # .pkl is the NVIDIA reader's own suffix


# --------------------------------------------------------------------------- configuration binding

def test_saved_checkpoints_carry_architecture_and_kwargs_in_metadata(tmp_path):
    path, model = _tiny(tmp_path)
    shipped = [paths.data_dir() / f"{n}.safetensors" for n in ("fmnist-dcgan", "fmnist-classifier")]
    for p in [path, *shipped]:
        _, metadata = safetensors_file.read(p)
        side = json.loads(sidecar_path(p).read_text())
        assert metadata["architecture"] == side["architecture"], p
        assert json.loads(metadata["kwargs"]) == side["kwargs"], p


@pytest.mark.parametrize("field, edit, words", [
    ("kwargs", {"negative_slope": 0.5}, ["kwargs.negative_slope", "0.5", "0.0"]),
    ("kwargs", {"extra": 1}, ["kwargs.extra", "1", "<absent>"]),
    ("architecture", "FmnistClassifier", ["architecture", "'FmnistClassifier'", "'FmnistDCGAN'"]),
])
def test_sidecar_edited_against_the_saved_configuration_is_refused(tmp_path, field, edit, words):
    for suffix in (".safetensors", ".json"):
        shutil.copy(paths.data_dir() / f"fmnist-dcgan{suffix}", tmp_path / f"g{suffix}")
    path = tmp_path / "g.safetensors"
    assert load_generator(path).z_dim == 32  # the unedited copy loads
    side = json.loads(sidecar_path(path).read_text())
    side[field] = {**side[field], **edit} if isinstance(edit, dict) else edit
    sidecar_path(path).write_text(json.dumps(side))
    with pytest.raises(ValueError, match="disagrees with the configuration") as err:
        load_generator(path)
    assert all(w in str(err.value) for w in words), str(err.value)


def test_safetensors_without_metadata_is_described_by_its_sidecar_alone(tmp_path):
    path, model = _tiny(tmp_path)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    side = json.loads(sidecar_path(path).read_text())
    side["kwargs"]["negative_slope"] = 0.2  # nothing to check it against: the sidecar is trusted
    del side["weights_sha256"]  # a user's own sidecar records no digest
    sidecar_path(path).write_text(json.dumps(side))
    assert load_generator(path).negative_slope == 0.2


def test_save_checkpoint_refuses_kwargs_that_are_not_json(tmp_path):
    model = FmnistDCGAN(z_dim=4, channels=8)
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(model, tmp_path / "g.safetensors",
                        {"architecture": "FmnistDCGAN", "kwargs": {"z_dim": object()}})
    assert not (tmp_path / "g.safetensors").exists()


# --------------------------------------------------------------------------- damaged files

def _truncated_safetensors(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _truncated_zip(path: Path) -> None:
    torch.save(FmnistDCGAN(z_dim=4, channels=8).state_dict(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _junk(path: Path) -> None:
    path.write_bytes(bytes(range(7, 200)))


def _json_text(path: Path) -> None:
    path.write_text('{"not": "weights"}')


@pytest.mark.parametrize("damage, message", [
    (_truncated_safetensors, "not a valid safetensors file, corrupt or truncated"),
    (_truncated_zip, "corrupt or truncated torch file"),
    (_empty, "checkpoint file is empty"),
    (_junk, "unrecognised checkpoint content.*refused"),
    (_json_text, "unrecognised checkpoint content.*refused"),
])
def test_damaged_files_give_one_line_errors_naming_the_path(tmp_path, damage, message):
    path, _ = _tiny(tmp_path)
    damage(path)
    with pytest.raises(ValueError, match=message) as err:
        load_generator(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------- malicious files

def _payload(kind: str, marker: Path) -> Reduce:
    """An object whose unpickling writes ``marker`` through ``kind``'s dangerous global."""
    return payload(kind, marker)[0]


def _torch_zip(path: Path, payload: Reduce) -> None:
    torch.save({"net.0.weight": torch.zeros(1), "x": payload}, path)


def _torch_legacy(path: Path, payload: Reduce) -> None:
    torch.save({"net.0.weight": torch.zeros(1), "x": payload}, path,
               _use_new_zipfile_serialization=False)


def _raw_pickle(path: Path, payload: Reduce) -> None:
    path.write_bytes(pickle.dumps(payload, protocol=2))


def _raw_pickle_v4(path: Path, payload: Reduce) -> None:
    path.write_bytes(pickle.dumps({"net.0.weight": torch.zeros(1), "x": payload}, protocol=4))


def _raw_pickle_v0(path: Path, payload: Reduce) -> None:  # text protocol: no \x80 header at all
    path.write_bytes(pickle.dumps(payload, protocol=0))


PAYLOADS = ["os.system", "builtins.eval", "builtins.exec", "builtins.getattr"]
CONTAINERS = [("evil.pt", _torch_zip), ("evil.pth", _torch_legacy), ("evil.pth", _raw_pickle),
              ("evil.pkl", _raw_pickle_v4), ("evil.pkl", _raw_pickle_v0),
              ("evil.safetensors", _raw_pickle), ("evil.safetensors", _torch_zip)]


@pytest.mark.parametrize("kind", PAYLOADS)
def test_payloads_are_live_under_a_plain_unpickler(tmp_path, kind):
    """The control: the same objects *do* write their marker when unpickled naively, so the
    refusals below are what keeps the marker away."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(_payload(kind, marker), protocol=2))
    assert marker.exists()


@pytest.mark.parametrize("kind", PAYLOADS)
@pytest.mark.parametrize("name, write", CONTAINERS, ids=[f"{n}-{w.__name__[1:]}" for n, w in CONTAINERS])
def test_malicious_file_is_refused_by_every_door_without_running(tmp_path, no_network, output_dirs,
                                                                 kind, name, write):
    marker = tmp_path / "pwned"
    path = tmp_path / name
    write(path, _payload(kind, marker))
    sidecar_path(path).write_text(json.dumps({"architecture": "FmnistDCGAN",
                                              "kwargs": {"z_dim": 4, "channels": 8}}))
    doors = {"load_generator": lambda: load_generator(path),
             "load_classifier": lambda: load_classifier(path),
             "load_checkpoint": lambda: load_checkpoint(path),
             "read_state_dict": lambda: read_state_dict(path),
             "standard_extractor": lambda: features.standard_extractor("vgg16", weights_path=path)}
    for door, call in doors.items():
        with pytest.raises(ValueError) as err:
            call()
        msg = str(err.value)
        assert str(path) in msg and "\n" not in msg, (door, msg)
        assert "refused" in msg, (door, msg)
        assert "weights_only=False" not in msg and "weights_only` set to `False" not in msg, (door, msg)
        assert not marker.exists(), door


def test_refusal_names_the_disallowed_global_and_the_suffix_mismatch(tmp_path):
    path = tmp_path / "evil.safetensors"
    _torch_zip(path, _payload("os.system", tmp_path / "pwned"))
    with pytest.raises(ValueError) as err:
        read_state_dict(path)
    msg = str(err.value)
    assert f"the disallowed global {os.system.__module__}.system" in msg  # posix.system on Linux
    assert "named .safetensors" in msg and "content is a torch.save file" in msg
    pkl_named_st = tmp_path / "evil2.safetensors"
    _raw_pickle(pkl_named_st, _payload("builtins.eval", tmp_path / "pwned"))
    with pytest.raises(ValueError, match="raw Python pickle.*named .safetensors.*content is a raw "
                                         "Python pickle"):
        read_state_dict(pkl_named_st)
    assert not (tmp_path / "pwned").exists()


# --------------------------------------------------------------------------- integrity at load

def test_saved_sidecar_records_the_weights_sha256_and_a_changed_file_is_refused(tmp_path):
    """save_checkpoint records the SHA-256 of the bytes it wrote; one flipped bit in the weights
    (which safetensors itself cannot notice) is refused naming both digests; a sidecar without
    the field still loads."""
    import json

    from magnet_lab.models.readers import SHA_FIELD, file_sha256, load_checkpoint

    path, model = _tiny(tmp_path)
    side = json.loads(sidecar_path(path).read_text())
    assert side[SHA_FIELD] == file_sha256(path)
    load_checkpoint(path)
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0x04  # a bit of the last weight
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="SHA-256 .* differs from the .* recorded in tiny.json"):
        load_generator(path)
    del side[SHA_FIELD]
    sidecar_path(path).write_text(json.dumps(side))
    state, _ = load_checkpoint(path)  # without the digest the changed file loads as it is
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, state[k])]
    assert len(changed) == 1


def test_shipped_sidecars_record_the_digest_of_their_weights():
    from magnet_lab import paths
    from magnet_lab.models.readers import SHA_FIELD, file_sha256
    import json

    for name in ("fmnist-classifier", "fmnist-dcgan", "fmnist-stylegan2"):
        side = json.loads((paths.data_dir() / f"{name}.json").read_text())
        assert side[SHA_FIELD] == file_sha256(paths.data_dir() / f"{name}.safetensors"), name


def test_non_finite_weights_are_refused_naming_the_tensor(tmp_path):
    from magnet_lab.models.readers import check_finite_state

    state = {"a.weight": torch.ones(3), "b.bias": torch.tensor([0.0, float("nan"), float("inf")]),
             "steps": torch.tensor([1])}
    with pytest.raises(ValueError, match=r"x.pt: non-finite \(NaN/inf\) weights in b.bias \(2 of 3\)"):
        check_finite_state(state, tmp_path / "x.pt")
    check_finite_state({"a.weight": torch.ones(3)}, tmp_path / "x.pt")


# --------------------------------------------------------------------------- no weights_only advice

ADVICE = re.compile(r"weights_only`? *(set to|=) *`?False|Re-running `torch.load`|will likely succeed")


def _chain(err: BaseException) -> list[BaseException]:
    """err and every exception reachable through __cause__ / __context__."""
    seen: list[BaseException] = []
    todo = [err]
    while todo:
        e = todo.pop()
        if e is not None and all(e is not s for s in seen):
            seen.append(e)
            todo += [e.__cause__, e.__context__]
    return seen


@pytest.mark.parametrize("kind", ["os.system", "builtins.eval", "builtins.getattr"])
@pytest.mark.parametrize("wrap", ["bare", "g_ema", "state_dict"])
def test_refusal_chains_no_advice_to_set_weights_only_false(tmp_path, kind, wrap):
    """A torch.save'd object referencing a dangerous global is refused by load_generator and
    read_state_dict with an error whose text, __cause__/__context__ chain and formatted
    traceback never repeat torch's advice to re-run with weights_only=False."""
    import traceback

    marker = tmp_path / "ran"
    obj, name = payload(kind, marker)
    path = tmp_path / "evil.pt"
    torch.save({"bare": obj, "g_ema": {"g_ema": obj}, "state_dict": {"w": obj}}[wrap], path)
    for door in (load_generator, read_state_dict):
        with pytest.raises(ValueError, match=f"refused to load.*{name.split('.')[-1]}") as info:
            door(path)
        assert not any("weights_only" in str(e) for e in _chain(info.value))
        assert len(_chain(info.value)) == 1  # torch's UnpicklingError is not kept as a cause
        assert not ADVICE.search("".join(traceback.format_exception(info.value)))
    assert not marker.exists()


def test_refusal_from_the_command_line_carries_no_weights_only_advice(tmp_path):
    """The CLI's one-line error and its --debug traceback of the same refusal are both clean."""
    import subprocess
    import sys

    marker = tmp_path / "ran"
    obj, _ = payload("os.system", marker)
    torch.save(obj, tmp_path / "evil.pt")
    env = {**os.environ, "MAGNET_LAB_PROGRESS": "0", "PYTHONPATH": str(paths.root())}
    for debug in ([], ["--debug"]):
        run = subprocess.run([sys.executable, "-m", "magnet_lab", *debug, "bank", "--generator",
                              str(tmp_path / "evil.pt"), "--n", "2", "--out",
                              str(tmp_path / "bank")], capture_output=True, text=True, env=env,
                             timeout=300)
        assert run.returncode != 0 and "refused to load" in run.stderr
        assert not ADVICE.search(run.stderr + run.stdout)
        assert debug or "weights_only" not in run.stderr
    assert not marker.exists()
