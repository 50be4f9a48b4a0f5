"""The tool-using environment RecRatingTools-*-v0: registration, the call format and its errors,
rewards and episode ends, leakage (every sample of the synthetic world and of a real dataset),
and whole-group autoreset in the group vector env."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import recgym  # noqa: F401
from recgym.data.registry import load_dataset
from recgym.envs import MULTI_TURN, REGISTERED, RecRatingToolsEnv, make_group_vec
from recgym.envs.real_envs import REAL_ENVS
from recgym.envs.tools import (
    TOOL_NAMES,
    HistoryTools,
    ToolCall,
    ToolCallError,
    bm25_scores,
    openai_tools,
    parse_call,
)
from recgym.rewards import FOUR_STEP_TAGS

ENV = "RecRatingTools-Synthetic-v0"


def answer(rating: float) -> str:
    return "".join(f"<{t}>{rating if t == 'rate' else 'ok'}</{t}>" for t in FOUR_STEP_TAGS)


@pytest.fixture(scope="module")
def env():
    return gym.make(ENV, split="valid").unwrapped


# ---- registration ----

def test_every_single_turn_env_has_a_tool_twin_listed_by_recgym_envs(capsys):
    single = [e for e in REGISTERED if e.startswith("RecRating-")]
    assert len(single) >= len(REAL_ENVS) + 1
    for env_id in single:
        if env_id == "RecRating-SyntheticLong-v0":  # the tool world's samples for the single-turn agent
            continue
        twin = env_id.replace("RecRating-", "RecRatingTools-")
        assert twin in gym.registry and twin in MULTI_TURN and REGISTERED[twin] == REGISTERED[env_id]
    from recgym.cli import main

    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    assert "RecRatingTools-Synthetic…" in out or "RecRatingTools-Synthetic-v0" in out


def test_check_env_is_clean(env):
    check_env(env, skip_render_check=True)


def test_single_and_tool_envs_share_the_samples():
    tools = gym.make(ENV, split="test").unwrapped
    single = gym.make("RecRating-SyntheticLong-v0", split="test").unwrapped
    assert tools.dataset is single.dataset and len(tools) == len(single) == 300
    for index in (0, 17, 299):
        _, a = tools.reset(options={"index": index})
        _, b = single.reset(options={"index": index})
        assert (a["user_id"], a["item_id"]) == (b["user_id"], b["item_id"])


# ---- reset ----

def test_reset_states_the_task_profile_and_tools_but_no_history(env):
    obs, info = env.reset(options={"index": 3})
    row = env.dataset.row("valid", 3)
    item = int(env.dataset.item_codes[row])
    system, task = (m["content"] for m in info["messages"])
    assert env.dataset.item_titles[item] in task and env.dataset.item_descriptions[item] in task
    count, mean = env.tools.profile(row)
    assert f"rated {count} items before, {mean:.2f} on average" in task
    for name in TOOL_NAMES:
        assert name + "(" in system
    assert "<call>" in system and "<rate>" in system
    assert "Review:" not in obs and "rated 4." not in task  # no past review is pasted in
    assert info["tokens_read"] > 0 and "target_rating" not in info


# ---- the call format ----

@pytest.mark.parametrize("text, name, arguments", [
    ("<call>similar_items(limit=3)</call>", "similar_items", {"limit": 3}),
    ("Let me look. <call>similar_items()</call> ignored", "similar_items", {"limit": 5}),
    ('<call>search_reviews(query="spicy noodles")</call>', "search_reviews", {"query": "spicy noodles", "limit": 5}),
    ("<call>search_reviews('thai', 2)</call>", "search_reviews", {"query": "thai", "limit": 2}),
    ("<call> recent_reviews(offset=5, limit=50) </call>", "recent_reviews", {"offset": 5, "limit": 10}),
    ("<call>user_stats()</call>", "user_stats", {}),
])
def test_calls_parse(text, name, arguments):
    assert parse_call(text) == ToolCall(name, arguments)


@pytest.mark.parametrize("text, message", [
    ("<call>similar_items(limit=3)", "not closed"),
    ("<call>user_stats()</call><call>user_stats()</call>", "one tool call per turn"),
    ("<call>similar_items(limit=</call>", "cannot read the call"),
    ("<call>similar_items</call>", "tool name with arguments"),
    ("<call>os.system('ls')</call>", "tool name with arguments"),
    ("<call>delete_all()</call>", "unknown tool 'delete_all'"),
    ("<call>similar_items(limit=x)</call>", "plain numbers or quoted strings"),
    ("<call>similar_items(limit=0)</call>", "must be >= 1"),
    ("<call>similar_items(limit=2.5)</call>", "whole number"),
    ("<call>similar_items(k=3)</call>", "has no argument 'k'"),
    ("<call>search_reviews()</call>", "needs 'query'"),
    ("<call>search_reviews(query='  ')</call>", "non-empty"),
    ("<call>user_stats(1)</call>", "at most 0"),
    ("<call>similar_items(3, limit=4)</call>", "twice"),
    ("<call>similar_items(**{'limit': 3})</call>", "plain numbers"),
    ("<call>recent_reviews({[1]: 2})</call>", "plain numbers"),  # ast raised TypeError: unhashable
    ("<call>recent_reviews({1, [2]})</call>", "plain numbers"),
])
def test_malformed_calls_say_what_is_wrong(text, message):
    with pytest.raises(ToolCallError, match=message):
        parse_call(text)


LITERALS = st.recursive(st.sampled_from(["1", "-2", "'a'", "None", "2.5"]), lambda inner: st.one_of(
    st.builds("[{}]".format, inner), st.builds("{{{}, {}}}".format, inner, inner),
    st.builds("{{{}: {}}}".format, inner, inner), st.builds("({},)".format, inner)), max_leaves=6)


@settings(max_examples=200, deadline=None)
@given(st.lists(LITERALS, max_size=3).map(", ".join))
def test_any_literal_arguments_are_a_call_or_a_tool_call_error(arguments):
    try:
        parse_call(f"<call>recent_reviews({arguments})</call>")
    except ToolCallError:
        pass


def test_openai_schema_matches_the_tools():
    schema = openai_tools()
    assert [t["function"]["name"] for t in schema] == list(TOOL_NAMES)
    search = schema[TOOL_NAMES.index("search_reviews")]["function"]["parameters"]
    assert search["required"] == ["query"] and search["properties"]["limit"]["type"] == "integer"
    assert RecRatingToolsEnv.tools_schema == schema


def test_bm25_ranks_matching_documents_first():
    docs = [["korean", "barbecue"], ["thai", "noodles", "spicy"], ["thai", "curry"], []]
    scores = bm25_scores(["spicy", "thai"], docs)
    assert scores.argmax() == 1 and scores[0] == 0 and scores[3] == 0 and scores[2] > 0


# ---- steps, rewards, episode end ----

def test_a_call_returns_its_result_then_the_answer_pays_minus_the_cost(env):
    env.reset(options={"index": 5})
    target = env.dataset.target("valid", 5)
    obs, reward, terminated, truncated, info = env.step("<call>similar_items(limit=2)</call>")
    assert reward == 0 and not terminated and not truncated and info["error"] is None
    assert obs.startswith("Result of similar_items(limit=2):") and obs.count("(similarity ") == 2
    assert info["messages"] == [{"role": "user", "content": obs}]
    assert info["num_calls"] == 1 and info["calls"][0]["tool"] == "similar_items" and len(info["calls"][0]["rows"]) == 2
    tokens_after_call = info["tokens_read"]
    assert tokens_after_call == info["calls"][0]["tokens"] + env.count_tokens(env.task_prompt(env._row))
    obs, reward, terminated, truncated, info = env.step(answer(3))
    assert terminated and not truncated and obs == ""
    parts = info["reward_breakdown"]
    assert parts["tool_cost"] == pytest.approx(-0.02)
    assert parts["format"] == 0.5 and parts["accuracy"] == pytest.approx(1 - abs(target - 3) / 4)
    assert reward == pytest.approx(parts["format"] + parts["accuracy"] + parts["tool_cost"]) == parts["total"]
    assert info["tokens_read"] == tokens_after_call and info["turn"] == 2


def test_malformed_calls_and_chatter_are_error_turns(env):
    env.reset(options={"index": 0})
    for action, message in (("<call>nope()</call>", "unknown tool"), ("I think it is good.", "neither a tool call")):
        obs, reward, terminated, truncated, info = env.step(action)
        assert message in obs and info["error"] and reward == 0 and not (terminated or truncated)
    assert info["invalid_turns"] == 2 and info["num_calls"] == 1  # the failed call counts (and costs)


def test_a_call_ast_cannot_read_is_an_error_turn_not_a_crash(env):
    """One sampled completion like this raised TypeError out of step() and stopped a GRPO run."""
    env.reset(options={"index": 0})
    obs, reward, terminated, truncated, info = env.step("<call>recent_reviews({[1]: 2})</call>")
    assert obs.startswith("Tool call error: arguments of recent_reviews must be plain numbers")
    assert info["invalid_turns"] == 1 and reward == 0 and not (terminated or truncated)


def test_rate_only_answers_are_scored_on_the_template_and_asked_for_in_its_words():
    from recgym.rewards import RatingReward

    env = gym.make(ENV, split="valid", template="rate_only", reward=RatingReward(accuracy_weight=2.0)).unwrapped
    env.reset(options={"index": 3})
    obs = env.step("Hmm.")[0]
    assert "answer as <rate>...</rate>." in obs and "four tagged steps" not in obs
    _, reward, terminated, _, info = env.step("<rate>3</rate>")
    target = env.dataset.target("valid", 3)
    assert terminated and info["reward_breakdown"]["format"] == 0.5
    assert reward == pytest.approx(0.5 + 2 * (1 - abs(target - 3) / 4))
    think = gym.make(ENV, split="valid").unwrapped
    think.reset(options={"index": 3})
    assert "or answer in the four tagged steps ending in <rate>." in think.step("Hmm.")[0]


def test_a_reset_prompt_over_max_observation_length_is_an_error():
    env = gym.make(ENV, split="valid", max_observation_length=200).unwrapped
    with pytest.raises(ValueError, match="raise max_observation_length or shorten the prompt"):
        env.reset(options={"index": 0})
    with pytest.raises(RuntimeError, match="call reset"):
        env.step("<call>user_stats()</call>")


def test_a_tool_result_over_max_observation_length_is_cut_to_whole_lines_with_a_note():
    """It came back whole, outside the observation space."""
    call = "<call>recent_reviews(limit=40)</call>"
    whole = gym.make(ENV, split="valid", max_results=40).unwrapped
    whole.reset(options={"index": 0})
    full = whole.step(call)[0]
    env = gym.make(ENV, split="valid", max_results=40, max_observation_length=2000).unwrapped
    env.reset(options={"index": 0})
    obs, _, _, _, info = env.step(call)
    assert len(full) > 2000 >= len(obs) and env.observation_space.contains(obs)
    kept, note = obs.rsplit("\n", 1)
    assert full.startswith(kept + "\n") and note == f"(cut: {len(full) - len(kept)} more characters)"
    next_line = full[len(kept) + 1 :].split("\n", 1)[0]
    assert len(kept) + len(next_line) + len(note) + 2 > 2000  # the next whole line would not have fit
    assert info["calls"][0]["tokens"] == env.count_tokens(obs) < whole.count_tokens(full)
    assert env.step("<call>user_stats()</call>")[0] == whole.step("<call>user_stats()</call>")[0]  # short results whole


@pytest.mark.parametrize("loop", ["<call>user_stats()</call>", "<call>user_stats(</call>", "rating: 4"])
def test_loops_truncate_at_max_turns_with_the_format_penalty(loop):
    env = gym.make(ENV, split="valid", max_turns=4, tool_cost=0.1).unwrapped
    env.reset(options={"index": 2})
    for turn in range(1, 5):
        obs, reward, terminated, truncated, info = env.step(loop)
        if turn < 4:
            assert not (terminated or truncated)
    assert truncated and not terminated and obs == "" and info["turn"] == 4
    calls = 4 if "<call>" in loop else 0
    assert info["reward_breakdown"]["tool_cost"] == pytest.approx(-0.1 * calls)
    assert reward == pytest.approx(-0.5 - 0.1 * calls)
    assert "max_turns" in info["truncation"]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(loop)


def test_a_result_the_max_turns_cut_off_is_not_counted_as_read():
    """Before: the last turn's result, never delivered (observation "", no messages), was added to
    tokens_read and to its call's tokens."""
    env = gym.make(ENV, split="valid", max_turns=2).unwrapped
    _, info = env.reset(options={"index": 2})
    task = info["tokens_read"]
    _, _, _, _, info = env.step("<call>user_stats()</call>")
    read = info["tokens_read"]
    assert read == task + info["calls"][0]["tokens"] > task
    obs, _, _, truncated, info = env.step("<call>recent_reviews(limit=10)</call>")
    assert truncated and obs == "" and info["messages"] == []
    assert info["tokens_read"] == read and info["calls"][1]["tokens"] == 0 and info["calls"][1]["rows"]
    one = gym.make(ENV, split="valid", max_turns=1).unwrapped
    _, info = one.reset(options={"index": 2})
    assert one.step("rating: 4")[4]["tokens_read"] == info["tokens_read"]  # the undelivered error message too


