"""RecOne cold start: trace selection with provenance, and completion-only SFT with TRL."""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import re
from pathlib import Path

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


class KilledAt:
    """``teacher`` raising KeyboardInterrupt at its generate call ``call``, as a run killed part way
    stops (no process is killed)."""

    def __init__(self, teacher, call: int):
        self.teacher, self.call = teacher, call

    def generate(self, prompts, n=1, sampling=None):
        self.call -= 1
        if self.call == 0:
            raise KeyboardInterrupt
        return self.teacher.generate(prompts, n=n, sampling=sampling)


def test_a_killed_cold_start_keeps_its_rows_and_its_resume_ends_as_the_whole_run(tmp_path):
    """Rows went to ``<output>.tmp``, renamed only at the end: a killed run kept nothing to resume from."""
    env = gym.make(ENV, split="train")
    whole = make_cold_start_data(env, ScriptedTeacher(), list(range(40)), tmp_path / "whole.jsonl", samples_per_prompt=2)
    out = tmp_path / "d.jsonl"
    with pytest.raises(KeyboardInterrupt):  # batches of 8: asked, then hinted; killed in the second's hinted call
        make_cold_start_data(env, KilledAt(ScriptedTeacher(), 4), list(range(40)), out, samples_per_prompt=2)
    assert 8 < len(out.read_text().splitlines()) < whole.kept + whole.rationalized
    teacher = ScriptedTeacher()
    resumed = make_cold_start_data(env, teacher, list(range(40)), out, samples_per_prompt=2, resume=True)
    assert (resumed.kept, resumed.rationalized, resumed.dropped) == (whole.kept, whole.rationalized, whole.dropped)
    asked = [p for batch in teacher.calls for p in batch if "Hint for writing" not in p[-1]["content"]]
    assert 8 < resumed.earlier < 16 and len(asked) == 40 - resumed.earlier  # the samples done are not asked again
    assert sorted(map(json.loads, out.read_text().splitlines()), key=lambda r: r["index"]) == sorted(
        map(json.loads, (tmp_path / "whole.jsonl").read_text().splitlines()), key=lambda r: r["index"])


def test_a_resumed_match_ratings_run_fills_the_quotas_once(tmp_path):
    from recgym.agents.teachers.cold_start import scripted_teacher

    config = ColdStartConfig(num_samples=30, teacher="reasoner", teacher_policy="scripted", samples_per_prompt=1,
                             rationalize=False, match_ratings=True, output=str(tmp_path / "whole.jsonl"))
    whole = run_cold_start(config)
    config.output = str(tmp_path / "d.jsonl")
    with pytest.raises(KeyboardInterrupt):
        run_cold_start(config, teacher=KilledAt(scripted_teacher("reasoner"), 3))
    resumed = run_cold_start(config, resume=True)
    kept = [sorted(json.loads(line)["index"] for line in Path(path).read_text().splitlines())
            for path in (config.output, tmp_path / "whole.jsonl")]
    assert kept[0] == kept[1] and len(kept[0]) == 30
    assert (resumed.kept, resumed.dropped, resumed.short) == (whole.kept, whole.dropped, whole.short)


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
    assert json.loads((out / "sft_log.json").read_text())[0].items() >= {
        "rows": 1, "rows_skipped_over_max_length": 2, "max_length": 96}.items()
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


# ---- what `recgym sft train` refuses, warns about and records (the data, the output folder, stops) ----------

PROMPT = [{"role": "user", "content": "How will the user rate the item?"}]


def sft_row(content: str = trace(4), **extra) -> dict:
    return {"prompt": PROMPT, "completion": [{"role": "assistant", "content": content}], **extra}


