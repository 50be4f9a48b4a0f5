"""Policy backends behind one protocol (:class:`recgym.agents.types.Policy`).

``make_policy("hf" | "vllm" | "openai", model, **kwargs)`` builds one by name, as configs and
``--policy`` on the command line do. Backends import their heavy dependencies lazily.
"""

from __future__ import annotations

from typing import Any

from recgym.agents.policies.base import BasePolicy, PromptEncoder, PromptTooLongError

POLICIES = ("hf", "vllm", "openai")


def make_policy(name: str, model: Any, **kwargs: Any) -> BasePolicy:
    """``hf``: :class:`HFPolicy`; ``vllm``: :class:`VLLMPolicy`; ``openai``: :class:`OpenAIPolicy`.

    ``model`` is a model name/path (or, for ``hf``, a loaded model); ``kwargs`` go to the class.
    """
    if name == "hf":
        from recgym.agents.policies.hf import HFPolicy

        return HFPolicy(model, **kwargs)
    if name == "vllm":
        from recgym.agents.policies.vllm import VLLMPolicy

        return VLLMPolicy(model, **kwargs)
    if name == "openai":
        from recgym.agents.policies.openai import OpenAIPolicy

        return OpenAIPolicy(model, **kwargs)
    raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}")


def __getattr__(name: str) -> Any:
    modules = {"HFPolicy": "hf", "VLLMPolicy": "vllm", "OpenAIPolicy": "openai", "EndpointError": "openai"}
    if name in modules:
        import importlib

        return getattr(importlib.import_module(f"recgym.agents.policies.{modules[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "POLICIES",
    "BasePolicy",
    "EndpointError",
    "HFPolicy",
    "OpenAIPolicy",
    "PromptEncoder",
    "PromptTooLongError",
    "VLLMPolicy",
    "make_policy",
]