def test_end_episode_truncates_like_max_turns(env):
    env.reset(options={"index": 1})
    env.step("<call>user_stats()</call>")
    _, reward, terminated, truncated, info = env.end_episode("context full")
    assert truncated and not terminated and reward == pytest.approx(-0.52) and info["truncation"] == "context full"


@pytest.mark.parametrize("kwargs, message", [
    ({"max_turns": 0}, "max_turns"), ({"tool_cost": -1.0}, "tool_cost"), ({"max_results": 0}, "max_results"),
])
def test_bad_knobs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gym.make(ENV, **kwargs)


# ---- leakage ----

CALLS = [
    ToolCall("recent_reviews", {"offset": 0, "limit": 10}),
    ToolCall("recent_reviews", {"offset": 40, "limit": 10}),
    ToolCall("search_reviews", {"query": "food liked would order again", "limit": 10}),
    ToolCall("item_reviews", {"offset": 0, "limit": 10}),
    ToolCall("similar_items", {"limit": 10}),
    ToolCall("user_stats", {}),
]


def normal(text: str) -> str:
    """A review as a result shows it (angle brackets neutralized, whitespace collapsed)."""
    return " ".join(str(text).replace("<", "‹").replace(">", "›").split())


def assert_no_tool_reads_the_future(ds, check_text: bool = False) -> int:
    """Every tool on every sample of every split: the rows read lie strictly before the target, and
    (``check_text``) no review written at or after the target's time appears in a result."""
    tools = HistoryTools(ds, max_review_chars=10_000)
    users, items, times = np.asarray(ds.user_codes), np.asarray(ds.item_codes), np.asarray(ds.timestamps)
    checked = 0
    for split in ("train", "valid", "test"):
        for row in ds.samples[split]:
            row = int(row)
            t = times[row]
            past_u = np.flatnonzero((users == users[row]) & (times < t)) if check_text else None
            for call in CALLS:
                result = tools.run(row, call)
                rows = np.asarray(result.rows, dtype=np.int64)
                assert (times[rows] < t).all(), (split, row, call)
                own = items if call.name == "item_reviews" else users
                assert (own[rows] == own[row]).all() and row not in rows
                if call.name == "user_stats":
                    assert len(rows) == int(((users == users[row]) & (times < t)).sum())
                if check_text:
                    mine = users == users[row] if call.name != "item_reviews" else items == items[row]
                    later = np.flatnonzero(mine & (times >= t))
                    past = past_u if call.name != "item_reviews" else np.flatnonzero(mine & (times < t))
                    seen = " | ".join(normal(ds.review_texts[r]) for r in past)
                    for r in later:
                        text = normal(ds.review_texts[r])
                        # a later review may repeat an earlier one (reposts): only unseen text must stay out
                        if len(text) > 30 and text not in seen:
                            assert text not in result.text, (split, row, call, r)
            checked += 1
    return checked


