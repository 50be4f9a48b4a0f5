"""The GRPO trainer with tiny randomly-initialized models: logprobs, the loop's outputs, LoRA,
atomic checkpoints, resume equivalence after a kill, and (slow) learning beyond noise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import tiny_lm
import torch
from safetensors.torch import load_file
from tiny_lm import SHORT_PROMPTS, tiny_model, tiny_tokenizer

from recgym.agents.checkpoints import list_checkpoints
from recgym.agents.config import GRPOConfig
from recgym.agents.learner.logprobs import completion_logprobs
from recgym.agents.rollout.prompt_sampler import PromptSampler
from recgym.agents.trainer import GRPOTrainer
from recgym.agents.types import RolloutBatch, SamplingParams

TESTS = Path(__file__).parent


def tiny_config(tmp_path, **overrides) -> GRPOConfig:
    return tiny_lm.tiny_config(tmp_path, **{"save_interval": 2, "plot": True, **overrides})


def read_metrics(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_config_yaml_round_trip_and_cli_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("max_steps: 7\nenv_kwargs: {num_users: 40}\nlearning_rate: 1e-5\n")
    cfg = GRPOConfig.from_yaml(path, ["--max_steps", "3", "--policy=vllm", "--report_to", "tensorboard"])
    assert (cfg.max_steps, cfg.env_kwargs, cfg.learning_rate, cfg.policy, cfg.report_to) == (
        3, {"num_users": 40}, 1e-5, "vllm", ["tensorboard"])
    cfg.to_yaml(tmp_path / "out.yaml")
    assert GRPOConfig.from_yaml(tmp_path / "out.yaml") == cfg
    for bad in (["--max_steps", "x"], ["--nope", "1"], ["--group_size", "0"], ["--policy", "tf"], ["--max_steps"]):
        with pytest.raises((TypeError, ValueError)):
            GRPOConfig().with_overrides(bad)


def test_cli_parses_config_and_overrides(tmp_path):
    from recgym.cli import build_parser
    from recgym.commands.train import config_from_args

    path = tmp_path / "c.yaml"
    path.write_text("max_steps: 7\nalgorithm: rloo\n")
    args = build_parser().parse_args(["train", "grpo", "--config", str(path), "--max_steps", "3", "--resume"])
    cfg = config_from_args(args, GRPOConfig)
    assert (cfg.max_steps, cfg.algorithm, args.resume) == (3, "rloo", True)


def test_prompt_sampler_covers_each_epoch_once_and_resumes():
    a = PromptSampler(10, seed=1)
    first = a.take(10)
    assert sorted(first) == list(range(10))
    b = PromptSampler(10, seed=1, position=4)
    assert b.take(8) == first[4:] + PromptSampler(10, seed=1, position=10).take(2)


def test_stratified_sampler_gives_each_step_one_prompt_per_band_of_targets():
    keys = np.random.default_rng(0).integers(1, 6, size=301).astype(float)
    stratified, shuffled = PromptSampler(301, seed=2, strata=keys, block=3), PromptSampler(301, seed=2)
    order = stratified.take(303)  # 301 samples in whole steps of 3: two of them twice
    assert sorted(set(order)) == list(range(301)) and len(order) == 303  # still one pass over the split per epoch
    low, high = np.quantile(keys, [1 / 3, 2 / 3])
    steps = [keys[order[i : i + 3]] for i in range(0, 303, 3)]
    assert all(step.min() <= low and step.max() >= high for step in steps)
    step_means = [step.mean() for step in steps]
    shuffled_means = [keys[shuffled.take(3)].mean() for _ in range(100)]
    assert np.std(step_means) < 0.5 * np.std(shuffled_means)
    assert PromptSampler(301, seed=2, strata=keys, block=3, position=7).take(5) == order[7:12]  # resumes
    with pytest.raises(ValueError, match="strata has 3 keys for 301 samples"):
        PromptSampler(301, seed=2, strata=keys[:3], block=3)


def test_stratified_sampler_keeps_its_steps_aligned_across_epochs():
    """A step never straddles two epochs' runs, also where its size does not divide the split: 10
    samples in 3 bands were drawn as epochs of 10, so from the second epoch on every step took two
    runs' pieces (two samples of one band, none of another)."""
    keys = np.array([1.0] * 4 + [2.0] * 3 + [3.0] * 3)
    sampler = PromptSampler(10, seed=0, strata=keys, block=3)
    steps = [sorted(keys[sampler.take(3)]) for _ in range(4 * 3)]  # three epochs
    assert all(step == [1.0, 2.0, 3.0] for step in steps)
    assert sampler.epoch_length == 12 and PromptSampler(10, seed=0).epoch_length == 10
    assert PromptSampler(10, seed=0, strata=keys, block=3, position=14).take(4) == PromptSampler(
        10, seed=0, strata=keys, block=3).take(18)[14:]  # resumes
    few = PromptSampler(2, seed=0, strata=np.array([1.0, 5.0]), block=3)
    assert set(few.take(6)) == {0, 1}  # fewer samples than a step: repeats, no error