def write_jsonl(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


PLAIN = "prompt and completion must be lists of {role, content} messages (chat format); plain-text rows are not supported"


@pytest.mark.parametrize(("row", "words"), [
    ({"prompt": "How?", "completion": trace(4)}, "prompt is a JSON string: " + PLAIN),
    ({"prompt": PROMPT, "completion": trace(4)}, "completion is a JSON string: " + PLAIN),
    ({"prompt": PROMPT, "completion": {"role": "assistant", "content": trace(4)}}, "completion is one message, not a list"),
    ([1, 2], "a row must be a JSON object with prompt and completion, got a JSON list"),
    ({"prompt": "How?", "completion": [{"role": "assistant", "content": trace(4)}]}, "prompt is a JSON string"),
    ({"prompt": PROMPT, "completion": [{"role": "assistant"}]}, "completion message 1 (assistant) has no content"),
    ({"prompt": PROMPT, "completion": [{"role": "assistant", "content": None}]},
     "completion message 1 (assistant) has content null"),
    ({"messages": PROMPT + [{"role": "assistant", "content": trace(4)}]}, "a single messages list is not supported"),
    ({"prompt": PROMPT}, "no completion: " + PLAIN),
    ({"prompt": PROMPT, "completion": []}, "completion is an empty list"),
    ({"prompt": PROMPT, "completion": [{"role": "user", "content": trace(4)}]}, "must start with an assistant turn"),
], ids=["plain-text", "completion-str", "completion-dict", "list-row", "prompt-str", "no-content", "content-null",
        "messages", "no-completion", "empty-completion", "user-completion"])
def test_a_malformed_row_is_one_line_naming_its_file_and_line(row, words, tmp_path):
    """Each ended in a traceback (AttributeError, TypeError, KeyError) from read_sft_rows or deeper."""
    from recgym.agents.sft_data import read_sft_rows

    data = write_jsonl(tmp_path / "d.jsonl", [sft_row(), "", row])
    with pytest.raises(ValueError) as err:
        read_sft_rows(data)
    message = str(err.value)
    assert message.startswith(f"{data}:3: ") and words in message and "\n" not in message


def test_a_json_error_names_the_file_and_its_line(tmp_path):
    """The file was parsed whole after str.splitlines: the error named neither file nor row, and a
    line separator inside a JSON string (U+2028, kept by ensure_ascii=False) shifted the count."""
    from recgym.agents.sft_data import read_sft_rows

    good = json.dumps(sft_row("reasoning\u2028" + trace(4)), ensure_ascii=False)
    data = tmp_path / "d.jsonl"
    data.write_text(f"{good}\n\n{good}\n" + '{"prompt": [\n' + f"{good}\n", encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(f"{data}:4: not JSON (")) as err:
        read_sft_rows(data)
    assert "\n" not in str(err.value)
    assert len(read_sft_rows(write_jsonl(tmp_path / "ok.jsonl", [good, "", good]))) == 2


def test_all_rows_over_max_length_fail_before_the_model_loads(tmp_path, monkeypatch):
    from recgym.agents import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model loaded"))
    model_dir = tmp_path / "model"
    tiny_model().save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    data = write_jsonl(tmp_path / "d.jsonl", [sft_row()] * 2)
    config = SFTTrainConfig(data=data, model=str(model_dir), output_dir=str(tmp_path / "sft"), max_length=8)
    with pytest.raises(ValueError, match=r"all 2 rows are longer than max_length=8 tokens"):
        build_sft_trainer(config)


def test_rows_of_the_evaluation_splits_are_refused_unless_allowed(tmp_path):
    """Traces made with `sft make-data --split valid` trained silently on the split GRPO validates on."""
    data = write_jsonl(tmp_path / "d.jsonl", [sft_row(split="train"), sft_row(split="valid"), sft_row(split="valid"),
                                             sft_row(split="test")])
    config = SFTTrainConfig(data=data, output_dir=str(tmp_path / "sft"), max_steps=1, max_length=256)
    with pytest.raises(ValueError, match=re.escape("3 of 4 rows come from other splits than train (1 from test, 2 from "
                                                   "valid)")) as err:
        build_sft_trainer(config, tiny_model(), tiny_tokenizer())
    assert "--allow_eval_splits true" in str(err.value) and "\n" not in str(err.value)
    trainer = build_sft_trainer(dataclasses.replace(config, allow_eval_splits=True), tiny_model(), tiny_tokenizer())
    assert trainer.sft_data["rows_from_eval_splits"] == {"test": 1, "valid": 2}


def test_make_data_on_an_evaluation_split_warns(tmp_path):
    config = ColdStartConfig(num_samples=2, teacher="reasoner", teacher_policy="scripted", samples_per_prompt=1,
                             split="valid", output=str(tmp_path / "d.jsonl"))
    with pytest.warns(UserWarning, match=r"split 'valid'.*--allow_eval_splits true"):
        run_cold_start(config)
    rows = [json.loads(line) for line in (tmp_path / "d.jsonl").read_text().splitlines()]
    assert rows and all(r["split"] == "valid" for r in rows)


def test_suspect_rows_train_with_one_warning_and_their_counts_in_sft_log(tmp_path):
    """Broken answers, off-scale ratings, empty turns, a prompt ending in an assistant turn, duplicates,
    a cold-start hint left in the prompt and several envs in one file trained silently."""
    from recgym.agents.teachers.cold_start import HINT

    rating, rank = {"env_id": ENV}, {"env_id": "RecRank-Synthetic-v0"}
    hinted = [{"role": "user", "content": PROMPT[0]["content"] + HINT.format(rating=4, tag="rate")}]
    rows = [
        sft_row(**rating),
        sft_row(**rating),  # a duplicate
        sft_row("I think a 4.", **rating),  # no tags
        sft_row("<rate>4</rate><analyze user>u</analyze user>", **rating),  # out of order
        sft_row(trace(8), **rating),  # off the 1-5 scale
        sft_row("", **rating),  # empty (and so broken)
        {**sft_row(**rating), "prompt": [*PROMPT, {"role": "assistant", "content": "<analyze user>"}]},
        {**sft_row(**rating), "prompt": hinted},
        sft_row("<analyze user>u</analyze user><analyze candidates>c</analyze candidates><match>m</match>"
                "<rank>[2] [1]</rank>", **rank),  # a ranking answer: broken only by the list's length
        sft_row(trace(3)),  # names no env: its answer is not checked
    ]
    data = write_jsonl(tmp_path / "d.jsonl", rows)
    config = SFTTrainConfig(data=data, output_dir=str(tmp_path / "sft"), max_steps=1, max_length=512)
    with pytest.warns(UserWarning) as caught:
        trainer = build_sft_trainer(config, tiny_model(), tiny_tokenizer())
    (warning,) = [w for w in caught if "SFT data" in str(w.message)]
    text = str(warning.message)
    assert "\n" not in text and text.startswith(f"SFT data {data}: of 10 rows, ") and "training on them anyway" in text
    checks = trainer.sft_data["data_checks"]
    assert checks["env_ids"] == {ENV: 8, "RecRank-Synthetic-v0": 1, "(none)": 1}
    assert checks["answers_checked"] == 9 and checks["rating_off_scale"] == 1 and checks["empty_assistant_content"] == 1
    assert checks["format_broken"] == 4  # no tags, out of order, empty, the ranking one (20 candidates, 2 ranked)
    assert (checks["prompt_ends_with_assistant"], checks["duplicate_rows"], checks["hint_in_prompt"]) == (1, 1, 1)
    for words in ("4 break the env's answer format", "1 rate off the env's scale", "1 repeat an earlier row",
                  "1 still hold the cold-start hint", "several envs"):
        assert words in text
    out = train_sft(config, tiny_model(), tiny_tokenizer())
    head = json.loads((out / "sft_log.json").read_text())[0]
    assert head["data_checks"] == checks and head["data"] == str((tmp_path / "d.jsonl").resolve())
    assert head["model"] == config.model and head["settings"]["max_length"] == 512 and head["rows"] == 10


def test_clean_cold_start_rows_train_without_a_warning(tmp_path, recwarn):
    config = ColdStartConfig(num_samples=4, teacher="reasoner", teacher_policy="scripted", samples_per_prompt=1,
                             env_kwargs={"max_user_history": 2, "max_item_history": 1}, output=str(tmp_path / "d.jsonl"))
    run_cold_start(config)
    trainer = build_sft_trainer(SFTTrainConfig(data=config.output, output_dir=str(tmp_path / "sft"), max_length=2048),
                                tiny_model(), tiny_tokenizer())
    assert not [w for w in recwarn if "SFT data" in str(w.message)]
    checks = trainer.sft_data["data_checks"]
    assert checks["answers_checked"] == trainer.sft_data["rows"] > 0 and checks["format_broken"] == 0


def interrupting_trainer(monkeypatch, at_step: int) -> None:
    """Make the SFT trainer raise KeyboardInterrupt (Ctrl-C) when it starts step ``at_step + 1``."""
    from recgym.agents import sft

    make = sft._completion_logits_sft_trainer

    def interrupted():
        class Interrupted(make()):
            def training_step(self, *args, **kwargs):
                if self.state.global_step == at_step:
                    raise KeyboardInterrupt
                return super().training_step(*args, **kwargs)

        return Interrupted

    monkeypatch.setattr(sft, "_completion_logits_sft_trainer", interrupted)


def test_ctrl_c_without_a_checkpoint_says_so_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    data = write_jsonl(tmp_path / "d.jsonl", [sft_row()])
    config = SFTTrainConfig(data=data, output_dir=str(tmp_path / "sft"), max_steps=4, max_length=256)
    interrupting_trainer(monkeypatch, at_step=2)
    with pytest.raises(KeyboardInterrupt):
        train_sft(config, tiny_model(), tiny_tokenizer())
    assert "SFT interrupted at step 2 of 4: nothing was saved (save_steps 0 saves none)" in capsys.readouterr().err
    assert not (tmp_path / "sft").exists()


def test_save_steps_checkpoints_let_an_interrupted_sft_resume(tmp_path, monkeypatch, capsys):
    """save_strategy was "no": an interrupted SFT lost every step. Now HF Trainer checkpoints every
    save_steps and resume continues from the newest; they are removed once the run finishes."""
    data = write_jsonl(tmp_path / "d.jsonl", [sft_row(), sft_row(trace(2))])
    out = tmp_path / "sft"
    config = SFTTrainConfig(data=data, output_dir=str(out), max_steps=4, max_length=256, save_steps=2,
                            per_device_train_batch_size=1, lr_scheduler_type="constant")
    interrupting_trainer(monkeypatch, at_step=3)
    with pytest.raises(KeyboardInterrupt):
        train_sft(config, tiny_model(), tiny_tokenizer())
    assert f"SFT interrupted at step 3 of 4: its newest checkpoint is {out / 'checkpoint-2'}" in capsys.readouterr().err
    assert not (out / "sft_log.json").exists() and not (out / "config.json").exists()
    monkeypatch.undo()
    from recgym.agents.sft import check_sft_output_dir

    with pytest.raises(ValueError, match="holds an interrupted SFT run .*continue it with --resume"):
        check_sft_output_dir(config)
    with pytest.raises(ValueError, match=r"other settings \(learning_rate: 1e-05 -> 0.1\)"):
        check_sft_output_dir(dataclasses.replace(config, learning_rate=0.1), resume=True)
    train_sft(config, tiny_model(), tiny_tokenizer(), resume=True)
    log = json.loads((out / "sft_log.json").read_text())
    assert [e["step"] for e in log[1:] if "loss" in e] == [1, 2, 3, 4]  # steps 1-2 from the checkpoint's history
    assert not list(out.glob("checkpoint-*")) and (out / "config.json").is_file()
    assert log[0]["data_sha256"] == hashlib.sha256(Path(data).read_bytes()).hexdigest()
    assert not (out / "sft_data.sha256").exists()  # for resume only


def test_resume_refuses_a_changed_data_file(tmp_path, monkeypatch):
    """Resume checked the settings, the data path among them, but not the file: rows edited or
    appended in between trained the rest of the run on other data, silently."""
    from recgym.agents.sft import check_sft_output_dir

    data = write_jsonl(tmp_path / "d.jsonl", [sft_row(), sft_row(trace(2))])
    out = tmp_path / "sft"
    config = SFTTrainConfig(data=data, output_dir=str(out), max_steps=4, max_length=256, save_steps=2,
                            per_device_train_batch_size=1)
    interrupting_trainer(monkeypatch, at_step=3)
    with pytest.raises(KeyboardInterrupt):
        train_sft(config, tiny_model(), tiny_tokenizer())
    assert check_sft_output_dir(config, resume=True) == out / "checkpoint-2"
    write_jsonl(tmp_path / "d.jsonl", [sft_row(), sft_row(trace(4))])
    with pytest.raises(ValueError, match=r"d.jsonl changed since .*checkpoint-2 was trained from it"):
        check_sft_output_dir(config, resume=True)


def test_a_failed_save_leaves_no_folder_that_looks_finished(tmp_path):
    """The weights went straight into output_dir: a save killed half way left config.json and weights
    there, which GRPO's `--model` took for a checkpoint."""
    data = write_jsonl(tmp_path / "d.jsonl", [sft_row()])
    config = SFTTrainConfig(data=data, output_dir=str(tmp_path / "sft"), max_steps=1, max_length=256)

    class BrokenSave(type(tiny_tokenizer())):
        def save_pretrained(self, *args, **kwargs):
            raise OSError("disk full")

    tokenizer = copy.deepcopy(tiny_tokenizer())
    tokenizer.__class__ = BrokenSave
    with pytest.raises(OSError, match="disk full"):
        train_sft(config, tiny_model(), tokenizer)
    assert not (tmp_path / "sft" / "config.json").exists() and not (tmp_path / "sft" / "sft_log.json").exists()
    assert not list(tmp_path.glob(".tmp-*"))


def test_train_sft_replaces_its_own_run_but_never_another_folder(tmp_path):
    from recgym.agents.sft import check_sft_output_dir

    data = write_jsonl(tmp_path / "d.jsonl", [sft_row()])
    config = SFTTrainConfig(data=data, output_dir=str(tmp_path / "sft"), max_steps=1, max_length=256)
    out = train_sft(config, tiny_model(), tiny_tokenizer())
    first = (out / "sft_log.json").stat().st_mtime_ns
    with pytest.raises(ValueError, match="holds a finished SFT checkpoint: choose another output_dir, or give --overwrite"):
        check_sft_output_dir(config)
    train_sft(config, tiny_model(), tiny_tokenizer())  # the library call replaces its own earlier run
    assert (out / "sft_log.json").stat().st_mtime_ns > first
    (tmp_path / "grpo" / "checkpoints").mkdir(parents=True)
    (tmp_path / "grpo" / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    for folder, words in (("grpo", "holds a GRPO run"), ("mine", "is not empty and holds no SFT run")):
        with pytest.raises(ValueError, match=words):
            train_sft(dataclasses.replace(config, output_dir=str(tmp_path / folder)), tiny_model(), tiny_tokenizer())
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me" and (tmp_path / "grpo" / "metrics.jsonl").exists()