def test_no_tool_reads_the_future_on_every_synthetic_sample():
    ds = load_dataset("synthetic", long_history=True)
    assert assert_no_tool_reads_the_future(ds) == sum(len(s) for s in ds.samples.values()) > 14_000


def test_no_tool_reads_the_future_on_every_sample_of_a_real_dataset(shared_data, tmp_path):
    from recgym.data.loaders import load_amazon

    ds = load_amazon(shared_data / "amazon_digital_music_5core_2014_partial", skip_bad_records=True,
                     cache_dir=tmp_path, progress=False)
    assert assert_no_tool_reads_the_future(ds, check_text=True) > 1_000


def test_long_history_evidence_is_never_among_the_newest_fifteen():
    """By construction: the target's cuisine is absent from the newest 15 of the user's past ratings,
    and present earlier (after the first round)."""
    ds = load_dataset("synthetic", long_history=True)
    tools = HistoryTools(ds)
    for row in ds.samples["test"]:
        past = tools.user_rows(int(row))
        cats = [ds.item_categories[int(ds.item_codes[r])] for r in past]
        target = ds.item_categories[int(ds.item_codes[row])]
        assert target not in cats[-15:] and target in cats


def test_long_history_tools_beat_the_fixed_cut():
    """The scripted tool agent (similar items, then rate) beats the scripted single-turn reasoner
    with the newest 10 reviews on the same test samples: the information is reachable."""
    from recgym.agents.evaluation import evaluate
    from recgym.agents.teachers.scripted import SimilarItemsToolPolicy, SyntheticReasonerPolicy

    tool = evaluate(gym.make(ENV, split="test"), SimilarItemsToolPolicy(), n=100, baselines=False)
    single = evaluate(gym.make("RecRating-SyntheticLong-v0", split="test"), SyntheticReasonerPolicy(), n=100,
                      baselines=False)
    assert tool.metrics.coverage == 1 and tool.metrics.format_rate == 1
    assert tool.episode_stats["tool_calls_mean"] == 1 and tool.episode_stats["turns_mean"] == 2
    assert tool.metrics.mae < single.metrics.mae - 0.2, (tool.metrics.mae, single.metrics.mae)


