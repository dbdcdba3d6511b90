#!/usr/bin/env bash
# Install dragwidget and its dependencies into the current Python.
# usage: bash scripts/install.sh [EXTRA]   (EXTRA: test, notebook or docs)
# A torch that is already installed (CUDA, Colab, MPS builds) is kept; only when there is none
# is torch 2.13.0 installed (PyPI's default build for the platform, or a local wheel if pip has one).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip --version >/dev/null
if ! python3 -c "import torch" 2>/dev/null; then
    python3 -m pip install --quiet "torch==2.13.0"
fi
extra=${1:+"[$1]"}
python3 -m pip install --quiet -e ".${extra}"
if [ "${1:-}" = "test" ]; then
    # The DragBench tests run the lpips package on an AlexNet-shaped backbone they build themselves.
    # --no-deps: lpips requires torchvision, and PyPI's torchvision does not import beside every
    # torch build (the local CPU wheel here, for one), and one that fails to import breaks
    # diffusers too (measured: loading the toy model then fails in transformers' imports).
    python3 -m pip install --quiet --no-deps "lpips==0.1.4"
fi