@pytest.mark.parametrize(("field", "value", "words"), [
    ("learning_rate", -1.0, "learning_rate must be >= 0, got -1.0"),
    ("adam_beta1", 1.5, "adam_beta1 must be in [0, 1), got 1.5"),
    ("adam_epsilon", 0.0, "adam_epsilon must be > 0"),
    ("lora_dropout", 1.5, "lora_dropout must be in [0, 1)"),
    ("temperature", 0.0, "temperature must be > 0, got 0.0: GRPO learns from the differences"),
    ("top_p", 0.0, "top_p must be in (0, 1]"),
    ("report_to", ["nope"], "report_to: unknown target(s) ['nope']; choose from tensorboard, wandb, trackio"),
])
def test_config_refuses_values_that_would_fail_after_loading_or_learn_nothing(field, value, words):
    with pytest.raises(ValueError) as info:
        GRPOConfig(**{field: value})
    assert words in str(info.value)
    with pytest.raises(ValueError, match="lora_r must be >= 1 with use_lora"):
        GRPOConfig(use_lora=True, lora_r=0)
    GRPOConfig(lora_r=0)  # unused without LoRA


def test_stratified_prompt_sampling_reaches_the_trainer_and_refuses_a_ranking_env(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=1, prompts_per_step=2, prompt_sampling="stratified")
    trainer = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    targets = trainer.train_env.envs[0].unwrapped.dataset.targets("train")
    drawn = targets[trainer.sampler.take(2 * 20)].reshape(20, 2)
    assert (drawn.min(axis=1) <= np.median(targets)).all() and (drawn.max(axis=1) >= np.median(targets)).all()
    ranking = tiny_config(tmp_path / "rank", env_id="RecRank-Synthetic-v0", prompt_sampling="stratified",
                          env_kwargs={"num_candidates": 4, "max_user_history": 2})
    with pytest.raises(ValueError, match="RecRank-Synthetic-v0 has none: use 'shuffle'"):
        GRPOTrainer(ranking, model=tiny_model(), tokenizer=tiny_tokenizer())
    with pytest.raises(ValueError, match="prompt_sampling must be shuffle or stratified"):
        tiny_config(tmp_path, prompt_sampling="balanced")


def test_learner_logprobs_equal_the_hf_policys_sampling_logprobs():
    from recgym.agents.policies import make_policy

    model, tok = tiny_model(seed=3), tiny_tokenizer()
    policy = make_policy("hf", model=model, tokenizer=tok)
    prompts = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "a much longer prompt here"}]]
    groups = policy.generate(prompts, n=2, sampling=SamplingParams(temperature=1.0, max_new_tokens=6, seed=0))
    from recgym.agents.rollout.batch import pack_batch

    flat = [c for g in groups for c in g]
    batch = pack_batch(flat, [0.0] * 4, [{}] * 4, 2, tok.pad_token_id)
    with torch.no_grad():
        lp = completion_logprobs(model, *(torch.as_tensor(x) for x in (
            batch.prompt_ids, batch.prompt_mask, batch.completion_ids, batch.completion_mask)))
    # left-padded prompts, right-padded completions: the same numbers generation saw
    np.testing.assert_allclose(lp.numpy(), batch.old_logprobs, atol=2e-4)


def test_train_writes_metrics_plot_checkpoints_and_changes_weights(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=2, eval_interval=1, log_completions=1)
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = GRPOTrainer(cfg, model=model, tokenizer=tiny_tokenizer()).train()
    out = Path(cfg.output_dir)
    records = read_metrics(out / "metrics.jsonl")
    train_rows = [r for r in records if "reward" in r]
    assert [r["step"] for r in train_rows] == [1, 2]
    assert [r["step"] for r in records if "eval/mae" in r] == [0, 1, 2]
    for key in ("reward/format", "reward/accuracy", "loss", "grad_norm", "time/generation", "time/learning",
                "tokens_per_second", "data_position", "entropy", "zero_std_group_frac", "groups_dropped"):
        assert key in train_rows[0], key
    assert train_rows[1]["data_position"] == 2 * cfg.prompts_per_step
    assert (out / "curves.png").stat().st_size > 10_000
    assert [p.name for p in list_checkpoints(out)] == ["step-000002"]
    assert len((out / "completions.jsonl").read_text().splitlines()) == 3
    assert result.steps == 2 and "eval/baseline/user_mean_mae" in result.evals[0]
    assert train_rows[0]["entropy"] > 0
    assert sorted(result.eval_samples) == [0, 1, 2]
    assert [r["index"] for r in result.eval_samples[2]] == list(range(cfg.eval_size))
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v.cpu(), before[k])]
    assert changed, "rewards with spread must move the weights"


