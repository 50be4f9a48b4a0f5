"""recgym environments in verl: the exported parquet through verl's RLHFDataset, the custom reward
through verl's naive reward manager, the tool environment through verl's multi-turn request, tool
and interaction classes (the SGLang engine that drives them needs a GPU), and the example
config's keys against verl's own ppo_trainer.yaml. CPU only, the embedded model's tokenizer."""

from __future__ import annotations

import asyncio
import json
import re
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

verl = pytest.importorskip("verl", reason="verl is not installed: pip install 'recgym[verl]'")

import torch
import yaml
from omegaconf import OmegaConf

import recgym  # noqa: F401  (registers the environments)
from recgym.cli import main as cli
from recgym.integrations.verl import SPLIT_FILES, compute_score, export_rows
from recgym.rewards import FOUR_STEP_TAGS

ROOT = Path(__file__).resolve().parents[1]
VERL_CONFIG = Path(verl.__file__).parent / "trainer" / "config"
ENV = "RecRating-Synthetic-v0"
TOOLS_ENV = "RecRatingTools-Synthetic-v0"
MOVIELENS = ROOT.parent / "shared" / "data" / "movielens_ml-latest-small"


def answer(rating: str, steps: tuple[str, ...] = ("likes it", "fine", "ok")) -> str:
    return "".join(f"<{t}>{x}</{t}>" for t, x in zip(FOUR_STEP_TAGS, (*steps, rating)))


