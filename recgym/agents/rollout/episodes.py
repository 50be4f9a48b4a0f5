"""Multi-turn episode collection: every live episode of a batch advances one turn per policy call.

An episode of a tool-using environment (``RecRatingTools-*``) is the prompt, then the model's
turns interleaved with the environment's tool results. :func:`run_episodes` plays a batch of them:
the first turn asks the policy for ``group_size`` samples of each distinct prompt in one call, and
every later turn asks for one continuation of each episode still running, all in one call, until
every episode has ended.

Policies that continue raw token ids (HF, vLLM: ``policy.supports_token_ids``) play at the token
level: each episode's tokens are exactly what the model saw and sampled, never re-tokenized; a tool
result enters as the chat template's tokens for it (``PromptEncoder.continuation``), and only the
model's own tokens carry logprobs and the loss mask. Other policies (scripted, OpenAI-compatible
servers) play on chat messages, which is enough for evaluation.

:func:`collect_episodes` is :func:`recgym.agents.rollout.single_turn.collect` for multi-turn environments: it
packs the episodes into a :class:`~recgym.agents.types.RolloutBatch` whose ``completion_mask``
covers the model's tokens and ``observation_mask`` the tool results, with the same metrics keys
plus ``turns_mean``, ``tool_calls_mean``, ``invalid_turns_mean`` and ``observation_tokens_mean``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recgym.agents.rollout.batch import (
    collection_metrics,
    pad,
    policy_pad_id,
    policy_stats,
    reward_components,
)
from recgym.agents.types import Completion, Policy, RolloutBatch, SamplingParams

#: ``step(actions) -> [(obs, reward, terminated, truncated, info)]``; None: no action (episode over).
Stepper = Callable[[list[str | None]], list[tuple[Any, float, bool, bool, dict[str, Any]]]]


@dataclass
class Episode:
    """One multi-turn episode as it was played."""

    reset_info: dict[str, Any]
    messages: list[dict[str, str]]
    """The conversation: the prompt, then the model's turns and the tool results."""
    prompt_ids: list[int] = field(default_factory=list)
    """The prompt's token ids (token-level play only)."""
    token_ids: list[int] = field(default_factory=list)
    """Everything after the prompt: the model's turns and the tool results, as the model saw them."""
    own: list[bool] = field(default_factory=list)
    """Per ``token_ids``: True where the model sampled the token (the loss mask)."""
    logprobs: list[float] = field(default_factory=list)
    """Per ``token_ids``: the policy's logprob of its own tokens, 0 at tool-result tokens."""
    turns: list[Completion] = field(default_factory=list)
    reward: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    """The last step's info (reward breakdown, calls, tokens read, ...)."""
    done: bool = False
    truncated: bool = False
    """Ended by truncation (max_turns, a full context) rather than an answer."""

    @property
    def cut_short(self) -> bool:
        """Truncated, or any of its turns hit ``max_new_tokens`` (not only the last)."""
        return self.truncated or any(turn.truncated for turn in self.turns)

    @property
    def context(self) -> list[int]:
        return self.prompt_ids + self.token_ids

    @property
    def transcript(self) -> str:
        """What followed the prompt, as text: the model's turns and the tool results."""
        return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in self.messages[len(self.reset_info["messages"]) :])


def vector_stepper(env: Any) -> Stepper:
    """Steps a GroupedRatingVecEnv (sub-envs whose episode is over get None)."""

    def step(actions: list[str | None]):
        observations, rewards, terminated, truncated, infos = env.step(actions)
        return list(zip(observations, rewards.tolist(), terminated.tolist(), truncated.tolist(), infos))

    return step


def list_stepper(envs: Sequence[Any]) -> Stepper:
    """Steps a list of environments (evaluation), skipping those given None."""

    def step(actions: list[str | None]):
        return [env.step(a) if a is not None else ("", 0.0, False, False, {}) for env, a in zip(envs, actions)]

    return step


def _context_limit(policy: Any) -> int | None:
    return getattr(policy, "max_context", None)