def test_eval_on_start_off_skips_only_the_first_evaluation(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=2, eval_interval=1, eval_on_start=False, plot=False)
    result = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer()).train()
    assert sorted(result.eval_samples) == [1, 2]
    assert [r["step"] for r in result.records] == [1, 1, 2, 2]  # every metrics line: a step, its evaluation
    assert [r["step"] for r in read_metrics(Path(cfg.output_dir) / "metrics.jsonl") if "eval/mae" in r] == [1, 2]



def test_a_piped_run_prints_each_record_as_it_comes_and_its_table_rows_hold_their_own_evaluation(tmp_path, capsys):
    """With stdout not a terminal, ``live_display`` printed nothing until the end; the table showed each
    evaluation on the next step's row, and the last one nowhere."""
    from test_run_log import table_rows

    from recgym.agents.run_log import RunLogger

    cfg = tiny_config(tmp_path, max_steps=2, eval_interval=1, live_display=True, plot=False)
    result = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer()).train()
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("step=")]
    assert [(line[0], line[1].startswith("eval/mae=")) for line in lines] == [
        ("step=0", True), ("step=1", False), ("step=1", True), ("step=2", False), ("step=2", True)]
    rows = table_rows(RunLogger(cfg, resume_step=2))  # the run's log, read back
    assert [rows[step][5] for step in "12"] == [f"{r['eval/mae']:.3f}" for r in result.evals[1:]]

def learner_forward_calls(trainer: GRPOTrainer) -> list[int]:
    """Counts the model's forward calls inside ``trainer.learn`` (not in generation or evaluation)."""
    calls, learn = [], trainer.learn

    def counted(*args, **kwargs):
        hook = trainer.model.register_forward_hook(lambda *_: calls.append(1))
        try:
            return learn(*args, **kwargs)
        finally:
            hook.remove()

    trainer.learn = counted
    return calls


def test_zero_advantage_batches_leave_weights_unchanged_and_skip_the_learners_pass(tmp_path):
    cfg = tiny_config(tmp_path, env_kwargs=SHORT_PROMPTS, max_steps=1, weight_decay=0.0)
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = GRPOTrainer(cfg, model=model, tokenizer=tiny_tokenizer())
    calls = learner_forward_calls(trainer)
    trainer.train()
    # a random model never writes the format: every reward is -0.5, every advantage 0
    row = next(r for r in read_metrics(Path(cfg.output_dir) / "metrics.jsonl") if "reward" in r)
    assert row["reward"] == -0.5 and row["advantage_abs"] == 0.0
    assert all(torch.equal(v.cpu(), before[k]) for k, v in model.state_dict().items())
    assert calls == [] and row["skipped_updates"] == 1 and row["grad_norm"] == 0.0 and row["loss"] == 0.0
    assert trainer.scheduler.last_epoch == 1  # the schedule moved on


def test_zero_advantages_still_run_the_learner_where_a_kl_term_has_a_gradient(tmp_path):
    cfg = tiny_config(tmp_path, env_kwargs=SHORT_PROMPTS, max_steps=1, beta=0.1)
    trainer = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    calls = learner_forward_calls(trainer)
    trainer.train()
    row = next(r for r in read_metrics(Path(cfg.output_dir) / "metrics.jsonl") if "reward" in r)
    assert row["advantage_abs"] == 0.0 and len(calls) > 0


def test_an_update_without_signal_after_one_with_signal_leaves_weights_and_moments_alone(tmp_path):
    """Step 1 learns from made-up advantages; step 2's are all 0. Adam's momentum from step 1 would
    move every weight again in step 2 (the old behaviour); the trainer skips that update instead."""
    cfg = tiny_config(tmp_path, env_kwargs=SHORT_PROMPTS, max_steps=2, weight_decay=0.0, eval_on_start=False,
                      eval_interval=0, plot=False)
    trainer = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    made_up = iter([lambda n: np.where(np.arange(n) % 2 == 0, 1.0, -1.0), np.zeros])
    trainer.algorithm.advantages = lambda batch: next(made_up)(len(batch)).astype(np.float32)
    after: list[dict[str, torch.Tensor]] = []
    learn = trainer.learn

    def learn_and_keep(batch, advantages):
        out = learn(batch, advantages)
        after.append({k: v.detach().clone() for k, v in trainer.model.state_dict().items()})
        return out

    trainer.learn = learn_and_keep
    trainer.train()
    start = tiny_model().state_dict()
    assert any(not torch.equal(after[0][k], start[k]) for k in start), "step 1 had a signal and must move the weights"
    assert all(torch.equal(after[1][k], after[0][k]) for k in start)
    rows = [r for r in read_metrics(Path(cfg.output_dir) / "metrics.jsonl") if "reward" in r]
    assert rows[0]["grad_norm"] > 0 and "skipped_updates" not in rows[0]
    assert rows[1]["grad_norm"] == 0 and rows[1]["skipped_updates"] == 1


