"""RecOne cold start: trace selection with provenance, and completion-only SFT with TRL."""

from __future__ import annotations

import dataclasses
import json
import re

import gymnasium as gym
import numpy as np
import pytest
import torch
from tiny_lm import tiny_model, tiny_tokenizer

import recgym  # noqa: F401
from recgym.agents.sft import SFTTrainConfig, build_sft_trainer, train_sft
from recgym.agents.teachers.cold_start import (
    ColdStartConfig,
    make_cold_start_data,
    rating_quotas,
    run_cold_start,
)
from recgym.agents.types import Completion, SamplingParams

ENV = "RecRating-Synthetic-v0"


def trace(rating: float) -> str:
    return f"<analyze user>u</analyze user><analyze item>i</analyze item><match>m</match><rate>{rating:g}</rate>"


class ScriptedTeacher:
    """A deterministic teacher (a real Policy, no model): rates 3 unless hinted; hinted, it repeats
    the hint, except for prompts mentioning a user average below 2, where it breaks the format."""

    def __init__(self):
        self.calls = []

    def generate(self, prompts, n=1, sampling=None):
        self.calls.append(prompts)
        out = []
        for messages in prompts:
            text = messages[-1]["content"]
            hint = re.search(r"actual rating was ([0-9.]+)", text)
            low = re.search(r"average rating so far: ([0-9.]+)", text)
            if hint and low and float(low.group(1)) < 2:
                answer = "no tags"
            else:
                answer = trace(float(hint.group(1)) if hint else 3.0)
            out.append([Completion(answer, [1], [2], [0.0], "stop") for _ in range(n)])
        return out


def test_cold_start_keeps_rationalizes_and_drops_with_a_scripted_teacher(tmp_path):
    env = gym.make(ENV, split="train")
    indices = list(range(40))
    targets = np.asarray(env.unwrapped.dataset.targets("train"))[indices]
    report = make_cold_start_data(env, ScriptedTeacher(), indices, tmp_path / "d.jsonl", samples_per_prompt=2,
                                  tolerance=0.5, provenance={"teacher": "scripted"}, batch_size=16)
    rows = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert report.kept == int((targets == 3).sum())  # rating 3 is within 0.5 only of a 3
    assert report.total == 40 and len(rows) == report.kept + report.rationalized
    assert report.rationalized > 0
    for row in rows:
        assert "Hint" not in json.dumps(row["prompt"])  # the hint never reaches the stored prompt
        assert row["teacher"] == "scripted" and row["provenance"] in ("kept", "rationalized")
        assert abs(row["parsed_rating"] - row["target_rating"]) <= 0.5
        _, info = env.reset(options={"index": row["index"]})
        assert row["prompt"] == info["messages"]
    assert "kept" in report.summary()


def test_no_rationalization_drops_the_rest(tmp_path):
    env = gym.make(ENV, split="train")
    teacher = ScriptedTeacher()
    report = make_cold_start_data(env, teacher, list(range(10)), tmp_path / "d.jsonl", rationalize=False,
                                  sampling=SamplingParams(max_new_tokens=8))
    assert report.rationalized == 0 and report.kept + report.dropped == 10
    assert len(teacher.calls) == 2  # one batch of 8, one of 2; no hinted retries


def test_rating_quotas_share_the_total_in_the_splits_proportions():
    # exact shares 0.625, 1.25, 2.5, 0.625: floors 0, 1, 2, 0, then the two largest remainders
    assert rating_quotas(np.array([1, 2, 2, 3, 3, 3, 3, 5]), 5) == {1.0: 1, 2.0: 1, 3.0: 2, 5.0: 1}
    assert sum(rating_quotas(np.arange(7) % 3, 10).values()) == 10


def test_match_ratings_keeps_the_reasoners_traces_in_the_splits_rating_proportions(tmp_path):
    """The scripted reasoner gets low ratings right more often than high ones; the tolerance filter alone
    keeps that lean, the quotas keep the split's proportions."""
    config = ColdStartConfig(num_samples=30, teacher="reasoner", teacher_policy="scripted", samples_per_prompt=1,
                             rationalize=False, match_ratings=True, output=str(tmp_path / "d.jsonl"))
    report = run_cold_start(config)
    rows = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    split = gym.make(ENV, split="train").unwrapped.dataset.targets("train")
    kept = dict(zip(*np.unique([r["target_rating"] for r in rows], return_counts=True)))
    assert {float(k): int(v) for k, v in kept.items()} == rating_quotas(split, 30)
    assert report.kept == 30 and report.short == 0 and report.dropped > 0
    assert all(abs(r["parsed_rating"] - r["target_rating"]) <= 0.5 for r in rows)