# ---- the group vector env ----

def test_episodes_end_at_different_turns_and_autoreset_keeps_groups_intact():
    vec = make_group_vec(ENV, num_prompts=2, group_size=3, autoreset_mode="NextStep", split="valid")
    _, infos = vec.reset(options={"indices": [4, 9]})
    assert [i["index"] for i in infos] == [4, 4, 4, 9, 9, 9]
    call = "<call>user_stats()</call>"
    # group 0: members end at turns 1, 2, 3; group 1: all answer at turn 1
    _, _, term, _, infos = vec.step([answer(3), call, call, answer(1), answer(2), answer(3)])
    assert term.tolist() == [True, False, False, True, True, True]
    _, rewards, term, _, infos = vec.step([None, answer(4), call, None, None, None])
    assert term.tolist() == [False, True, False, False, False, False]
    assert infos[0]["waiting"] and rewards[0] == 0
    # group 1 ended as a whole: it resets together, to one new sample; group 0 still waits for its last member
    assert all(i.get("autoreset") for i in infos[3:]) and len({i["index"] for i in infos[3:]}) == 1
    assert infos[3]["group"] == infos[5]["group"] == 1
    _, _, term, _, infos = vec.step([None, None, answer(5), call, call, call])
    assert term.tolist() == [False, False, True, False, False, False]
    assert infos[3]["num_calls"] == infos[4]["num_calls"] == 1
    obs, _, _, _, infos = vec.step([None, None, None, answer(3), answer(3), answer(3)])
    assert all(i.get("autoreset") for i in infos[:3]) and len({i["index"] for i in infos[:3]}) == 1
    assert len(set(obs[:3])) == 1


