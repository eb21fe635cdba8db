#!/usr/bin/env bash
# Set up magnet_lab's environment from environment.yml, which installs the project with its
# extras (`-e .[faces,notebooks,browser,dev]`); the dependencies are declared in pyproject.toml.
#  - with conda: create/update the `magnet_lab` conda env from the file;
#  - without conda: make .venv and pip-install exactly the file's `pip:` list.
# Then register the Jupyter kernel "magnet_lab" and, where apt is available and they are
# missing, install Debian's Fashion-MNIST and chromium (for the browser test). Idempotent: a
# second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STAMP=.venv/.magnet_lab-setup

if command -v conda >/dev/null 2>&1 && [ "${MAGNET_LAB_NO_CONDA:-0}" != 1 ]; then
  if conda env list | grep -q '^magnet_lab '; then
    conda env update -n magnet_lab -f environment.yml --prune
  else
    conda env create -f environment.yml
  fi
  PY=$(conda run -n magnet_lab python -c 'import sys; print(sys.executable)')
else
  PYTHON=${PYTHON:-python3}
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  PY=$ROOT/.venv/bin/python
  if [ ! -f "$STAMP" ] || [ environment.yml -nt "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ]; then
    "$PY" -m pip install -q --upgrade pip
    # The pip list is read from environment.yml itself; pip resolves the dependencies that
    # pyproject.toml declares for the project and its extras.
    "$PY" scripts/env_requirements.py environment.yml > .venv/requirements-from-environment.txt
    "$PY" -m pip install -r .venv/requirements-from-environment.txt
    touch "$STAMP"
  fi
fi

"$PY" -m ipykernel install --user --name magnet_lab --display-name "Python (magnet_lab)" >/dev/null

if [ ! -e /usr/share/datasets/fashion-mnist ] && [ -z "${MAGNET_LAB_FMNIST_DIR:-}" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
      || echo "setup: could not install Debian's dataset-fashion-mnist; see docs/results.md" >&2
  else
    echo "setup: Fashion-MNIST not found; see docs/results.md to install it" >&2
  fi
fi
# The browser test drives Debian's chromium through Playwright; without it the test skips.
if ! command -v chromium >/dev/null 2>&1 && [ -z "${MAGNET_LAB_CHROMIUM:-}" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
      || echo "setup: could not install Debian's chromium; tests/test_browser.py will skip" >&2
  else
    echo "setup: no chromium (apt-get install chromium as root); tests/test_browser.py will skip" >&2
  fi
fi
# Make and the README commands run whichever interpreter this setup chose.
echo "$PY" > .magnet_lab-python
echo "setup: ok ($PY)"
