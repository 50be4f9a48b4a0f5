"""``OpenAIPolicy``: any OpenAI-compatible chat endpoint (``vllm serve``, hosted APIs).

Meant for evaluation and for teachers (e.g. generating SFT data). The API key comes from an
environment variable; requests run with a concurrency limit, a timeout and retries with
exponential backoff; every error names the endpoint and the HTTP status.

Such servers return text and logprobs but, in general, no token ids: ``completion_token_ids``
and ``prompt_token_ids`` are empty and ``Completion.tokens`` holds the sampled tokens' text.
A vLLM server asked with ``return_token_ids=True`` returns the ids too.

A response of fewer than ``n`` choices (a server that ignores ``n``) is topped up with requests for
the missing samples (a seeded request's seed moved on by the samples held, so that they differ),
counted in ``stats["extra_requests"]``. A 200 whose body is no chat completion (not JSON, HTML, no
choices) is retried like a 5xx; a request whose own body cannot be encoded as JSON (a NaN or infinite
number in it) is a ValueError before anything is sent. The first prompt that fails for good ends ``generate``: requests
not yet sent are cancelled, and the answers of those in flight are discarded.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from recgym.agents.policies.base import BasePolicy
from recgym.agents.types import Completion, Prompt, SamplingParams

DEFAULT_BASE_URL = "https://api.openai.com/v1"
_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class EndpointError(RuntimeError):
    """A request to an OpenAI-compatible endpoint failed for good."""

    def __init__(self, endpoint: str, status: int | None, message: str) -> None:
        self.endpoint, self.status = endpoint, status
        super().__init__(f"{endpoint}: {'HTTP ' + str(status) if status else 'no response'}: {message}")


class OpenAIPolicy(BasePolicy):
    """Sample from an OpenAI-compatible ``/chat/completions`` endpoint.

    Args:
        model: the served model's name.
        base_url: the endpoint (default ``$OPENAI_BASE_URL``, else OpenAI's).
        api_key_env: the environment variable holding the key (a missing key is sent as "EMPTY",
            which local servers accept).
        max_concurrency: requests in flight at once.
        timeout: seconds per request.
        max_retries: retries of a request that timed out, could not connect, got 408/409/429/5xx, or
            got a 200 whose body is no chat completion.
        backoff: first retry delay in seconds, doubled each retry (with jitter).
        return_token_ids: ask a vLLM server for token ids (``extra_body``; other servers may reject it).
        tools: OpenAI function-calling schemas sent with every request (for the tool environments:
            ``recgym.envs.tools.openai_tools()``); a tool call the model makes comes back as the
            environment's tagged call text, ``<call>name(arg=value)</call>``; several calls in one
            answer come back as several tagged calls, which the environment refuses as an invalid
            turn ("one tool call per turn").
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        max_concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 3,
        backoff: float = 1.0,
        return_token_ids: bool = False,
        tools: list[dict[str, Any]] | None = None,
    ) -> None:
        try:
            import openai
        except ImportError:
            raise ImportError("OpenAIPolicy needs the openai client: pip install openai") from None
        self.model_name = str(model)
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.max_concurrency = max(1, int(max_concurrency))
        self.max_retries = max(0, int(max_retries))
        self.backoff = float(backoff)
        self.return_token_ids = return_token_ids
        self.tools = list(tools) if tools else None
        self._openai = openai
        self.client = openai.OpenAI(
            base_url=self.base_url,
            api_key=os.environ.get(api_key_env) or "EMPTY",
            timeout=timeout,
            max_retries=0,  # retries are ours, so that the final error names endpoint and status
        )
        self._stats = {"requests": 0, "retries": 0, "extra_requests": 0}

    @property
    def stats(self) -> dict[str, int]:
        return dict(self._stats)

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/chat/completions"

    def _request(self, prompt: Prompt, n: int, sampling: SamplingParams,
                 cancelled: threading.Event) -> list[Completion]:
        """Up to ``n`` parsed completions of one request, with retries (none once ``cancelled``)."""
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        kwargs: dict[str, Any] = {
            "model": self.model_name,
            "messages": messages,
            "n": n,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_new_tokens,
            "logprobs": True,
        }
        if sampling.logprobs > 0:
            kwargs["top_logprobs"] = min(20, sampling.logprobs)
        if sampling.seed is not None:
            kwargs["seed"] = sampling.seed
        if sampling.stop:
            kwargs["stop"] = list(sampling.stop)
        if self.return_token_ids:
            kwargs["extra_body"] = {"return_token_ids": True}
        if self.tools:
            kwargs["tools"] = self.tools
        try:  # the client's own encoding error would otherwise read as a server's bad answer below
            json.dumps(kwargs, allow_nan=False)
        except (TypeError, ValueError) as exc:
            cancelled.set()
            raise ValueError(f"cannot send a request to {self.endpoint}: its body is not JSON ({exc})") from None
        errors = self._openai
        for attempt in range(self.max_retries + 1):
            if cancelled.is_set():  # another prompt failed for good: generate has raised
                return []
            self._stats["requests"] += 1
            try:
                return self._parse(self.client.chat.completions.create(**kwargs), sampling)
            except (errors.APITimeoutError, errors.APIConnectionError) as exc:
                status, message, retry = None, f"{type(exc).__name__}: {exc}", True
            except errors.APIStatusError as exc:
                status, message = exc.status_code, str(exc.message or exc)
                retry = status in _RETRY_STATUS
            except (ValueError, TypeError, AttributeError) as exc:  # a 200 whose body is no chat completion
                status, message, retry = 200, f"not a chat completion ({type(exc).__name__}: {exc})", True
            if not retry or attempt == self.max_retries:
                cancelled.set()  # before this worker takes up another prompt
                raise EndpointError(self.endpoint, status, f"{message} (after {attempt + 1} attempt(s))")
            self._stats["retries"] += 1
            time.sleep(self.backoff * 2**attempt * (1 + 0.1 * random.random()))
        raise AssertionError("unreachable")

    def _parse(self, response: Any, sampling: SamplingParams) -> list[Completion]:
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"no choices in {str(response)[:120]!r}")
        prompt_ids = list(getattr(response, "prompt_token_ids", None) or [])
        completions = []
        for choice in sorted(choices, key=lambda c: c.index):
            content = (choice.logprobs.content if choice.logprobs is not None else None) or []
            top = None
            if sampling.logprobs > 0:
                top = [{t.token: float(t.logprob) for t in (step.top_logprobs or [])} for step in content]
            ids = list(getattr(choice, "token_ids", None) or [])
            text = choice.message.content or ""
            calls = getattr(choice.message, "tool_calls", None) or []
            if calls:  # native function calls: the tagged calls the tool environments read
                from recgym.envs.tools import call_text

                tagged = " ".join(call_text(call.function.name, call.function.arguments) for call in calls)
                text = (text + " " if text else "") + tagged
            completions.append(
                Completion(
                    text=text,
                    prompt_token_ids=prompt_ids,
                    completion_token_ids=ids,
                    logprobs=[float(step.logprob) for step in content],
                    finish_reason="length" if choice.finish_reason == "length" else "stop",
                    top_logprobs=top,
                    tokens=None if ids else [step.token for step in content],
                )
            )
        return completions

    def _sample(self, prompt: Prompt, n: int, sampling: SamplingParams,
                cancelled: threading.Event) -> list[Completion]:
        """``n`` completions of ``prompt``, asking again for the samples a response lacked."""
        completions = self._request(prompt, n, sampling, cancelled)
        while len(completions) < n and not cancelled.is_set():
            self._stats["extra_requests"] += 1
            seed = None if sampling.seed is None else sampling.seed + len(completions)
            completions += self._request(prompt, n - len(completions), dataclasses.replace(sampling, seed=seed),
                                         cancelled)
        return completions[:n]

    def _generate(self, prompts: list[Prompt], n: int, sampling: SamplingParams) -> list[list[Completion]]:
        cancelled = threading.Event()
        pool = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(prompts)))
        try:
            futures = [pool.submit(self._sample, p, n, sampling, cancelled) for p in prompts]
            for future in as_completed(futures):
                future.result()  # the first permanent error raises now, not after every other request
            return [future.result() for future in futures]
        finally:
            cancelled.set()
            pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self.client.close()