def run_episodes(
    step: Stepper,
    reset_infos: Sequence[dict[str, Any]],
    policy: Policy,
    sampling: SamplingParams,
    group_size: int = 1,
    end_episode: Callable[[int, str], tuple[Any, float, bool, bool, dict[str, Any]]] | None = None,
    token_level: bool | None = None,
) -> list[Episode]:
    """Play one episode per entry of ``reset_infos`` (``group_size`` consecutive ones share a
    prompt) to its end, one batched policy call per turn.

    ``end_episode(k, reason)`` truncates episode ``k`` whose context has no room for another turn
    (token-level play with a policy that states ``max_context``). ``token_level`` defaults to
    ``policy.supports_token_ids``.
    """
    if len(reset_infos) % group_size:
        raise ValueError(f"{len(reset_infos)} episodes do not split into groups of {group_size}")
    if token_level is None:
        token_level = bool(getattr(policy, "supports_token_ids", False))
    episodes = [Episode(dict(info), list(info["messages"])) for info in reset_infos]
    heads = episodes[::group_size]
    if token_level:
        encoder = policy.encoder  # type: ignore[attr-defined]
        limit = _context_limit(policy)
        if limit is not None:
            encoder.max_prompt_tokens = max(1, limit - sampling.max_new_tokens)
        firsts = policy.generate_from_ids([encoder.encode(e.messages) for e in heads], n=group_size,  # type: ignore[attr-defined]
                                          sampling=sampling)
    else:
        firsts = policy.generate([e.messages for e in heads], n=group_size, sampling=sampling)
    if len(firsts) != len(heads) or any(len(g) != group_size for g in firsts):
        raise RuntimeError(f"policy returned {[len(g) for g in firsts]} completions per prompt; "
                           f"expected {len(heads)} x {group_size}")
    turns: dict[int, Completion] = {}
    turn = 0
    for g, group in enumerate(firsts):
        for j, completion in enumerate(group):
            k = g * group_size + j
            turns[k] = completion
            if token_level:
                episodes[k].prompt_ids = list(completion.prompt_token_ids)
    while turns:
        results = step([turns[k].text if k in turns else None for k in range(len(episodes))])
        for k, completion in turns.items():
            episode = episodes[k]
            _, reward, terminated, truncated, info = results[k]
            episode.turns.append(completion)
            episode.messages.append({"role": "assistant", "content": completion.text})
            episode.token_ids += completion.completion_token_ids
            episode.own += [True] * len(completion.completion_token_ids)
            episode.logprobs += [float(x) for x in completion.logprobs]
            episode.reward, episode.info = float(reward), info
            episode.done, episode.truncated = bool(terminated or truncated), bool(truncated)
            if episode.done:
                continue
            new = list(info.get("messages", []))
            episode.messages += new
            if token_level:
                eos = getattr(policy.tokenizer, "eos_token_id", None)  # type: ignore[attr-defined]
                after_eos = bool(completion.completion_token_ids) and completion.completion_token_ids[-1] == eos
                ids = encoder.continuation(new, after_eos)
                episode.token_ids += ids
                episode.own += [False] * len(ids)
                episode.logprobs += [0.0] * len(ids)
        live = [k for k, e in enumerate(episodes) if not e.done]
        if token_level and limit is not None:
            for k in [k for k in live if len(episodes[k].context) + sampling.max_new_tokens > limit]:
                if end_episode is None:
                    raise RuntimeError(f"episode {k} outgrew the policy's context of {limit} tokens")
                _, reward, _, _, info = end_episode(k, f"the context of {limit} tokens is full")
                episode = episodes[k]
                episode.reward, episode.info, episode.done, episode.truncated = float(reward), info, True, True
                # the tool result that did not fit is not part of the episode
                while episode.own and not episode.own[-1]:
                    episode.token_ids.pop(), episode.own.pop(), episode.logprobs.pop()
                live.remove(k)
        if not live:
            break
        turn += 1
        if sampling.seed is not None:  # a fresh seed per turn: a reseeded turn would repeat the first's noise
            sampling = dataclasses.replace(sampling, seed=sampling.seed + 7_919 * turn)
        if token_level:
            outs = policy.generate_from_ids([episodes[k].context for k in live], n=1, sampling=sampling)  # type: ignore[attr-defined]
        else:
            outs = policy.generate([episodes[k].messages for k in live], n=1, sampling=sampling)
        turns = {k: out[0] for k, out in zip(live, outs)}
    return episodes


def pack_episodes(episodes: Sequence[Episode], group_size: int, pad_token_id: int = 0) -> RolloutBatch:
    """A RolloutBatch of token-level episodes: the prompt, then the turns and results as the
    completion, ``completion_mask`` on the model's tokens and ``observation_mask`` on the results."""
    if len(episodes) % group_size:
        raise ValueError(f"{len(episodes)} episodes do not split into groups of {group_size}")
    if any(not e.prompt_ids for e in episodes):
        raise ValueError("pack_episodes needs token-level episodes (a policy with supports_token_ids)")
    prompt_ids, prompt_mask = pad([e.prompt_ids for e in episodes], pad_token_id, np.int64, left=True)
    completion_ids, attention = pad([e.token_ids for e in episodes], pad_token_id, np.int64)
    own, _ = pad([e.own for e in episodes], False, bool)
    old_logprobs, _ = pad([e.logprobs for e in episodes], 0.0, np.float32)
    infos = [{**{k: v for k, v in e.reset_info.items() if k != "messages"}, **e.info} for e in episodes]
    return RolloutBatch(
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
        completion_ids=completion_ids,
        completion_mask=own,
        old_logprobs=old_logprobs,
        rewards=np.array([e.reward for e in episodes], dtype=np.float32),
        group_ids=np.repeat(np.arange(len(episodes) // group_size, dtype=np.int64), group_size),
        truncated=np.array([e.cut_short for e in episodes], dtype=bool),
        reward_components=reward_components(infos),
        texts=[e.transcript for e in episodes],
        infos=infos,
        observation_mask=attention & ~own,
    )


def collect_episodes(
    env: Any,
    policy: Policy,
    sampling: SamplingParams,
    *,
    seed: int | None = None,
    indices: Sequence[int] | None = None,
    pad_token_id: int | None = None,
) -> tuple[RolloutBatch, dict[str, float]]:
    """:func:`recgym.agents.rollout.collect` for a GroupedRatingVecEnv of multi-turn sub-envs."""
    if not getattr(policy, "supports_token_ids", False):
        raise TypeError(f"multi-turn rollouts for training need a policy that continues token ids (hf, vllm), "
                        f"not {type(policy).__name__}")
    group_size = int(env.group_size)
    start = time.perf_counter()
    options = {"indices": list(indices)} if indices is not None else None
    _, reset_infos = env.reset(seed=seed, options=options)
    env_seconds = time.perf_counter() - start
    stepper = vector_stepper(env)
    timed = {"env": 0.0}

    def step(actions):
        t = time.perf_counter()
        out = stepper(actions)
        timed["env"] += time.perf_counter() - t
        return out

    before = policy_stats(policy)
    start = time.perf_counter()
    episodes = run_episodes(step, reset_infos, policy, sampling, group_size, end_episode=env.end_episode)
    total = time.perf_counter() - start
    batch = pack_episodes(episodes, group_size, policy_pad_id(policy, pad_token_id))
    return batch, collection_metrics(batch, group_size, policy, before, total - timed["env"], env_seconds + timed["env"])