COMPLETIONS = [answer("4"), answer("1.5"), answer("9"), "no tags, 3 stars", answer("2") + " trailing", ""]


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from recgym.agents.models import model_path

    return AutoTokenizer.from_pretrained(model_path("smollm2-135m-instruct"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("verl")
    assert cli(["export", "verl", "--env", ENV, "--out", str(out), "-n", "6", "--quiet"]) == 0
    return out


def test_export_writes_verls_layout(exported):
    assert sorted(p.name for p in exported.iterdir()) == ["recgym_export.json", "train.parquet", "validation.parquet"]
    frame = pd.read_parquet(exported / "train.parquet")
    assert list(frame.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"]
    env = gym.make(ENV, split="train")
    for _, row in frame.iterrows():
        extra = row["extra_info"]
        _, info = env.reset(options={"index": int(extra["index"])})
        assert row["data_source"] == ENV and extra["env_id"] == ENV and extra["split"] == "train"
        assert [dict(m) for m in row["prompt"]] == info["messages"]
        assert row["reward_model"]["style"] == "rule"
        assert row["reward_model"]["ground_truth"] == env.unwrapped.dataset.target("train", int(extra["index"]))
        assert (extra["scale_low"], extra["scale_high"], extra["scale_step"]) == (1.0, 5.0, 1.0)
        assert extra["user_id"] == info["user_id"] and extra["item_id"] == info["item_id"]


@pytest.mark.parametrize("argv", [
    ["--env", "RecRating-Nope-v0"], ["--env", ENV, "--env-kwargs", "[1]"], ["--env", ENV, "-n", "0"],
    ["--env", ENV, "--seed", "-1"], ["--env", ENV, "--env-kwargs", '{"split": "test"}'],
])
def test_export_bad_input_is_one_line(argv, tmp_path, capsys):
    assert cli(["export", "verl", *argv, "--out", str(tmp_path / "out")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("recgym export: error: ")
    assert not list(tmp_path.iterdir())


def _rank_answer(order) -> str:
    return ("<analyze user>a</analyze user><analyze candidates>b</analyze candidates><match>c</match>"
            f"<rank>{' '.join(f'[{j + 1}]' for j in order)}</rank>")


def test_ranking_export_scores_like_env_step(tmp_path):
    rank_env = "RecRank-Synthetic-v0"
    out = tmp_path / "rank"
    assert cli(["export", "verl", "--env", rank_env, "--out", str(out), "-n", "3", "--quiet", "--splits", "test"]) == 0
    frame = pd.read_parquet(out / SPLIT_FILES["test"])
    env = gym.make(rank_env, split="test")
    rewards = set()
    for _, row in frame.iterrows():
        extra = dict(row["extra_info"])
        assert extra["num_candidates"] == 20 and row["reward_model"]["ground_truth"] == extra["target_position"]
        n = extra["num_candidates"]
        for completion in (_rank_answer(range(n)), _rank_answer(reversed(range(n))), _rank_answer(range(n - 1)),
                           "[1] [2]", ""):
            env.reset(options={"index": int(extra["index"])})
            _, reward, _, _, info = env.step(completion)
            score = compute_score(row["data_source"], completion, row["reward_model"]["ground_truth"], extra)
            assert score == {"score": pytest.approx(reward), "format": info["reward_breakdown"]["format"],
                             "ndcg": pytest.approx(info["reward_breakdown"]["ndcg"])}
            rewards.add(round(reward, 6))
    assert len(rewards) > 3  # the completions span formats and ranks


def _custom_csv(root: Path) -> Path:
    root.mkdir(parents=True)
    lines = ["user,item,rating,timestamp"] + [f"u{u},i{(u + k) % 7},{1 + (u * k) % 5},{1000 * k + u}"
                                              for u in range(6) for k in range(5)]
    (root / "r.csv").write_text("\n".join(lines) + "\n")
    return root / "r.csv"


@pytest.mark.parametrize("how", ["env-kwargs", "RECGYM_DATA_DIR", "custom path"])
def test_export_stores_absolute_paths(how, tmp_path, monkeypatch):
    """Relative paths (and the data folder that $RECGYM_DATA_DIR names) are stored absolute: the
    reward (in verl's Ray workers) rebuilds the environment from another working directory."""
    import raw_fixtures as fx

    from recgym.integrations.verl import _env

    (tmp_path / "elsewhere").mkdir()
    raw = tmp_path / "raw"
    env_id, expected = "RecRating-Yelp-v0", {"data_dir": str(raw / "yelp"), "cache_dir": str(raw / "c")}
    if how == "custom path":
        _custom_csv(raw)
        columns = {"user": "user", "item": "item", "rating": "rating", "timestamp": "timestamp"}
        env_id, kwargs = "RecRating-Custom-v0", {"path": "r.csv", "columns": columns}
        expected = {**kwargs, "path": str(raw / "r.csv"), "cache_dir": expected["cache_dir"]}
    else:
        fx.yelp(raw / "yelp")
        kwargs = {"data_dir": "yelp"} if how == "env-kwargs" else {}
        if how == "RECGYM_DATA_DIR":
            monkeypatch.setenv("RECGYM_DATA_DIR", ".")
    monkeypatch.chdir(raw)
    assert cli(["export", "verl", "--env", env_id, "--env-kwargs", json.dumps({**kwargs, "cache_dir": "c"}),
                "--out", "out", "--splits", "test", "--quiet"]) == 0
    row = pd.read_parquet("out/test.parquet").iloc[0]
    extra = dict(row["extra_info"])
    assert json.loads(extra["env_kwargs"]) == expected
    monkeypatch.chdir(tmp_path / "elsewhere")
    monkeypatch.delenv("RECGYM_DATA_DIR", raising=False)
    _env.cache_clear()  # as in a fresh worker process
    score = compute_score(row["data_source"], answer("4"), row["reward_model"]["ground_truth"], extra)
    env = gym.make(env_id, split="test", **expected)
    env.reset(options={"index": int(extra["index"])})
    assert score["score"] == pytest.approx(env.step(answer("4"))[1])


def test_export_skip_bad_records_reaches_the_loader(tmp_path, capsys):
    import raw_fixtures as fx

    raw = fx.yelp(tmp_path / "yelp")
    with (raw / "yelp_academic_dataset_review.json").open("a") as f:
        f.write("{not json\n")
    common = ["export", "verl", "--env", "RecRating-Yelp-v0", "--data-dir", str(raw), "--splits", "test", "--quiet",
              "--cache-dir", str(tmp_path / "cache")]
    assert cli([*common, "--out", str(tmp_path / "strict")]) == 2
    assert "--skip-bad-records" in capsys.readouterr().err
    assert cli([*common, "--out", str(tmp_path / "out"), "--skip-bad-records"]) == 0
    extra = pd.read_parquet(tmp_path / "out" / "test.parquet").iloc[0]["extra_info"]
    assert json.loads(extra["env_kwargs"])["skip_bad_records"] is True


def test_export_refuses_to_mix_with_another_exports_files(tmp_path, capsys):
    out = tmp_path / "out"

    def export(*argv: str) -> int:
        return cli(["export", "verl", "--out", str(out), "--quiet", "-n", "2", *argv])

    assert export("--env", ENV, "--splits", "train", "valid", "test") == 0
    assert export("--env", ENV, "--splits", "train") == 2  # would leave the first export's valid and test
    assert export("--env", "RecRank-Synthetic-v0", "--splits", "train", "valid", "test") == 2
    assert export("--env", ENV, "--splits", "train", "valid", "test", "--env-kwargs", '{"max_user_history": 3}') == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all("use another --out, or remove its .parquet files" in e for e in errors)
    assert "test.parquet, validation.parquet" in errors[0] and "an export of RecRating-Synthetic-v0" in errors[1]
    assert export("--env", ENV, "--splits", "test", "valid", "train", "-n", "3") == 0  # the same env again
    assert {len(pd.read_parquet(p)) for p in out.glob("*.parquet")} == {3}
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    pd.DataFrame({"x": [1]}).to_parquet(foreign / "train.parquet")
    assert cli(["export", "verl", "--env", ENV, "--out", str(foreign), "--quiet", "-n", "2"]) == 2
    assert "not written by `recgym export verl`" in capsys.readouterr().err
    assert pd.read_parquet(foreign / "train.parquet").columns.tolist() == ["x"]


def test_rlhf_dataset_gives_the_envs_prompt_ids(exported, tokenizer, tmp_path):
    from verl.utils.dataset.rl_dataset import RLHFDataset

    config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 4096, "return_raw_chat": True,
                               "filter_overlong_prompts": False, "cache_dir": str(tmp_path)})
    dataset = RLHFDataset(str(exported / SPLIT_FILES["valid"]), tokenizer, config)
    env = gym.make(ENV, split="valid")
    assert len(dataset) == 6
    for item in dataset:
        _, info = env.reset(options={"index": int(item["extra_info"]["index"])})
        expected = tokenizer.apply_chat_template(info["messages"], add_generation_prompt=True, tokenize=False)
        expected_ids = tokenizer(expected, add_special_tokens=False)["input_ids"]
        ids = item["input_ids"][item["attention_mask"].bool()].tolist()
        assert ids == expected_ids
        assert list(item["raw_prompt"]) == info["messages"]


def _prompt_tokens(tokenizer, messages) -> int:
    """The prompt's length as verl's ``RLHFDataset.__getitem__`` measures it."""
    text = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_export_drops_prompts_over_max_prompt_tokens_and_verl_then_sees_none(tokenizer, tmp_path, capsys):
    """verl 0.4.1's filter_overlong_prompts keeps every row under transformers 5 (its length is that
    of a BatchEncoding), so with ``truncation: error`` the first over-long prompt ended the run."""
    from verl.utils.dataset.rl_dataset import RLHFDataset

    common = ["export", "verl", "--env", ENV, "-n", "8", "--quiet"]
    assert cli([*common, "--out", str(tmp_path / "all")]) == 0
    frames = {s: pd.read_parquet(tmp_path / "all" / SPLIT_FILES[s]) for s in ("train", "valid")}
    lengths = {s: [_prompt_tokens(tokenizer, p) for p in f["prompt"]] for s, f in frames.items()}
    limit = sorted(lengths["train"] + lengths["valid"])[10]
    kept = {s: [i for i, n in enumerate(lengths[s]) if n <= limit] for s in lengths}
    assert all(kept.values()) and len(kept["train"] + kept["valid"]) < 16  # some rows dropped, none of the splits empty
    capsys.readouterr()
    out = tmp_path / "short"
    assert cli([*common, "--out", str(out), "--max-prompt-tokens", str(limit)]) == 0
    dropped = {s: 8 - len(kept[s]) for s in kept}
    printed = " ".join(capsys.readouterr().out.split())
    assert f"over {limit} tokens" in printed and f"train {dropped['train']}, valid {dropped['valid']}" in printed
    manifest = json.loads((out / "recgym_export.json").read_text())
    assert manifest["max_prompt_tokens"] == limit and manifest["tokenizer"] == "smollm2-135m-instruct"
    assert manifest["dropped"] == dropped
    for split in ("train", "valid"):
        frame = pd.read_parquet(out / SPLIT_FILES[split])
        expected = frames[split]["extra_info"].iloc[kept[split]]
        assert [e["index"] for e in frame["extra_info"]] == [e["index"] for e in expected]
        # the shipped data block (filter_overlong_prompts, truncation: error) reads every row
        data = OmegaConf.load(ROOT / "examples" / "configs" / "verl_grpo_yelp.yaml").data
        data.max_prompt_length, data.cache_dir = limit, str(tmp_path / "cache")
        dataset = RLHFDataset(str(out / SPLIT_FILES[split]), tokenizer, data)
        assert len(dataset) == len(kept[split])
        assert max(int(item["attention_mask"].sum()) for item in dataset) <= limit


def test_export_with_every_prompt_over_max_prompt_tokens_is_one_line_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli(["export", "verl", "--env", ENV, "-n", "2", "--quiet", "--out", str(out),
                "--max-prompt-tokens", "5"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "over 5 tokens" in errors[0] and "--max-prompt-tokens" in errors[0]
    assert not out.exists() or not list(out.iterdir())


@pytest.mark.parametrize(("argv", "words"), [
    (["--max-prompt-tokens", "0"], "--max-prompt-tokens must be >= 1"),
    (["--tokenizer", "smollm2-135m-instruct"], "--tokenizer counts prompt tokens for --max-prompt-tokens"),
    (["--max-prompt-tokens", "9", "--tokenizer", "/nowhere/model"], "'/nowhere/model' not found"),
])
def test_export_max_prompt_tokens_bad_input_is_one_line(argv, words, tmp_path, capsys):
    assert cli(["export", "verl", "--env", ENV, "--out", str(tmp_path / "out"), *argv]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and words in errors[0]
    assert not list(tmp_path.iterdir())


def test_an_interrupted_reexport_leaves_the_previous_export_whole(tmp_path, monkeypatch):
    """A Ctrl-C while the second split was written left the new train.parquet beside the old
    validation.parquet, and a manifest describing the new export."""
    import recgym.integrations.verl as integration

    out = tmp_path / "out"
    assert cli(["export", "verl", "--env", ENV, "--out", str(out), "-n", "5", "--quiet"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = integration.export_rows

    def interrupted(env_id, split, **kwargs):
        if split == "valid":
            raise KeyboardInterrupt
        return real(env_id, split, **kwargs)

    monkeypatch.setattr(integration, "export_rows", interrupted)
    assert cli(["export", "verl", "--env", ENV, "--out", str(out), "-n", "8", "--seed", "3", "--quiet"]) == 130
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    fresh = tmp_path / "fresh"
    assert cli(["export", "verl", "--env", ENV, "--out", str(fresh), "-n", "2", "--quiet"]) == 130
    assert not fresh.exists() or not list(fresh.iterdir())


def _naive_manager(tokenizer):
    from verl.trainer.ppo.reward import load_reward_manager

    config = OmegaConf.create({
        "reward_model": {"reward_manager": "naive"},
        "data": {"reward_fn_key": "data_source"},
        "custom_reward_function": {"path": str(ROOT / "recgym" / "integrations" / "verl.py"), "name": "compute_score"},
    })
    return load_reward_manager(config, tokenizer, num_examine=0)


def _batch(tokenizer, rows, prompts_ids, responses):
    """A DataProto as verl's rollout leaves it: left-padded prompts, right-padded responses."""
    from verl import DataProto

    pad = tokenizer.pad_token_id
    response_ids = [tokenizer(r, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for r in responses]
    p_len, r_len = max(map(len, prompts_ids)), max(map(len, response_ids))
    prompts = torch.tensor([[pad] * (p_len - len(p)) + p for p in prompts_ids])
    resp = torch.tensor([r + [pad] * (r_len - len(r)) for r in response_ids])
    mask = torch.tensor([[0] * (p_len - len(p)) + [1] * len(p) + [1] * len(r) + [0] * (r_len - len(r))
                         for p, r in zip(prompts_ids, response_ids)])
    non_tensor = {key: np.array([row[key] for row in rows], dtype=object)
                  for key in ("data_source", "reward_model", "extra_info")}
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": resp, "attention_mask": mask,
                 "input_ids": torch.cat([prompts, resp], dim=1)},
        non_tensors=non_tensor,
    ), [len(r) for r in response_ids]


def test_naive_reward_manager_scores_like_env_step(tokenizer):
    rows = export_rows(ENV, "test", num_samples=len(COMPLETIONS))
    prompts_ids = [tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
    prompts_ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts_ids]
    batch, lengths = _batch(tokenizer, rows, prompts_ids, COMPLETIONS)
    result = _naive_manager(tokenizer)(batch, return_dict=True)
    env = gym.make(ENV, split="test")
    expected = []
    for row, completion in zip(rows, COMPLETIONS):
        env.reset(options={"index": row["extra_info"]["index"]})
        _, reward, terminated, _, info = env.step(completion)
        assert terminated
        expected.append((reward, info["reward_breakdown"]))
    tensor = result["reward_tensor"]
    for i, (reward, parts) in enumerate(expected):
        assert tensor[i, lengths[i] - 1].item() == pytest.approx(reward)
        assert tensor[i].sum().item() == pytest.approx(reward)
        assert result["reward_extra_info"]["format"][i] == pytest.approx(parts["format"])
        assert result["reward_extra_info"]["accuracy"][i] == pytest.approx(parts["accuracy"])
    assert len({r for r, _ in expected}) > 3  # the completions span formats and errors


def test_compute_score_without_extra_info_uses_the_data_source():
    env = gym.make(ENV, split="train")
    env.reset(options={"index": 0})
    _, reward, _, _, info = env.step(answer("3"))
    score = compute_score(ENV, answer("3"), info["target_rating"])
    assert score == {"score": pytest.approx(reward), **{k: pytest.approx(info["reward_breakdown"][k])
                                                         for k in ("format", "accuracy")}}


# ---- the tool environment through verl's multi-turn interfaces ----


def _scripted():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from recgym.agents.scripted import SimilarItemsToolPolicy
    return SimilarItemsToolPolicy(limit=3)


def _request(tokenizer, row, tool_schemas=None):
    from verl.workers.rollout.schemas import AsyncRolloutRequest, AsyncRolloutRequestStateEnum

    return AsyncRolloutRequest(
        request_id="req-0", state=AsyncRolloutRequestStateEnum.PENDING, messages=row["prompt"],
        tool_schemas=tool_schemas, tools_kwargs=row["extra_info"]["tools_kwargs"] if tool_schemas else {},
        interaction_kwargs=row["extra_info"]["interaction_kwargs"], input_ids=None, attention_mask=None,
        response_ids=[], response_attention_mask=[], response_position_ids=[], response_loss_mask=[],
        reward_scores={}, max_prompt_len=4096, max_response_len=4096, max_model_len=8192,
        use_inference_chat_template=False, tokenization_sanity_check_mode="strict", processing_class=tokenizer,
    )


def _env_episode(index: int):
    """The scripted episode straight through the Gymnasium environment."""
    env, policy = gym.make(TOOLS_ENV, split="train"), _scripted()
    observation, _ = env.reset(options={"index": index})
    turns = []
    while True:
        turns.append(policy.act(observation))
        observation, reward, terminated, truncated, info = env.step(turns[-1])
        if terminated or truncated:
            return turns, reward, info


def _decode_and_score(tokenizer, request, row):
    response = tokenizer.decode(request.response_ids, skip_special_tokens=True)  # as the reward manager does
    return compute_score(row["data_source"], response, row["reward_model"]["ground_truth"], row["extra_info"])


def _env_message_mask(tokenizer, request, text):
    """The loss mask over the response tokens of one environment message."""
    ids = request.input_ids[len(request.prompt_ids):]
    mask = request.loss_mask[len(request.prompt_ids):]
    target = tokenizer(text, add_special_tokens=False)["input_ids"][2:-2]
    for start in range(len(ids) - len(target)):
        if ids[start:start + len(target)] == target:
            return mask[start:start + len(target)]
    raise AssertionError("the environment message is not in the response")


def test_tool_episode_through_verls_interaction_sglang_engine_loop_scripted(tokenizer):
    """The environment's own <call> protocol: verl's rollout loop (SGLang, GPU-only) replaced by
    its steps, scripted: assistant message, interaction response as a user message, repeat."""
    from recgym.integrations.verl_tools import RecRatingInteraction

    row = export_rows(TOOLS_ENV, "train", num_samples=3)[2]
    turns, env_reward, env_info = _env_episode(row["extra_info"]["index"])
    assert len(turns) == 2 and env_info["num_calls"] == 1
    request, interaction = _request(tokenizer, row), RecRatingInteraction({"name": "recgym"})
    kwargs = row["extra_info"]["interaction_kwargs"]
    asyncio.run(interaction.start_interaction(request.request_id, **kwargs))
    policy, observation = _scripted(), row["prompt"][-1]["content"]
    results = []
    while True:
        request.get_generation_prompt_ids(tokenizer)
        request.add_assistant_message(tokenizer, policy.act(observation))
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        ended, observation, reward, _ = asyncio.run(interaction.generate_response(request.request_id, messages, **kwargs))
        results.append((ended, observation, reward))
        if ended:
            break
        request.add_user_message(tokenizer, observation)
    request.finalize(tokenizer, {"user_turn_rewards": [r for _, _, r in results]})
    assert results[-1][2] == pytest.approx(env_reward)
    assert set(_env_message_mask(tokenizer, request, results[0][1])) == {0}
    assert 1 in request.response_loss_mask and 0 in request.response_loss_mask
    score = _decode_and_score(tokenizer, request, row)
    assert score["score"] == pytest.approx(env_reward)
    assert score["tool_cost"] == pytest.approx(env_info["reward_breakdown"]["tool_cost"])
    assert score["tool_cost"] < 0
    assert score["format"] == env_info["reward_breakdown"]["format"] and score["num_calls"] == 1


def test_tool_episode_through_verls_native_tools_sglang_engine_loop_scripted(tokenizer):
    """Native function calling: the tools from verl_tool_config.yaml, loaded by verl's own
    initialize_tools_from_config; the call as SGLang's parser leaves it (tool_calls beside the text)."""
    from verl.tools.base_tool import initialize_tools_from_config
    from verl.tools.schemas import OpenAIFunctionCallSchema, OpenAIFunctionToolCall

    tools = {t.name: t for t in initialize_tools_from_config(str(ROOT / "examples/configs/verl_tool_config.yaml"))}
    assert sorted(tools) == sorted(row_tool for row_tool in export_rows(TOOLS_ENV, "train", 1)[0]["extra_info"]["tools_kwargs"])
    row = export_rows(TOOLS_ENV, "train", num_samples=3)[2]
    turns, env_reward, env_info = _env_episode(row["extra_info"]["index"])
    request = _request(tokenizer, row, [t.get_openai_tool_schema() for t in tools.values()])
    for name, tool in tools.items():
        asyncio.run(tool.create(request.request_id, **row["extra_info"]["tools_kwargs"][name]["create_kwargs"]))
    call = re.search(r"<call>(\w+)\(limit=(\d+)\)</call>", turns[0])
    request.get_generation_prompt_ids(tokenizer)
    tool_call = OpenAIFunctionToolCall(id="0", function=OpenAIFunctionCallSchema(
        name=call.group(1), arguments={"limit": int(call.group(2))}))
    request.add_assistant_message(tokenizer, "I should see how this user rated similar items.", tool_calls=[tool_call])
    result, step_reward, _ = asyncio.run(tools[call.group(1)].execute(request.request_id, tool_call.function.arguments))
    request.add_tool_response_messages(tokenizer, [result])
    assert step_reward == 0.0 and result.startswith("Result of similar_items(limit=3):")
    assert set(_env_message_mask(tokenizer, request, result)) == {0}
    request.get_generation_prompt_ids(tokenizer)
    request.add_assistant_message(tokenizer, _scripted().act(result))
    costs = {name: asyncio.run(tool.calc_reward(request.request_id)) for name, tool in tools.items()}
    for tool in tools.values():
        asyncio.run(tool.release(request.request_id))
    request.finalize(tokenizer, costs)
    assert costs[call.group(1)] == pytest.approx(env_info["reward_breakdown"]["tool_cost"])
    score = _decode_and_score(tokenizer, request, row)
    assert score["score"] == pytest.approx(env_reward) and score["num_calls"] == 1


def test_compute_score_replays_hermes_tool_calls():
    """A Qwen2.5-style decoded response: the call in <tool_call> JSON, the result in <tool_response>."""
    row = export_rows(TOOLS_ENV, "train", num_samples=2)[1]
    turns, env_reward, _ = _env_episode(row["extra_info"]["index"])
    env = gym.make(TOOLS_ENV, split="train")
    env.reset(options={"index": row["extra_info"]["index"]})
    result, *_ = env.step(turns[0])
    response = ('Let me look.\n<tool_call>\n{"name": "similar_items", "arguments": {"limit": 3}}\n</tool_call>\n'
                f"user\n<tool_response>\n{result}\n</tool_response>\nassistant\n{turns[1]}\n")
    score = compute_score(row["data_source"], response, row["reward_model"]["ground_truth"], row["extra_info"])
    assert score["score"] == pytest.approx(env_reward) and score["num_calls"] == 1


def test_compute_score_of_a_tool_rollout_without_an_answer_is_truncation():
    row = export_rows(TOOLS_ENV, "train", num_samples=1)[0]
    env = gym.make(TOOLS_ENV, split="train")
    env.reset(options={"index": 0})
    env.step("I am not sure")
    _, reward, _, truncated, info = env.unwrapped.end_episode()
    assert truncated
    score = compute_score(row["data_source"], "I am not sure", row["reward_model"]["ground_truth"], row["extra_info"])
    assert score["score"] == pytest.approx(reward) and score["format"] == info["reward_breakdown"]["format"]


# ---- the example configs ----


def _flatten(tree, prefix=""):
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{path}.")
        else:
            yield path, value


def _has(config, path: str) -> bool:
    node = config
    for part in path.split("."):
        if not OmegaConf.is_dict(node) or part not in node:
            return False
        node = node[part]
    return True


@pytest.mark.parametrize("name", ["verl_grpo_yelp.yaml", "verl_grpo_tools_yelp.yaml"])
def test_example_config_keys_are_verls(name):
    defaults = OmegaConf.load(VERL_CONFIG / "ppo_trainer.yaml")
    config = yaml.safe_load((ROOT / "examples" / "configs" / name).read_text())
    assert config["defaults"][0] == "ppo_trainer"
    keys = dict(_flatten({k: v for k, v in config.items() if k not in ("hydra", "defaults")}))
    unknown = [k for k in keys if not _has(defaults, k)]
    assert not unknown, f"not in verl {verl.__version__}'s ppo_trainer.yaml: {unknown}"
    for key, value in keys.items():
        if key.endswith("_path") or key == "custom_reward_function.path":
            assert (ROOT / value).is_file(), key
    if name == "verl_grpo_yelp.yaml":
        assert keys["custom_reward_function.path"] == "recgym/integrations/verl.py"
        assert keys["custom_reward_function.name"] == "compute_score"
        assert keys["actor_rollout_ref.rollout.n"] == 8 and keys["algorithm.adv_estimator"] == "grpo"
        assert keys["trainer.n_gpus_per_node"] == 8 and keys["trainer.nnodes"] == 1


def test_example_config_composes_with_hydra():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "examples" / "configs"), version_base=None):
        for name in ("verl_grpo_yelp", "verl_grpo_tools_yelp"):
            config = compose(config_name=name, overrides=["trainer.nnodes=2"])
            assert config.actor_rollout_ref.rollout.n == 8 and config.trainer.nnodes == 2
            assert config.actor_rollout_ref.model.path == "Qwen/Qwen2.5-7B-Instruct"
        assert config.actor_rollout_ref.rollout.multi_turn.enable and config.data.return_raw_chat


@pytest.mark.parametrize(("name", "folder"), [("verl_grpo_yelp", "yelp"), ("verl_grpo_tools_yelp", "yelp_tools")])
def test_example_config_data_files_resolve_to_the_home_export(name, folder, tokenizer, tmp_path, monkeypatch):
    """``~/data/...`` in data.train_files reached ``datasets`` unexpanded (a path under the working
    directory): the configs' own launch command could not read the export."""
    from hydra import compose, initialize_config_dir
    from verl.utils.dataset.rl_dataset import RLHFDataset

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    env = TOOLS_ENV if "tools" in name else ENV
    export = tmp_path / "data" / "verl" / folder
    assert cli(["export", "verl", "--env", env, "--out", str(export), "-n", "2", "--quiet"]) == 0
    with initialize_config_dir(str(ROOT / "examples" / "configs"), version_base=None):
        config = compose(config_name=name)
    OmegaConf.resolve(config)  # as verl's TaskRunner.run does
    assert (config.data.train_files, config.data.val_files) == (str(export / "train.parquet"),
                                                                 str(export / "validation.parquet"))
    assert len(RLHFDataset(config.data.val_files, tokenizer, config.data)) == 2  # its cache: under HOME


def test_launch_script_overrides_are_verls():
    defaults = OmegaConf.load(VERL_CONFIG / "ppo_trainer.yaml")
    script = (ROOT / "examples" / "configs" / "verl_grpo_yelp.sh").read_text()
    overrides = set(re.findall(r"\b([a-z_]+(?:\.[a-z_]+)+)=", script))
    assert {"trainer.nnodes", "custom_reward_function.path", "data.train_files"} <= overrides
    assert not [k for k in overrides if not _has(defaults, k)]
    for config in re.findall(r"examples/configs/([\w.]+\.yaml)", script):
        assert (ROOT / "examples" / "configs" / config).is_file()


@pytest.mark.parametrize(("config", "default"), [("verl_grpo_yelp", "yelp"), ("verl_grpo_tools_yelp", "yelp_tools")])
def test_launch_script_reads_the_data_folder_given(config, default, tmp_path):
    """DATA, documented in the script's header, is the export folder for either config (a stub
    ``python`` records what the script would run)."""
    import os
    import subprocess

    script = ROOT / "examples" / "configs" / "verl_grpo_yelp.sh"
    stub = tmp_path / "bin" / "python"
    stub.parent.mkdir()
    record = 'if [ "$1" = -c ]; then echo /reward.py; else printf "%s\\n" "$@" > "$ARGS_OUT"; fi'
    stub.write_text(f"#!/usr/bin/env bash\n{record}\n")
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}", "CONFIG": config, "HOME": str(tmp_path),
           "ARGS_OUT": str(tmp_path / "args")}
    for data, folder in ((tmp_path / "mine", tmp_path / "mine"), (None, tmp_path / "data" / "verl" / default)):
        subprocess.run(["bash", str(script)], env={**env, **({"DATA": str(data)} if data else {})}, check=True)
        args = (tmp_path / "args").read_text().splitlines()
        assert f"--config-name={config}" in args
        assert {f"data.train_files={folder}/train.parquet", f"data.val_files={folder}/validation.parquet"} <= set(args)
    header = [line for line in script.read_text().splitlines() if line.startswith("#")]
    assert {"NNODES", "CONFIG", "DATA"} <= {line.split()[1] for line in header if len(line.split()) > 1}


@pytest.mark.parametrize(("manifest", "overrides", "says"), [
    (None, [], "holds no recgym_export.json"),
    ({"max_prompt_tokens": None, "tokenizer": None}, [], "exported without --max-prompt-tokens"),
    ({"max_prompt_tokens": 4096, "tokenizer": "Qwen/Qwen2.5-7B-Instruct"}, [], "up to 4096 tokens, over data.max_prompt_length 3072"),
    ({"max_prompt_tokens": 3072, "tokenizer": "smollm2-135m-instruct"}, [], "counted with smollm2-135m-instruct's tokenizer"),
    ({"max_prompt_tokens": 3072, "tokenizer": "Qwen/Qwen2.5-7B-Instruct"}, ["data.max_prompt_length=2048"], "over data.max_prompt_length 2048"),
    ({"max_prompt_tokens": 3072, "tokenizer": "/models/q"}, ["actor_rollout_ref.model.path=/models/q"], None),
    ({"max_prompt_tokens": 2048, "tokenizer": "Qwen/Qwen2.5-7B-Instruct"}, ["trainer.nnodes=2"], None),
])
def test_launch_script_refuses_an_export_verl_would_stop_on(manifest, overrides, says, tmp_path):
    """verl 0.4.1 stops at the first prompt over data.max_prompt_length: the launch script checks
    the export's manifest against the config and its overrides before starting verl."""
    import os
    import subprocess
    import sys

    from recgym.commands.export import MANIFEST

    if manifest is not None:
        (tmp_path / MANIFEST).write_text(json.dumps({"env": "RecRating-Yelp-v0", **manifest}))
    stub = tmp_path / "bin" / "python"
    stub.parent.mkdir()
    real = f'if [ "$1" = -m ] && [ "$2" = recgym.commands.export ]; then exec {sys.executable} "$@"; fi'
    stub.write_text(f"#!/usr/bin/env bash\n{real}\n"
                    'if [ "$1" = -c ]; then echo /reward.py; else echo started > "$ARGS_OUT"; fi\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}", "DATA": str(tmp_path),
           "ARGS_OUT": str(tmp_path / "started")}
    done = subprocess.run(["bash", str(ROOT / "examples" / "configs" / "verl_grpo_yelp.sh"), *overrides], env=env,
                          capture_output=True, text=True, cwd=ROOT, check=False)
    if says is None:
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "started").is_file()
    else:
        assert done.returncode == 2 and not (tmp_path / "started").exists()
        assert says in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_tool_config_file_is_the_generated_one():
    from recgym.integrations.verl_tools import tool_config

    assert yaml.safe_load((ROOT / "examples/configs/verl_tool_config.yaml").read_text()) == tool_config()


@pytest.mark.skipif(not MOVIELENS.is_dir(), reason=f"{MOVIELENS} is absent (the shared data folder)")
def test_movielens_export_and_score(tmp_path):
    out = tmp_path / "ml"
    assert cli(["export", "verl", "--env", "RecRating-MovieLens-v0", "--data-dir", str(MOVIELENS),
                "--env-kwargs", f'{{"cache_dir": "{tmp_path}"}}', "--out", str(out), "-n", "3", "--quiet",
                "--splits", "valid"]) == 0
    frame = pd.read_parquet(out / "validation.parquet")
    row = frame.iloc[0]
    score = compute_score(row["data_source"], answer("4"), row["reward_model"]["ground_truth"], dict(row["extra_info"]))
    env = gym.make("RecRating-MovieLens-v0", split="valid", data_dir=str(MOVIELENS), cache_dir=str(tmp_path))
    env.reset(options={"index": int(row["extra_info"]["index"])})
    _, reward, *_ = env.step(answer("4"))
    assert score["score"] == pytest.approx(reward)


def first_is_target(completion, target_position, num_candidates):
    """A custom RecRank reward: 1 when the target is ranked first; no format or ndcg part."""
    from recgym.rewards import RankingReward

    rank = RankingReward()(completion, target_position, num_candidates)["rank_of_target"]
    return {"total": float(rank == 1), "rank_of_target": rank}


@pytest.fixture
def custom_reward_rank_env():
    """A RecRank id registered with a custom reward callable (as a user would), removed afterwards."""
    env_id = "RecRankCustomRewardTest-v0"
    gym.register(id=env_id, entry_point="recgym.envs.rec_rank:RecRankEnv", disable_env_checker=True,
                 kwargs={"dataset": "synthetic", "choice_temperature": 0.5, "num_candidates": 5,
                         "reward": first_is_target})
    yield env_id
    del gym.registry[env_id]


def test_custom_ranking_reward_exports_and_scores_like_env_step(custom_reward_rank_env):
    rows = export_rows(custom_reward_rank_env, "valid", num_samples=3)
    env = gym.make(custom_reward_rank_env, split="valid")
    rewards = set()
    for row in rows:
        extra = row["extra_info"]
        assert extra["num_candidates"] == 5 and row["reward_model"]["ground_truth"] == extra["target_position"]
        for order in ([extra["target_position"], *range(5)], range(5)):
            completion = _rank_answer(dict.fromkeys(order))
            env.reset(options={"index": int(extra["index"])})
            reward = env.step(completion)[1]
            score = compute_score(row["data_source"], completion, row["reward_model"]["ground_truth"], extra)
            assert score == {"score": pytest.approx(reward)}
            rewards.add(reward)
    assert rewards == {0.0, 1.0}