def test_match_ratings_asks_only_while_a_rating_has_room_and_reports_the_shortfall(tmp_path):
    env = gym.make(ENV, split="train")
    targets = np.asarray(env.unwrapped.dataset.targets("train"))[:200]
    teacher = ScriptedTeacher()  # rates 3: only the 3s are kept
    report = make_cold_start_data(env, teacher, list(range(200)), tmp_path / "d.jsonl", rationalize=False,
                                  quotas={1.0: 2, 3.0: 2})
    asked = sum(len(batch) for batch in teacher.calls)
    ones = int((targets == 1).sum())
    assert report.kept == 2 and report.dropped == ones and report.short == 2
    assert asked == ones + 2  # every 1 (none kept), the first two 3s, no other rating
    assert "2 short of the rating quotas" in report.summary()


def test_match_ratings_refuses_an_env_without_ratings_in_one_line(tmp_path):
    config = ColdStartConfig(env_id="RecRank-Synthetic-v0", teacher="ranker", teacher_policy="scripted",
                             match_ratings=True, output=str(tmp_path / "d.jsonl"))
    with pytest.raises(ValueError, match="match_ratings") as err:
        run_cold_start(config)
    assert "\n" not in str(err.value)


def test_sft_loss_on_completion_only_and_output_is_a_loadable_checkpoint(tmp_path):
    from transformers import AutoModelForCausalLM

    data = tmp_path / "d.jsonl"
    with data.open("w") as f:  # short prompts keep this fast; the env's prompts are tested above
        for i in range(4):
            prompt = [{"role": "user", "content": f"How will user {i} rate item {i}?"}]
            f.write(json.dumps({"prompt": prompt, "completion": [{"role": "assistant", "content": trace(4)}]}) + "\n")
    config = SFTTrainConfig(data=str(data), output_dir=str(tmp_path / "sft"), max_steps=15, learning_rate=1e-2,
                            per_device_train_batch_size=4, max_length=256, lr_scheduler_type="constant")
    trainer = build_sft_trainer(config, tiny_model(), tiny_tokenizer())
    row = trainer.train_dataset[0]
    labels = np.asarray(row["labels"])
    completion_tokens = len(tiny_tokenizer()(trace(4), add_special_tokens=False)["input_ids"])
    # the prompt's tokens carry no loss (-100); the completion's (and its end-of-turn) do
    assert (labels[:-completion_tokens] == -100).mean() > 0.95
    assert completion_tokens <= (labels != -100).sum() <= completion_tokens + 3
    out = train_sft(config, tiny_model(), tiny_tokenizer())
    log = json.loads((out / "sft_log.json").read_text())
    losses = [e["loss"] for e in log if "loss" in e]
    assert losses[-1] < 0.5 * losses[0]  # it memorizes the one trace
    reloaded = AutoModelForCausalLM.from_pretrained(out)
    assert reloaded.config.hidden_size == 32


def test_sft_skips_rows_longer_than_max_length_and_says_so(tmp_path, capsys):
    """A row over max_length is skipped, never cut (TRL would drop a long prompt silently and cut a
    long completion before its answer); the count is printed and recorded in sft_log.json."""
    short = {"prompt": [{"role": "user", "content": "short"}], "completion": [{"role": "assistant", "content": trace(4)}]}
    long_answer = {**short, "completion": [{"role": "assistant", "content": "word " * 80 + trace(4)}]}
    long_prompt = {**short, "prompt": [{"role": "user", "content": "word " * 120}]}
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in (short, long_answer, long_prompt)))
    config = SFTTrainConfig(data=str(data), output_dir=str(tmp_path / "sft"), max_steps=1, max_length=96)
    trainer = build_sft_trainer(config, tiny_model(), tiny_tokenizer())
    assert "SFT: skipped 2 of 3 rows longer than max_length=96 tokens" in capsys.readouterr().err
    (row,) = trainer.train_dataset
    labelled = [i for i, label in zip(row["input_ids"], row["labels"]) if label != -100]
    assert tiny_tokenizer().decode(labelled).startswith(trace(4) + "<|im_end|>")
    out = train_sft(config, tiny_model(), tiny_tokenizer())
    assert json.loads((out / "sft_log.json").read_text())[0] == {
        "rows": 1, "rows_skipped_over_max_length": 2, "max_length": 96}
    with pytest.raises(ValueError, match=r"all 3 rows are longer than max_length=8 tokens .*: raise max_length"):
        build_sft_trainer(dataclasses.replace(config, max_length=8), tiny_model(), tiny_tokenizer())