# ---- learn() on a stand-in model, where each update's gradient can be written down ----


class LogprobTable(torch.nn.Module):
    """A stand-in learner: the logprob of row i's completion token t is the weight ``W[i, t]``
    (the row is read from its prompt's first token)."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.W = torch.nn.Parameter(weights.clone())


def table_logprobs(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature, shared_prompt=True):
    return model.W[prompt_ids[:, 0]] * completion_mask.float()


class UpdateRecorder:
    """Stands in for the optimizer: keeps each update's gradient and moves no weight (so every
    update is on-policy, ratio 1)."""

    def __init__(self, param: torch.nn.Parameter) -> None:
        self.param, self.grads = param, []

    def step(self) -> None:
        self.grads.append(self.param.grad.clone())

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.param.grad = None


class StepCounter:
    def __init__(self) -> None:
        self.steps = 0

    def step(self) -> None:
        self.steps += 1


def table_trainer(monkeypatch, weights: torch.Tensor, algorithm: str, **config) -> GRPOTrainer:
    """The real ``GRPOTrainer.learn`` on a :class:`LogprobTable`, without model, environment or rollout."""
    import recgym.agents.trainer as trainer_module
    from recgym.agents.algorithms import get_algorithm

    monkeypatch.setattr(trainer_module, "sequence_logprobs", table_logprobs)
    trainer = object.__new__(GRPOTrainer)
    trainer.config = cfg = GRPOConfig(algorithm=algorithm, **config)
    trainer.device, trainer.world_size, trainer.is_main, trainer.warned, trainer.step = torch.device("cpu"), 1, True, set(), 0
    trainer.model, trainer.ref_model = LogprobTable(weights), LogprobTable(weights)
    trainer.algorithm = get_algorithm(algorithm).from_config(cfg, **cfg.algorithm_kwargs)
    trainer.trainable = [trainer.model.W]
    trainer.optimizer, trainer.scheduler = UpdateRecorder(trainer.model.W), StepCounter()
    return trainer


def table_batch(rewards, lengths, groups) -> RolloutBatch:
    """Row i reads ``W[i]``; its completion has ``lengths[i]`` tokens."""
    b, c = len(rewards), max(lengths)
    mask = np.arange(c)[None] < np.asarray(lengths)[:, None]
    return RolloutBatch(prompt_ids=np.arange(b)[:, None], prompt_mask=np.ones((b, 1), bool),
                        completion_ids=mask.astype(np.int64), completion_mask=mask,
                        old_logprobs=np.zeros((b, c), np.float32), rewards=np.asarray(rewards, np.float32),
                        group_ids=np.asarray(groups), truncated=np.zeros(b, bool))


@pytest.mark.parametrize(("algorithm", "aggregation"), [
    ("grpo", "token"), ("dapo", None), ("rloo", "token"), ("grpo", "sequence"), ("rloo", None), ("dr_grpo", None),
])
def test_each_update_of_a_batch_learns_its_own_rows_loss(monkeypatch, algorithm, aggregation):
    """Two updates per rollout batch, one holding a long completion, one only short ones: each
    update's gradient is that of its own rows' loss (on-policy, d loss / d logp = -A times the
    aggregation's weight); a token-level loss divides by the update's own tokens, as verl does. (It
    used to divide by the batch's tokens scaled by rows: here the long update weighed 1.43x its due,
    the other 0.57x.) The per-sequence aggregations and Dr. GRPO's constant were already exact."""
    batch = table_batch([1.0, 0.0, 0.5, 0.2, 0.1, 0.9], [8, 1, 1, 1, 2, 1], [0, 1, 0, 1, 0, 1])
    trainer = table_trainer(monkeypatch, torch.full((6, 8), -1.0), algorithm, group_size=3, prompts_per_step=2,
                            micro_batch_size=3, gradient_accumulation_steps=1, max_grad_norm=0.0,
                            loss_aggregation=aggregation, max_new_tokens=8)
    advantages = trainer.algorithm.advantages(batch)
    out = trainer.learn(batch, advantages)
    weight = {"token": lambda m: m / m.sum(), "sequence": lambda m: m / m.sum(1, keepdim=True) / len(m),
              "sequence_sum": lambda m: m / len(m), "constant": lambda m: m / (len(m) * 8)}
    kind = "constant" if algorithm == "dr_grpo" else trainer.algorithm.loss_aggregation
    mask, a = torch.as_tensor(batch.completion_mask).float(), torch.as_tensor(advantages)[:, None]
    losses = []
    for grad, rows in zip(trainer.optimizer.grads, (slice(0, 3), slice(3, 6)), strict=True):
        expected = torch.zeros(6, 8)
        expected[rows] = -a[rows] * weight[kind](mask[rows])
        torch.testing.assert_close(grad, expected)
        losses.append(float(expected.sum()))
    assert out["loss"] == pytest.approx(np.mean(losses), rel=1e-5, abs=1e-6)  # the mean of the updates' losses


def test_a_nonfinite_gradient_skips_its_update_is_counted_apart_and_warns_once(monkeypatch):
    """A NaN reaching the loss (here an advantage, as a custom algorithm's could be) makes the
    gradient norm NaN: that update is skipped, counted in nonfinite_grad_updates (not as an update
    without signal) and warned about; the batch's other update still steps."""
    batch = table_batch([1.0, 0.0, 0.5, 0.2], [3] * 4, [0, 0, 1, 1])
    trainer = table_trainer(monkeypatch, torch.full((4, 3), -1.0), "grpo", group_size=2, prompts_per_step=2,
                            micro_batch_size=2, gradient_accumulation_steps=1)
    advantages = np.array([np.nan, 1.0, 0.5, -0.5], np.float32)
    with pytest.warns(UserWarning, match="gradient.*not finite.*nonfinite_grad_updates"):
        out = trainer.learn(batch, advantages)
    assert out["nonfinite_grad_updates"] == 1 and "skipped_updates" not in out
    assert len(trainer.optimizer.grads) == 1 and trainer.optimizer.grads[0][:2].abs().sum() == 0  # update 2 only
    assert trainer.scheduler.steps == 2  # the schedule moves on, as for any skipped update
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per run
        assert trainer.learn(batch, advantages)["nonfinite_grad_updates"] == 1


def test_nonfinite_rewards_are_counted_warned_once_and_the_others_still_learn(tmp_path):
    """A reward function that returns NaN for one completion per step: that completion gets
    advantage 0, the rest of the batch learns as usual (finite loss and gradient, no skipped
    update), each step logs nonfinite_rewards and the run warns once."""
    cfg = tiny_config(tmp_path, max_steps=2, eval_on_start=False, eval_interval=0, plot=False, save_interval=0)
    trainer = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    rollout = trainer.rollout

    def one_nan_reward():
        batch, stats = rollout()
        batch.rewards[0] = np.nan
        return batch, stats

    trainer.rollout = one_nan_reward
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    rows = [r for r in read_metrics(Path(cfg.output_dir) / "metrics.jsonl") if "reward" in r]
    assert [r["nonfinite_rewards"] for r in rows] == [1, 1]
    for row in rows:
        assert row["loss"] is not None and row["grad_norm"] > 0 and row["reward"] is not None
        assert "skipped_updates" not in row and "nonfinite_grad_updates" not in row
    assert sum("NaN or inf" in str(w.message) for w in caught) == 1


def test_several_updates_per_batch_warn_where_nothing_corrects_for_them(tmp_path):
    """A loss without importance ratio (reinforce, online_dpo) learns off-policy from the second
    update of a batch on; with dropout the first update's ratios are not 1 either. Both warn once
    at start, and only where a batch feeds several updates."""
    def start_warnings(**overrides) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            GRPOTrainer(tiny_config(tmp_path, **overrides), model=tiny_model(), tokenizer=tiny_tokenizer())
        return [str(w.message) for w in caught if "off-policy" in str(w.message) or "dropout" in str(w.message)]

    several = {"micro_batch_size": 4, "gradient_accumulation_steps": 1}  # 8 completions: 2 updates
    (message,) = start_warnings(algorithm="reinforce", **several)
    assert message.startswith("reinforce") and "off-policy" in message and "\n" not in message
    assert "off-policy" in " ".join(start_warnings(algorithm="online_dpo", num_inner_epochs=2))
    assert start_warnings(algorithm="reinforce") == []  # one update per batch
    lora = {"use_lora": True, "lora_r": 4, "lora_dropout": 0.1}
    (message,) = start_warnings(algorithm="grpo", **lora, **several)
    assert "dropout" in message and "lora_dropout" in message
    assert start_warnings(algorithm="grpo", **lora) == []


def test_an_algorithm_knob_it_refuses_stops_the_trainer_before_the_model_loads(tmp_path, monkeypatch):
    import recgym.agents.trainer as trainer_module

    def never(*args, **kwargs):
        raise AssertionError("the learner must not load")

    monkeypatch.setattr(trainer_module, "load_learner", never)
    with pytest.raises(ValueError, match="dr_grpo .*loss_aggregation must be null, got 'token'"):
        GRPOTrainer(tiny_config(tmp_path, algorithm="dr_grpo", loss_aggregation="token"))


def test_adam_epsilon_reaches_the_optimizer_and_damps_small_gradients(tmp_path):
    def moved(eps: float) -> float:
        cfg = tiny_config(tmp_path / str(eps), max_steps=1, eval_on_start=False, eval_size=1, adam_epsilon=eps)
        model = tiny_model()
        before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
        trainer = GRPOTrainer(cfg, model=model, tokenizer=tiny_tokenizer())
        assert trainer.optimizer.defaults["eps"] == eps
        trainer.train()
        return float((torch.cat([p.detach().cpu().flatten() for p in model.parameters()]) - before).abs().mean())

    # at 1e-8 the first update moves every weight with a gradient by about the learning rate;
    # an epsilon far above the gradients scales the same update down by orders of magnitude
    assert moved(1.0) < moved(1e-8) / 100


def test_lora_trains_only_the_adapter_with_kl_to_the_base(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=1, use_lora=True, lora_r=4, beta=0.1, num_inner_epochs=2,
                      micro_batch_size=3, gradient_accumulation_steps=2)
    trainer = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    base = {k: v.clone() for k, v in trainer.model.named_parameters() if "lora_" not in k}
    trainer.train()
    row = next(r for r in read_metrics(Path(cfg.output_dir) / "metrics.jsonl") if "reward" in r)
    assert "kl" in row and row["kl"] >= 0
    for name, p in trainer.model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(p, base[name]), name
    ckpt = list_checkpoints(cfg.output_dir)[-1] / "model"
    assert (ckpt / "adapter_model.safetensors").exists()


def test_a_fresh_run_in_a_used_output_dir_logs_only_its_own_evaluations(tmp_path):
    """A second run (not a resume) in the same ``output_dir`` replaces the first one's logs:
    ``metrics.jsonl`` and ``completions.jsonl`` hold its own steps once, not both runs' lines."""
    cfg = tiny_config(tmp_path, max_steps=1, eval_interval=1, log_completions=1, plot=False)
    out = Path(cfg.output_dir)
    for seed in (0, 1):
        shutil.rmtree(out / "checkpoints", ignore_errors=True)  # else the second run is refused (test below)
        GRPOTrainer(cfg, model=tiny_model(seed=seed), tokenizer=tiny_tokenizer()).train()
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "eval/mae" in r] == [0, 1]
    logged = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [0, 1]


