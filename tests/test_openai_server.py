"""``recgym eval --policy openai`` against a real OpenAI-compatible server: vLLM's, on the
embedded model (the ``openai_server`` fixture starts it once per session)."""

from __future__ import annotations

import json

import pytest

from recgym.agents.evaluation import read_records
from recgym.cli import main

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m-instruct"  # the name the server serves the embedded model under
ENV = "RecRating-Synthetic-v0"


def test_eval_through_the_server(openai_server, tmp_path, capsys):
    out, metrics = tmp_path / "records.jsonl", tmp_path / "metrics.json"
    code = main(["eval", ENV, "--policy", "openai", "--model", MODEL, "--base-url", openai_server, "-n", "4",
                 "--max-new-tokens", "64", "--out", str(out), "--metrics-json", str(metrics), "--quiet"])
    assert code == 0, capsys.readouterr().err
    records = read_records(out)
    assert len(records) == 4 and all(r["completions"][0].strip() for r in records)
    assert json.loads(metrics.read_text())["metrics"]["n"] == 4
    assert "MAE" in capsys.readouterr().out


def test_rating_from_probs_through_the_servers_top_logprobs(openai_server, tmp_path):
    """The server returns the top 20 logprobs as token text; the expected rating is decoded from
    them where the completion writes ``<rate>`` and a digit (a few-shot prompt makes the small base
    model do that; on the environment's own prompts it does not, and the record says so)."""
    from recgym.agents.evaluation import RATING_TOP_LOGPROBS, expected_rating
    from recgym.agents.policies.openai import OpenAIPolicy
    from recgym.agents.types import SamplingParams
    from recgym.data.schema import RatingScale

    out = tmp_path / "records.jsonl"
    code = main(["eval", ENV, "--policy", "openai", "--model", MODEL, "--base-url", openai_server, "-n", "2",
                 "--max-new-tokens", "32", "--rating-from-probs", "--out", str(out), "--no-baselines", "--quiet"])
    assert code == 0
    assert all(len(r["prob_ratings"]) == 1 for r in read_records(out))

    few_shot = [{"role": "user", "content": "Rate the movie Heat."}, {"role": "assistant", "content": "<rate>4</rate>"},
                {"role": "user", "content": "Rate the movie Nixon."}, {"role": "assistant", "content": "<rate>2</rate>"},
                {"role": "user", "content": "Rate the movie Toy Story."}]
    policy = OpenAIPolicy(MODEL, base_url=openai_server, max_retries=0)
    try:
        [[completion]] = policy.generate(
            [few_shot], 1, SamplingParams(temperature=0.0, max_new_tokens=8, logprobs=RATING_TOP_LOGPROBS)
        )
    finally:
        policy.close()
    assert completion.text.startswith("<rate>"), completion.text
    assert len(completion.top_logprobs[0]) == RATING_TOP_LOGPROBS
    rating = expected_rating(completion, RatingScale(1, 5))
    assert rating is not None and 1 <= rating <= 5
