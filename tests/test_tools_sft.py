"""RecOne's multi-turn cold start: scripted tool-agent episodes as SFT data, the loss on the
assistant's own turns only (the GRPO trainer's mask), and a checkpoint the tool env plays."""

from __future__ import annotations

import dataclasses
import json

import gymnasium as gym
import numpy as np
import pytest
from tiny_lm import tiny_model, tiny_tokenizer

import recgym  # noqa: F401
from recgym.agents.sft import SFTTrainConfig, build_sft_trainer, train_sft
from recgym.agents.sft_data import episode_tokens
from recgym.agents.teachers.cold_start import ColdStartConfig, run_cold_start

PROMPT = [{"role": "system", "content": "Rate items. Call tools as <call>name()</call>."},
          {"role": "user", "content": "The target item: Title: Limi Garden. How will this user rate it?"}]
CALL = "I should look at similar items. <call>similar_items(limit=2)</call>"
RESULT = "Result of similar_items(limit=2):\n1. \"Kora\" rated 4. (similarity 0.91)\n2. \"Saba\" rated 2. (similarity 0.40)"
ANSWER = ("<analyze user>Likes Kora.</analyze user><analyze item>Close to Kora.</analyze item>"
          "<match>Alike.</match><rate>4</rate>")
EPISODE = [{"role": "assistant", "content": CALL}, {"role": "user", "content": RESULT},
           {"role": "assistant", "content": ANSWER}]


def token_spans(ids: list[int], text: str, part: str) -> set[int]:
    """Positions of the tokens of ``ids`` whose decoded characters overlap ``part`` inside ``text``."""
    tok = tiny_tokenizer()
    begin = text.index(part)
    end = begin + len(part)
    starts = [len(tok.decode(ids[:i])) for i in range(len(ids) + 1)]
    return {i for i in range(len(ids)) if starts[i] < end and starts[i + 1] > begin}