def test_an_output_dir_with_checkpoints_takes_only_their_resume(tmp_path):
    """A fresh run where an earlier run left checkpoints would prune its own in their favour (steps
    sort by number) and a later resume would load theirs: refused, as are a resume with nothing to
    resume, one with other settings and one whose max_steps is below the checkpoint's step, before
    anything trains (config.yaml kept); a longer max_steps is a resume."""
    cfg = tiny_config(tmp_path, max_steps=4, save_interval=2)
    GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer()).train()
    assert [p.name for p in list_checkpoints(cfg.output_dir)] == ["step-000002", "step-000004"]
    with pytest.raises(ValueError, match="holds checkpoints of an earlier run \\(newest: step-000004\\): continue it"):
        GRPOTrainer(tiny_config(tmp_path, max_steps=1), model=tiny_model(), tokenizer=tiny_tokenizer()).train()
    with pytest.raises(ValueError, match="other settings \\(learning_rate: 0.01 -> 0.02\\)"):
        GRPOTrainer(tiny_config(tmp_path, max_steps=6, learning_rate=2e-2), model=tiny_model(),
                    tokenizer=tiny_tokenizer()).train(resume=True)
    assert [p.name for p in list_checkpoints(cfg.output_dir)] == ["step-000002", "step-000004"]
    with pytest.raises(ValueError, match="step-000004 is at step 4: max_steps 3 would run nothing"):
        GRPOTrainer(tiny_config(tmp_path, max_steps=3), model=tiny_model(), tokenizer=tiny_tokenizer()).train(resume=True)
    assert "max_steps: 4" in (Path(cfg.output_dir) / "config.yaml").read_text()
    # a run that timed out while the main process evaluated resumes with a longer wait
    result = GRPOTrainer(tiny_config(tmp_path, max_steps=6, save_interval=2, process_group_timeout_minutes=600),
                         model=tiny_model(), tokenizer=tiny_tokenizer()).train(resume=True)
    assert result.steps == 6
    with pytest.raises(ValueError, match="nothing to resume: no checkpoint in .*other/checkpoints"):
        GRPOTrainer(tiny_config(tmp_path, output_dir=str(tmp_path / "other")), model=tiny_model(),
                    tokenizer=tiny_tokenizer()).train(resume=True)