def test_without_autoreset_finished_members_wait():
    vec = make_group_vec(ENV, num_prompts=1, group_size=2, split="valid")
    vec.reset(seed=0)
    vec.step([answer(3), "<call>user_stats()</call>"])
    obs, _, term, _, infos = vec.step(["ignored", answer(3)])
    assert infos[0] == {"group": 0, "waiting": True} and obs[0] == "" and term.tolist() == [False, True]
    _, _, term, _, infos = vec.step([None, None])
    assert all(i.get("waiting") for i in infos) and not term.any()


def test_make_vec_builds_tool_groups():
    vec = gym.make_vec(ENV, num_envs=4, group_size=2)
    assert vec.num_prompts == 2 and isinstance(vec.envs[0], RecRatingToolsEnv)


def test_the_readme_comparison_script_runs():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "tools_comparison.py"
    spec = importlib.util.spec_from_file_location("tools_comparison", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(n=20, count=lambda text: len(text.split()))
    tool, same_budget = rows[0], rows[1]
    assert tool["tool_calls"] == 1 and same_budget["tokens_read"] <= tool["tokens_read"]
    assert tool["mae"] < same_budget["mae"]
    assert "| tools: similar_items" in module.markdown(rows)


def test_function_calls_become_tagged_calls():
    from recgym.envs.tools import call_text

    assert parse_call(call_text("search_reviews", '{"query": "thai", "limit": 2}')) == \
        ToolCall("search_reviews", {"query": "thai", "limit": 2})
    assert parse_call(call_text("user_stats", "")) == ToolCall("user_stats", {})
    with pytest.raises(ToolCallError, match="no argument 'arguments'"):
        parse_call(call_text("similar_items", "not json"))


def openai_policy_turn_mock_server(calls: list[tuple[str, str]]) -> tuple[str, list[dict]]:
    """The text an OpenAIPolicy (sent the tools) returns for sample 0's prompt when a mock
    OpenAI-compatible server (no model here speaks native function calls) answers with ``calls``
    (name, JSON arguments), and the request bodies the server saw."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from recgym.agents.policies import make_policy

    seen = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            seen.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            tool_calls = [{"id": f"c{i}", "type": "function", "function": {"name": name, "arguments": arguments}}
                          for i, (name, arguments) in enumerate(calls)]
            payload = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [
                {"index": 0, "finish_reason": "tool_calls", "logprobs": None,
                 "message": {"role": "assistant", "content": None, "tool_calls": tool_calls}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        policy = make_policy("openai", "m", base_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
                             tools=openai_tools(), max_retries=0)
        _, info = gym.make(ENV, split="valid").unwrapped.reset(options={"index": 0})
        return policy.generate([info["messages"]])[0][0].text, seen
    finally:
        server.shutdown()
        server.server_close()


def test_openai_policy_sends_the_schema_and_returns_tagged_calls_mock_server():
    """The policy sent the tools and turns the model's call into the environment's action."""
    text, seen = openai_policy_turn_mock_server([("similar_items", '{"limit": 3}')])
    assert seen[0]["tools"] == openai_tools()
    assert text == "<call>similar_items(limit=3)</call>"
    env = gym.make(ENV, split="valid").unwrapped
    env.reset(options={"index": 0})
    obs, *_ = env.step(text)
    assert obs.startswith("Result of similar_items(limit=3):")


def test_openai_policy_passes_on_every_parallel_tool_call_mock_server():
    """Only the first call came back, and the model never learned the others were ignored; now the
    environment answers with its one-call-per-turn error, an invalid turn."""
    text, _ = openai_policy_turn_mock_server([("similar_items", '{"limit": 3}'), ("user_stats", "{}")])
    assert text == "<call>similar_items(limit=3)</call> <call>user_stats()</call>"
    env = gym.make(ENV, split="valid").unwrapped
    env.reset(options={"index": 0})
    obs, reward, terminated, truncated, info = env.step(text)
    assert obs == "Tool call error: one tool call per turn." and reward == 0.0 and not (terminated or truncated)
    assert info["invalid_turns"] == 1 and info["num_calls"] == 1


def test_step_before_the_first_reset_says_reset_was_never_called():
    """It said "(the episode has ended; reset() starts the next)" before any episode."""
    env = gym.make(ENV, split="valid").unwrapped
    with pytest.raises(RuntimeError, match=r"call reset\(\) before step\(\) \(reset\(\) was never called"):
        env.step("<call>user_stats()</call>")
    env.reset(options={"index": 0})
    env.step(answer(3))
    with pytest.raises(RuntimeError, match="the episode has ended"):
        env.step(answer(3))


def test_tool_cost_without_calls_is_zero_not_minus_zero(env):
    env.reset(options={"index": 0})
    cost = env.step(answer(3))[4]["reward_breakdown"]["tool_cost"]
    assert cost == 0.0 and math.copysign(1.0, cost) == 1.0


def test_a_custom_reward_must_return_a_reward_breakdown():
    env = gym.make(ENV, split="valid", reward=lambda completion, target, scale: 1.0).unwrapped
    env.reset(options={"index": 0})
    with pytest.raises(TypeError, match="the reward returned float: .* must return a recgym.rewards.RewardBreakdown"):
        env.step(answer(3))
    env.reset(options={"index": 0})
    with pytest.raises(TypeError, match="the reward returned float"):
        env.end_episode()


def test_max_turns_not_time_limit_ends_an_episode_with_its_reward():
    """What docs/tools.md says of ``max_episode_steps``: TimeLimit truncates with the turn's 0.0."""
    limited = gym.make(ENV, split="valid", max_episode_steps=2)
    limited.reset(options={"index": 0})
    limited.step("<call>user_stats()</call>")
    _, reward, terminated, truncated, info = limited.step("<call>user_stats()</call>")
    assert truncated and not terminated and reward == 0.0 and "reward_breakdown" not in info
    assert limited.unwrapped._index is not None  # the inner episode is still open
    own = gym.make(ENV, split="valid", max_turns=2)
    own.reset(options={"index": 0})
    own.step("<call>user_stats()</call>")
    _, reward, _, truncated, info = own.step("<call>user_stats()</call>")
    assert truncated and reward == pytest.approx(-0.54) and info["reward_breakdown"]["tool_cost"] == pytest.approx(-0.04)
    assert not hasattr(own, "end_episode") and hasattr(own.unwrapped, "end_episode")