def test_completion_logits_loss_and_gradients_equal_trls_loss(tmp_path):
    """The SFT loss read from completion-position logits alone is TRL's completion-only NLL: the same
    value and gradients on a right-padded batch of different prompt and completion lengths, per
    micro-batch and under a token count of an accumulated batch."""
    from trl import SFTTrainer

    data = tmp_path / "d.jsonl"
    with data.open("w") as f:
        for i, rating in enumerate([4, 2.5, 1, 5]):
            prompt = [{"role": "user", "content": f"How will user {i} rate item {i}?" + " Think." * (3 * i)}]
            completion = trace(rating) + " Done." * i
            f.write(json.dumps({"prompt": prompt, "completion": [{"role": "assistant", "content": completion}]}) + "\n")
    config = SFTTrainConfig(data=str(data), output_dir=str(tmp_path / "sft"), max_steps=1,
                            per_device_train_batch_size=4, max_length=256)
    trainer = build_sft_trainer(config, tiny_model(), tiny_tokenizer())
    model = trainer.model.train()
    batch = {k: v.to(model.device) for k, v in trainer.data_collator([trainer.train_dataset[i] for i in range(4)]).items()}
    assert (batch["attention_mask"] == 0).any()  # the rows are padded

    def loss_and_grads(compute, **kwargs):
        model.zero_grad()
        loss = compute(trainer, model, dict(batch), **kwargs)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters()]

    for kwargs in ({}, {"num_items_in_batch": torch.tensor(300)}):
        ours, ours_grads = loss_and_grads(type(trainer).compute_loss, **kwargs)
        theirs, their_grads = loss_and_grads(SFTTrainer.compute_loss, **kwargs)
        assert type(trainer) is not SFTTrainer and float(ours) > 0
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
        for a, b in zip(ours_grads, their_grads):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_bfloat16_sft_keeps_float32_master_weights(tmp_path):
    """bfloat16 is autocast over float32 weights: small updates are not rounded away."""
    data = tmp_path / "d.jsonl"
    prompt = [{"role": "user", "content": "How will the user rate the item?"}]
    data.write_text(json.dumps({"prompt": prompt, "completion": [{"role": "assistant", "content": trace(4)}]}) + "\n")
    model_dir = tmp_path / "model"
    tiny_model().save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    config = SFTTrainConfig(data=str(data), model=str(model_dir), output_dir=str(tmp_path / "sft"), max_steps=3,
                            learning_rate=1e-6, per_device_train_batch_size=1, max_length=256, dtype="bfloat16",
                            lr_scheduler_type="constant")
    trainer = build_sft_trainer(config)
    assert trainer.args.bf16 and all(p.dtype == torch.float32 for p in trainer.model.parameters())
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    changed = sum(int((p.detach() != b).sum()) for p, b in zip(trainer.model.parameters(), before))
    assert changed / sum(b.numel() for b in before) > 0.5
    with pytest.raises(ValueError, match="bfloat16"):
        build_sft_trainer(SFTTrainConfig(data=str(data), model=str(model_dir), dtype="float16"))