def test_save_total_limit_zero_keeps_every_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path, max_steps=3, save_interval=1, save_total_limit=0)
    GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer()).train()
    assert [p.name for p in list_checkpoints(cfg.output_dir)] == ["step-000001", "step-000002", "step-000003"]


def test_a_resume_removes_the_checkpoints_a_killed_prune_left_beyond_save_total_limit(tmp_path):
    """Killed while the final save removed an older checkpoint, a run keeps one too many; its
    resume, already at max_steps, saves nothing, so it prunes when it starts."""
    cfg = tiny_config(tmp_path, max_steps=2, save_interval=1, save_total_limit=1, plot=False)
    GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer()).train()
    ckpts = Path(cfg.output_dir) / "checkpoints"
    shutil.copytree(ckpts / "step-000002", ckpts / "step-000001")  # the one the kill left
    GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer()).train(resume=True)
    assert [p.name for p in list_checkpoints(cfg.output_dir)] == ["step-000002"]


def test_a_resumed_run_keeps_the_logged_lines_its_checkpoint_had_seen(tmp_path):
    """Resuming from step 2 drops what a killed run logged after its checkpoint (an evaluation at
    step 3 that the resumed run makes again), in both logs."""
    from recgym.agents.run_log import RunLogger

    cfg = tiny_config(tmp_path, live_display=False)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True)
    for name in ("metrics.jsonl", "completions.jsonl"):
        (out / name).write_text("".join(json.dumps({"step": step, "x": 1}) + "\n" for step in range(4)))
    logger = RunLogger(cfg, resume_step=2)
    assert [r["step"] for r in logger.records] == [0, 1, 2]
    logger.log_completions(3, [{"index": 7, "target": 4.0, "completions": ["<rate>4</rate>"]}])
    logged = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [0, 1, 2, 3] and logged[-1]["index"] == 7
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [0, 1, 2]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, max_steps=1)
    trainer = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    trainer.train()
    good = list_checkpoints(cfg.output_dir)
    assert [p.name for p in good] == ["step-000001"]
    trainer.step = 2

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated crash mid-write)")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        trainer.save_checkpoint()
    assert list_checkpoints(cfg.output_dir) == good  # the half-written one is not a checkpoint
    monkeypatch.undo()
    fresh = GRPOTrainer(cfg, model=tiny_model(seed=9), tokenizer=tiny_tokenizer())
    assert fresh.load_checkpoint() and fresh.step == 1