def write_rows(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_two_turn_episode_mask_keeps_assistant_turns_and_drops_prompt_and_tool_result(tmp_path):
    tok = tiny_tokenizer()
    data = tmp_path / "episodes.jsonl"
    write_rows(data, [{"prompt": PROMPT, "completion": EPISODE}] * 2)
    config = SFTTrainConfig(data=str(data), output_dir=str(tmp_path / "sft"), max_steps=1, max_length=1024)
    trainer = build_sft_trainer(config, tiny_model(), tok)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    text = tok.decode(ids)
    # the conversation is the chat template's rendering (the rollout's layout ends at the last EOS)
    assert tok.apply_chat_template(PROMPT + EPISODE, tokenize=False).startswith(text)
    labelled = {i for i, label in enumerate(labels) if label != -100}
    call, answer = token_spans(ids, text, CALL), token_spans(ids, text, ANSWER)
    eos = {max(call) + 1, max(answer) + 1}
    assert all(ids[i] == tok.eos_token_id for i in eos)
    assert labelled == call | answer | eos  # every assistant token and its EOS; nothing else
    for part in (PROMPT[0]["content"], PROMPT[1]["content"], RESULT):
        assert not token_spans(ids, text, part) & labelled
    assert all(labels[i] == ids[i] for i in labelled)


def test_multi_turn_rows_longer_than_max_length_are_skipped(tmp_path):
    long_episode = [*EPISODE[:2], {"role": "assistant", "content": "Thinking. " * 40 + ANSWER}]
    data = tmp_path / "episodes.jsonl"
    write_rows(data, [{"prompt": PROMPT, "completion": EPISODE}, {"prompt": PROMPT, "completion": long_episode}])
    fits = len(episode_tokens(tiny_tokenizer(), PROMPT, EPISODE)[0])
    config = SFTTrainConfig(data=str(data), output_dir=str(tmp_path / "sft"), max_steps=1, max_length=fits)
    trainer = build_sft_trainer(config, tiny_model(), tiny_tokenizer())
    assert len(trainer.train_dataset) == 1 and len(trainer.train_dataset[0]["input_ids"]) == fits  # whole, not cut
    assert trainer.sft_data["rows_skipped_over_max_length"] == 1


def test_episode_tokens_drops_messages_after_the_last_assistant_turn():
    tok = tiny_tokenizer()
    ids, mask = episode_tokens(tok, PROMPT, EPISODE)
    cut_ids, cut_mask = episode_tokens(tok, PROMPT, EPISODE[:2])
    assert RESULT not in tok.decode(cut_ids) and CALL in tok.decode(cut_ids)
    assert cut_ids == ids[: len(cut_ids)] and cut_mask == mask[: len(cut_mask)]
    assert cut_ids[-1] == tok.eos_token_id and cut_mask[-1] == 1


def test_scripted_tool_agent_traces_are_multi_turn_rows(tmp_path):
    out = tmp_path / "tools.jsonl"
    report = run_cold_start(ColdStartConfig(env_id="RecRatingTools-Synthetic-v0", teacher_policy="scripted",
                                            teacher="similar_items", num_samples=12, samples_per_prompt=1,
                                            tolerance=0.5, output=str(out)))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert report.total == 12 and report.rationalized == 0 and len(rows) == report.kept > 0
    for row in rows:
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert [m["role"] for m in row["completion"]] == ["assistant", "user", "assistant"]
        assert "<call>similar_items(limit=3)</call>" in row["completion"][0]["content"]
        assert row["completion"][1]["content"].startswith("Result of similar_items(limit=3)")
        assert abs(row["parsed_rating"] - row["target_rating"]) <= 0.5
        assert row["num_calls"] == 1 and row["provenance"] == "kept" and row["teacher"] == "similar_items"


def test_tool_cold_start_drops_an_episode_whose_earlier_turn_hit_max_new_tokens(tmp_path):
    """A call turn cut by max_new_tokens that the env still ran leaves a trace the model never wrote
    whole: the episode is dropped, though its last turn answered in format."""
    from recgym.agents.teachers.cold_start import make_tool_cold_start_data
    from recgym.agents.types import Completion

    class Teacher:
        def __init__(self, first_finish):
            self.first_finish, self.turn = first_finish, 0

        def generate(self, prompts, n=1, sampling=None):
            self.turn += 1
            text, finish = ("<call>similar_items(limit=2)</call>", self.first_finish) if self.turn == 1 else (ANSWER, "stop")
            return [[Completion(text, [], [], [], finish) for _ in range(n)] for _ in prompts]

    env = gym.make("RecRatingTools-Synthetic-v0", split="train")
    for finish, kept in (("stop", 1), ("length", 0)):
        report = make_tool_cold_start_data(env, Teacher(finish), [0], tmp_path / f"{finish}.jsonl", tolerance=5.0)
        assert (report.kept, report.dropped) == (kept, 1 - kept)
        assert len((tmp_path / f"{finish}.jsonl").read_text().splitlines()) == kept


def test_a_killed_tool_cold_start_keeps_its_rows_and_its_resume_ends_as_the_whole_run(tmp_path):
    """Rows went to ``<output>.tmp``, renamed only at the end: a killed run kept nothing to resume from."""
    from recgym.agents.teachers.cold_start import make_tool_cold_start_data, scripted_teacher

    class KilledAt:
        """The scripted tool agent, raising KeyboardInterrupt at generate call ``call`` (0: never), as a run
        killed part way stops (no process is killed)."""

        def __init__(self, call):
            self.teacher, self.call, self.prompts = scripted_teacher("similar_items"), call, 0

        def generate(self, prompts, n=1, sampling=None):
            self.call -= 1
            if self.call == 0:
                raise KeyboardInterrupt
            self.prompts += len(prompts)
            return self.teacher.generate(prompts, n=n, sampling=sampling)

    env = gym.make("RecRatingTools-Synthetic-v0", split="train")
    whole = make_tool_cold_start_data(env, KilledAt(0), list(range(12)), tmp_path / "whole.jsonl", batch_size=4)
    out = tmp_path / "d.jsonl"
    with pytest.raises(KeyboardInterrupt):  # each batch of 4 episodes: a call turn, an answer turn
        make_tool_cold_start_data(env, KilledAt(3), list(range(12)), out, batch_size=4)
    assert 0 < len(out.read_text().splitlines()) <= 4
    teacher = KilledAt(0)
    resumed = make_tool_cold_start_data(env, teacher, list(range(12)), out, batch_size=4, resume=True)
    assert (resumed.kept, resumed.dropped, resumed.earlier) == (whole.kept, whole.dropped, 4)
    assert teacher.prompts == 2 * 8  # the two batches left, two turns each
    assert sorted(out.read_text().splitlines()) == sorted((tmp_path / "whole.jsonl").read_text().splitlines())


def test_unknown_scripted_teacher_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from recgym.cli import main

    monkeypatch.delenv("RECGYM_DEBUG", raising=False)
    with pytest.raises(ValueError, match="unknown scripted teacher 'nope'; choose one of similar_items"):
        run_cold_start(ColdStartConfig(env_id="RecRatingTools-Synthetic-v0", teacher_policy="scripted",
                                       teacher="nope", num_samples=1, output=str(tmp_path / "x.jsonl")))
    assert main(["sft", "make-data", "--env_id", "RecRatingTools-Synthetic-v0", "--teacher_policy", "scripted",
                 "--teacher", "nope", "--output", str(tmp_path / "x.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("recgym sft: error: unknown scripted teacher 'nope'") and "\n" not in err
    assert not (tmp_path / "x.jsonl").exists()


def test_sft_on_scripted_tool_traces_gives_a_checkpoint_the_tool_env_plays(tmp_path):
    from recgym.agents.evaluation import evaluate
    from recgym.agents.policies import make_policy
    from recgym.agents.types import SamplingParams

    data = tmp_path / "tools.jsonl"
    run_cold_start(ColdStartConfig(env_id="RecRatingTools-Synthetic-v0", teacher_policy="scripted",
                                   teacher="similar_items", num_samples=6, samples_per_prompt=1, tolerance=5.0,
                                   output=str(data)))
    config = SFTTrainConfig(data=str(data), output_dir=str(tmp_path / "sft"), max_steps=12, learning_rate=1e-2,
                            per_device_train_batch_size=2, max_length=1024, lr_scheduler_type="constant")
    out = train_sft(config, tiny_model(), tiny_tokenizer())
    losses = [e["loss"] for e in json.loads((out / "sft_log.json").read_text()) if "loss" in e]
    assert len(losses) == 12 and np.isfinite(losses).all() and losses[-1] < 0.7 * losses[0]
    env = gym.make("RecRatingTools-Synthetic-v0", split="valid", max_turns=2)
    result = evaluate(env, make_policy("hf", str(out)), n=2, batch_size=2, baselines=False,
                      sampling=SamplingParams(temperature=0.0, max_new_tokens=4))
    assert result.metrics.n == 2 and result.episode_stats["turns_mean"] >= 1
    assert all(len(r["turns"]) == 1 for r in result.records)


def test_recone_tools_entry_measures_base_sft_and_grpo_on_the_same_samples_then_reuses_them(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "tools_comparison.py"
    spec = importlib.util.spec_from_file_location("tools_comparison", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    base = tmp_path / "tiny"
    tiny_model().save_pretrained(base)
    tiny_tokenizer().save_pretrained(base)
    settings = module.RecOneToolsSettings(
        base_model=str(base), policy="hf", n=3, cold_start_samples=4, tolerance=5.0,
        sft_epochs=1.0, eval_batch_size=3, output=str(tmp_path / "summary.json"),
        grpo_overrides={"policy_kwargs": {}, "model": str(tmp_path / "sft"), "output_dir": str(tmp_path / "grpo"), "max_steps": 1,
                        "group_size": 2, "prompts_per_step": 1, "micro_batch_size": 2, "max_new_tokens": 4,
                        "eval_size": 1, "eval_max_new_tokens": 4, "eval_interval": 0, "dtype": "float32",
                        "live_display": False, "plot": False})
    summary = module.recone_tools(settings, count=lambda text: len(text.split()))
    rows = summary["rows"]
    assert [r["agent"] for r in rows[:4]] == ["SmolLM2 base, tools", "after multi-turn SFT, tools",
                                              "after SFT + 1 GRPO steps, tools", "tools: similar_items(limit=3), then rate"]
    assert all(r["n"] == 3 and r["tool_calls"] is not None for r in rows[:4])
    assert any(r["agent"].startswith("single turn") for r in rows)
    pairs = {(c["a"], c["b"]) for c in summary["paired"]}
    assert (rows[0]["agent"], rows[1]["agent"]) in pairs and (rows[1]["agent"], rows[2]["agent"]) in pairs
    assert all(np.isfinite(c["se"]) for c in summary["paired"])
    assert json.loads((tmp_path / "summary.json").read_text())["rows"] == rows
    assert (tmp_path / "sft" / "config.json").exists()

    # a rerun reuses the finished evaluations (no training), and adds a trained single-turn run's rows
    trained_at = (tmp_path / "sft" / "config.json").stat().st_mtime_ns
    single = hand_made_demo_run(tmp_path / "single", tmp_path / "eval_grpo.jsonl", n=3)
    again = module.recone_tools(dataclasses.replace(settings, single_turn_run=str(single)),
                                count=lambda text: len(text.split()))
    assert (tmp_path / "sft" / "config.json").stat().st_mtime_ns == trained_at
    assert again["rows"][:len(rows)] == rows
    extra = again["rows"][len(rows):]
    assert [r["agent"].split(": ")[1].split(" (")[0] for r in extra] == ["after SFT", "after SFT + 2 GRPO steps"]
    assert [r["mae"] for r in extra] == pytest.approx([0.5, 0.25]) and extra[0]["tool_calls"] == 0.0
    assert (extra[1]["agent"], rows[2]["agent"]) in {(c["a"], c["b"]) for c in again["paired"]}

    # a change to the GRPO stage alone trains it again from the saved SFT checkpoint
    grpo_metrics = tmp_path / "grpo" / "metrics.jsonl"
    grpo_before = grpo_metrics.stat().st_mtime_ns
    retrained = module.recone_tools(
        dataclasses.replace(settings, grpo_overrides={**settings.grpo_overrides, "learning_rate": 1e-4}),
        count=lambda text: len(text.split()))
    assert (tmp_path / "sft" / "config.json").stat().st_mtime_ns == trained_at
    assert grpo_metrics.stat().st_mtime_ns > grpo_before
    assert retrained["rows"][:2] == rows[:2] and retrained["grpo_config"]["learning_rate"] == 1e-4

    # other settings of the base or SFT rows in the same folder are refused, not mixed with them
    with pytest.raises(module.CommandError, match="other settings"):
        module.recone_tools(dataclasses.replace(settings, sft_epochs=2.0), count=lambda text: len(text.split()))
    # a single-turn run on other samples is refused
    short = hand_made_demo_run(tmp_path / "short", tmp_path / "eval_grpo.jsonl", n=2)
    with pytest.raises(module.CommandError, match="--eval_size 3"):
        module.recone_tools(dataclasses.replace(settings, single_turn_run=str(short)), count=lambda text: len(text.split()))


def hand_made_demo_run(folder, tool_eval, n):
    """A demo run folder as ``python -m recgym.demo --env_id RecRating-SyntheticLong-v0`` writes it:
    its SFT predictions 0.5 off the truth, its GRPO predictions 0.25 off, on the tool run's first ``n``."""
    from recgym.agents.config import GRPOConfig
    from recgym.demo import write_predictions

    truth = sorted(({"index": r["index"], "target": r["target"]} for r in map(json.loads, tool_eval.read_text().splitlines())),
                   key=lambda r: r["index"])[:n]
    (folder / "grpo").mkdir(parents=True)
    GRPOConfig(env_id="RecRating-SyntheticLong-v0", env_kwargs={"max_user_history": 4, "max_item_history": 0},
               eval_split="valid", output_dir=str(folder / "grpo")).to_yaml(folder / "grpo" / "config.yaml")
    (folder / "grpo" / "metrics.jsonl").write_text("".join(json.dumps({"step": k, "reward": 1.0}) + "\n" for k in (1, 2)))
    (folder / "summary.json").write_text(json.dumps({"rows": [{"name": name, "coverage": 1.0, "format_rate": 1.0}
                                                              for name in ("base", "sft", "grpo")]}))
    write_predictions(folder / "predictions.jsonl", {
        stage: [{**r, "prediction_or_fallback": r["target"] + off} for r in truth]
        for stage, off in (("sft", 0.5), ("grpo", -0.25))})
    return folder


def test_scripted_teachers_take_either_spelling_everywhere(tmp_path):
    """The demo and reproduce configs spelled ``user-average`` where ``recgym sft make-data`` and
    ``recgym eval --policy scripted`` took only ``user_average``: one name, either separator."""
    from recgym.agents.teachers.cold_start import scripted_teacher
    from recgym.agents.teachers.scripted import SimilarItemsToolPolicy, UserAveragePolicy
    from recgym.cli import main

    assert isinstance(scripted_teacher("user-average"), UserAveragePolicy)
    assert isinstance(scripted_teacher("similar-items"), SimilarItemsToolPolicy)
    out = tmp_path / "x.jsonl"
    assert main(["sft", "make-data", "--env_id", "RecRating-Synthetic-v0", "--teacher_policy", "scripted",
                 "--teacher", "user-average", "--num_samples", "4", "--output", str(out)]) == 0
    assert out.exists()


def test_data_checks_read_a_tool_episodes_final_answer(tmp_path):
    """The tool env's answer is the episode's last assistant turn: checked by the env's reward, the
    call turns before it are not answers."""
    tool_env = {"env_id": "RecRatingTools-Synthetic-v0"}
    broken = [*EPISODE[:2], {"role": "assistant", "content": "I think a 4."}]
    data = tmp_path / "episodes.jsonl"
    write_rows(data, [{"prompt": PROMPT, "completion": EPISODE, **tool_env},
                      {"prompt": PROMPT, "completion": broken, **tool_env}])
    config = SFTTrainConfig(data=str(data), output_dir=str(tmp_path / "sft"), max_steps=1, max_length=1024)
    with pytest.warns(UserWarning, match="of 2 rows, 1 break the env's answer format"):
        trainer = build_sft_trainer(config, tiny_model(), tiny_tokenizer())
    checks = trainer.sft_data["data_checks"]
    assert (checks["answers_checked"], checks["format_broken"], checks["env_ids"]) == (2, 1, {tool_env["env_id"]: 2})