def test_sft_with_trainable_layers_moves_only_the_top_block(tmp_path):
    data = tmp_path / "d.jsonl"
    prompt = [{"role": "user", "content": "How will the user rate the item?"}]
    data.write_text(json.dumps({"prompt": prompt, "completion": [{"role": "assistant", "content": trace(4)}]}) + "\n")
    config = SFTTrainConfig(data=str(data), output_dir=str(tmp_path / "sft"), max_steps=2, learning_rate=1e-2,
                            per_device_train_batch_size=1, max_length=256, trainable_layers=1)
    trainer = build_sft_trainer(config, tiny_model(), tiny_tokenizer())
    assert not trainer.args.gradient_checkpointing  # TRL's default recomputes every activation
    needs_grad = []  # the frozen block's output must not require grad, or backward runs through it anyway
    for block in trainer.model.model.layers:
        block.register_forward_hook(lambda _m, _i, out: needs_grad.append((out[0] if isinstance(out, tuple) else out).requires_grad))
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert needs_grad[:2] == [False, True]
    moved = {n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert moved and all(n.startswith(("model.layers.1.", "model.norm.")) for n in moved), moved


def test_cold_start_config_round_trips_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    ColdStartConfig(num_samples=7, tolerance=1.0).to_yaml(path)
    loaded = ColdStartConfig.from_yaml(path, ["--teacher_policy", "openai"])
    assert (loaded.num_samples, loaded.tolerance, loaded.teacher_policy) == (7, 1.0, "openai")
    with pytest.raises(ValueError):
        ColdStartConfig.from_yaml(path, ["--nope", "1"])


@pytest.mark.parametrize(("values", "words"), [
    ({"num_samples": 0}, "num_samples must be >= 1, got 0"),
    ({"num_samples": -5}, "num_samples must be >= 1, got -5"),
    ({"samples_per_prompt": 0}, "samples_per_prompt must be >= 1, got 0"),
    ({"max_new_tokens": 0}, "max_new_tokens must be >= 1, got 0"),
    ({"tolerance": -1}, "tolerance must be >= 0, got -1"),
    ({"temperature": -0.5}, "temperature must be >= 0, got -0.5"),
    ({"split": "bogus"}, "split must be one of train, valid, test, got 'bogus'"),
], ids=str)
def test_cold_start_config_refuses_bad_values_in_one_line(values, words):
    """They failed with a traceback mid-run, or wrote an empty or all-dropped file over the output."""
    with pytest.raises(ValueError, match=re.escape(words)) as err:
        ColdStartConfig(**values)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("values", "words"), [
    ({"dtype": "float16"}, "float16 needs loss scaling"),
    ({"dtype": "foo"}, "dtype must be float32 or bfloat16 (mixed precision), got 'foo'"),
    ({"per_device_train_batch_size": 0}, "per_device_train_batch_size must be >= 1, got 0"),
    ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps must be >= 1, got 0"),
    ({"max_length": 0}, "max_length must be >= 1, got 0"),
    ({"logging_steps": 0}, "logging_steps must be >= 1, got 0"),
    ({"learning_rate": -1.0}, "learning_rate must be > 0, got -1.0"),
    ({"learning_rate": 0.0}, "learning_rate must be > 0, got 0.0"),
    ({"warmup_steps": -1.0}, "warmup_steps must be >= 0, got -1.0"),
    ({"num_train_epochs": 0.0}, "num_train_epochs must be > 0 (or max_steps > 0), got 0.0"),
], ids=str)
def test_sft_train_config_refuses_bad_values_in_one_line(values, words):
    """They failed only after the model loaded, with a traceback from torch or transformers."""
    with pytest.raises(ValueError, match=re.escape(words)) as err:
        SFTTrainConfig(**values)
    assert "\n" not in str(err.value)
    SFTTrainConfig(num_train_epochs=0.0, max_steps=3)  # max_steps overrides the epochs


def test_bad_make_data_settings_leave_the_output_alone(tmp_path, capsys):
    """``--num_samples 0`` wrote an empty file over the output (and exited 1)."""
    from recgym.cli import main

    out = tmp_path / "cold_start.jsonl"
    out.write_text("earlier traces\n")
    for bad in (["--num_samples", "0"], ["--samples_per_prompt", "0"], ["--tolerance", "-1"]):
        assert main(["sft", "make-data", "--teacher_policy", "scripted", "--teacher", "reasoner",
                     "--output", str(out), *bad]) == 2
        assert out.read_text() == "earlier traces\n"
    assert "Traceback" not in capsys.readouterr().err