RUN_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from tiny_lm import SHORT_PROMPTS, SpaceReward, tiny_model, tiny_tokenizer
from recgym.agents.config import GRPOConfig
from recgym.agents.learner.data_parallel import end_process_group
from recgym.agents.trainer import GRPOTrainer
import torch

if torch.cuda.is_available():  # CUDA's atomic-add kernels reorder sums from run to run
    torch.use_deterministic_algorithms(True)
cfg = GRPOConfig(env_kwargs={{"reward": SpaceReward(), **SHORT_PROMPTS}}, max_steps=4, group_size=4,
                 prompts_per_step=2, max_new_tokens=8, eval_size=2, eval_max_new_tokens=4, eval_interval=2,
                 save_interval=2, live_display=False, plot=False, output_dir=sys.argv[1], learning_rate=1e-2,
                 lr_scheduler_type="linear", seed=0, num_inner_epochs=2)
trainer = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
kill_in_step = int(sys.argv[2])
if kill_in_step:
    learn = trainer.learn
    def learn_then_die(batch, advantages):
        out = learn(batch, advantages)
        if trainer.step + 1 == kill_in_step:  # mid-step: weights updated, nothing saved
            os.kill(os.getpid(), signal.SIGKILL)
        return out
    trainer.learn = learn_then_die
trainer.train(resume=sys.argv[3] == "resume")
end_process_group()
"""


def test_resume_after_kill_reaches_the_uninterrupted_state(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(RUN_SCRIPT.format(tests=str(TESTS))))
    # identical float reductions in every process (cuBLAS needs a fixed workspace for that on a GPU)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}

    def run(out, kill, mode):
        return subprocess.run([sys.executable, str(script), str(out), str(kill), mode], check=False, env=env,
                              capture_output=True, text=True, timeout=600)

    full, killed = tmp_path / "full", tmp_path / "killed"
    assert run(full, 0, "fresh").returncode == 0
    first = run(killed, 3, "fresh")
    assert first.returncode == -9, first.stderr[-2000:]  # SIGKILLed during step 3
    assert [p.name for p in list_checkpoints(killed)] == ["step-000002"]
    second = run(killed, 0, "resume")
    assert second.returncode == 0, second.stderr[-2000:]

    assert_same_run(full, killed)


def assert_same_run(full: Path, resumed: Path) -> None:
    """Two runs wrote the same metrics (timings aside), final weights and scheduler state."""
    drop = ("time/", "tokens_per_second", "eval/seconds")
    strip = [{k: v for k, v in r.items() if not k.startswith(drop)} for r in read_metrics(full / "metrics.jsonl")]
    again = [{k: v for k, v in r.items() if not k.startswith(drop)} for r in read_metrics(resumed / "metrics.jsonl")]
    assert [r["step"] for r in again] == [r["step"] for r in strip]
    for a, b in zip(strip, again):
        assert a.keys() == b.keys()
        for k in a:
            if a[k] is None or b[k] is None:  # NaN is written as null
                assert a[k] is b[k], (a["step"], k)
            else:
                assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (a["step"], k)
    w_full = load_file(str(full / "checkpoints/step-000004/model/model.safetensors"))
    w_resumed = load_file(str(resumed / "checkpoints/step-000004/model/model.safetensors"))
    for k in w_full:
        torch.testing.assert_close(w_full[k], w_resumed[k], atol=1e-6, rtol=1e-5)
    s_full = torch.load(full / "checkpoints/step-000004/training_state.pt", weights_only=False)
    s_res = torch.load(resumed / "checkpoints/step-000004/training_state.pt", weights_only=False)
    assert s_full["scheduler"] == s_res["scheduler"]
    logged = [(resumed / "completions.jsonl").read_text(), (full / "completions.jsonl").read_text()]
    assert logged[0] == logged[1] and logged[0]


@pytest.mark.slow
def test_tiny_model_learns_a_rewarded_behaviour_beyond_noise(tmp_path):
    """GRPO raises the mean reward of a rewarded behaviour (spaces in the text) well past the spread
    expected from sampling noise alone.

    The tiny model's final norm is scaled up so its next-token distribution is peaked, as a trained
    LM's is (a random init is near-uniform over 49k tokens, where no behaviour has a base rate)."""
    cfg = tiny_config(tmp_path, max_steps=12, group_size=8, prompts_per_step=2, max_new_tokens=12,
                      learning_rate=1e-2, save_interval=0, plot=False, eval_size=1, eval_max_new_tokens=2)
    model = tiny_model()
    with torch.no_grad():
        model.model.norm.weight.mul_(30.0)
    GRPOTrainer(cfg, model=model, tokenizer=tiny_tokenizer()).train()
    rows = [r for r in read_metrics(Path(cfg.output_dir) / "metrics.jsonl") if "reward" in r]
    first, last = rows[:2], rows[-4:]
    per_step = cfg.group_size * cfg.prompts_per_step
    # noise: the standard error of a window's mean, from the per-completion reward std at the start
    std = float(np.mean([r["reward_std"] for r in first]))
    noise = np.hypot(std / np.sqrt(len(first) * per_step), std / np.sqrt(len(last) * per_step))
    gain = np.mean([r["reward"] for r in last]) - np.mean([r["reward"] for r in first])
    assert std > 0 and gain > 4 * noise, (gain, noise, [round(r["reward"], 3) for r in rows])


def test_a_bad_value_given_on_the_command_line_says_it_came_from_there(tmp_path):
    """``--algorithm_kwargs 'x=2'`` used to be reported as the config file's ``algorithm_kwargs``."""
    (tmp_path / "cfg.yaml").write_text("max_steps: 3\n")
    with pytest.raises(TypeError, match=r"^algorithm_kwargs: expected dict, got 'x=2' \(given on the command line: "
                                        r"--algorithm_kwargs; write a YAML mapping, e\.g\. '\{name: 1\}'\)$"):
        GRPOConfig.from_yaml(tmp_path / "cfg.yaml", ["--algorithm_kwargs", "x=2"])
    with pytest.raises(TypeError, match=r"^max_steps: expected int, got 'x' \(given on the command line: --max_steps\)$"):
        GRPOConfig.from_yaml(tmp_path / "cfg.yaml", ["--max_steps", "x"])


@pytest.mark.parametrize(("kwargs", "words"), [
    ("{max_refills: many}", "DAPO's max_refills must be an integer, got 'many'"),
    ("{max_refill: 2}", "DAPO has no knob 'max_refill' (did you mean 'max_refills'?)"),
])
def test_the_cli_checks_algorithm_kwargs_names_and_types_before_anything_loads(kwargs, words, capsys):
    """``'<' not supported between instances of 'str' and 'int'`` and ``Algorithm.__init__() got an
    unexpected keyword argument 'max_refill'`` named neither the algorithm nor what it takes."""
    from recgym.cli import main

    assert main(["train", "grpo", "--algorithm", "dapo", "--algorithm_kwargs", kwargs]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and words in err


def test_the_accelerator_gets_the_configured_process_group_timeout(tmp_path):
    """The other processes wait in a barrier while the main one evaluates: torch's default timeout
    (30 minutes with gloo, 10 with NCCL) ended runs whose evaluation took longer. The 2-process
    check of the group itself: ``test_multiprocess_metrics.py``."""
    from datetime import timedelta

    trainer = GRPOTrainer(tiny_config(tmp_path, process_group_timeout_minutes=7), model=tiny_model(),
                          tokenizer=tiny_tokenizer())
    assert trainer.accelerator.init_handler.timeout == timedelta(minutes=7)
    assert GRPOConfig().process_group_timeout_minutes == 180
    with pytest.raises(ValueError, match="^process_group_timeout_minutes must be > 0, got 0"):
        GRPOConfig(process_group_timeout_minutes=0)
