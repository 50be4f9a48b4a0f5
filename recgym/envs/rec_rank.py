"""``RecRankEnv``: order a candidate list so the user's next item comes first, by writing text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from recgym.data.dataset import RatingDataset
from recgym.data.ranking import NEGATIVES, CandidateList, available_negatives, candidate_list
from recgym.data.registry import check_arguments, load_dataset
from recgym.data.schema import check_int
from recgym.envs.rec_rating import (
    RENDER_MODES,
    check_action,
    check_observation,
    check_render_mode,
    check_reward_total,
    choose_index,
    rendered,
    step_text,
)
from recgym.envs.registration import without_registered_defaults
from recgym.envs.spaces import UnicodeText
from recgym.prompts import RankingTemplate, get_template, messages_to_text
from recgym.rewards import RankingReward, reward_for_template


class CandidateLists(Sequence):
    """``(sample_index, CandidateList)`` of every sample of a split with enough available
    negatives, built on first access. Samples with fewer are counted in ``skipped``."""

    def __init__(self, dataset: RatingDataset, split: str, num_candidates: int, negatives: str, seed: int) -> None:
        if num_candidates < 2:
            raise ValueError(f"num_candidates must be >= 2, got {num_candidates}")
        if negatives not in NEGATIVES:
            raise ValueError(f"negatives must be one of {', '.join(NEGATIVES)}, got {negatives!r}")
        self.dataset, self.split, self.args = dataset, split, (num_candidates, negatives, seed)
        if split not in dataset.samples:
            raise ValueError(f"unknown split {split!r}: choose one of {', '.join(dataset.samples)}")
        rows = dataset.samples[split]
        self.samples = np.nonzero(available_negatives(dataset, rows) >= num_candidates - 1)[0]
        self.skipped = len(rows) - len(self.samples)
        self._cache: dict[int, tuple[int, CandidateList]] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, n):
        if isinstance(n, slice):
            return [self[i] for i in range(*n.indices(len(self)))]
        if n not in self._cache:
            sample = int(self.samples[n])
            self._cache[n] = (sample, candidate_list(self.dataset, self.split, sample, *self.args))
        return self._cache[n]


class RecRankEnv(gym.Env[str, str]):
    """One episode is one candidate list to rank.

    ## Observation space
    ``UnicodeText``: the prompt (the user's history strictly before the target's time and
    ``num_candidates`` labelled candidates in a seeded shuffled order).

    ## Action space
    ``UnicodeText``: the completion text.

    ## Rewards
    ``RankingReward``: format +0.5 / -0.5 plus NDCG@k of the true item in the parsed order (the
    prompt's order when the ranking does not parse). Range [-0.5, 1.5].

    ## Episode end
    One step (``terminated=True``). Samples whose user has fewer than ``num_candidates - 1``
    available negatives are skipped; ``env.skipped`` counts them.

    ## Arguments
    ``dataset``, ``split`` and loader keywords as ``RecRatingEnv``; ``num_candidates`` (20),
    ``negatives`` (``"uniform"`` or ``"popularity"``: counts before the target's time),
    ``candidate_seed`` (the lists and their shuffles), ``template`` (``"think"``: user analysis,
    candidate analysis, match, ``<rank>``; ``"rank_only"``: ``<rank>`` alone; or a
    ``RankingTemplate``), ``reward`` (a ``RankingReward`` or a callable like it:
    ``reward(completion, target_position, num_candidates)`` returning a dict with at least
    ``total`` and ``rank_of_target``, anything else is a TypeError at step; a ``RankingReward``
    left at its default tags is given the template's, one set to other tags is refused),
    ``max_user_history``, ``max_observation_length`` (a longer prompt is an error at reset),
    ``max_action_length`` (a longer completion is an error at step), ``render_mode`` (None or
    ``"ansi"``: ``render()`` returns the prompt after ``reset``, the completion and its reward
    after ``step``).

    ## Reset and info
    ``options={"index": n}`` pins list ``n`` (``len(env.unwrapped)`` lists). ``info``: ``messages``,
    ``index``, ``sample_index``, ``user_id``, ``candidates`` (item ids in prompt order); never the
    target. ``step`` adds ``reward_breakdown`` (``format``, ``ndcg``, ``total``,
    ``rank_of_target``, ``format_ok``), ``rank_of_target``, ``abs_error`` (the target's distance
    from the top, ``rank - 1``: what the cold start's ``tolerance`` bounds) and ``shuffle_seed``.
    A list is a function of (``candidate_seed``, split, ``sample_index``), so that every policy sees
    the same lists: with the dataset, ``info`` leads to the target; give a policy the observation
    (or ``info["messages"]``) only.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": RENDER_MODES, "render_fps": 1}
    task = "ranking"

    def __init__(
        self,
        dataset: str | RatingDataset = "synthetic",
        split: str = "train",
        num_candidates: int = 20,
        negatives: str = "uniform",
        candidate_seed: int = 0,
        template: str | RankingTemplate = "think",
        reward: RankingReward | None = None,
        max_user_history: int = 10,
        max_observation_length: int = 200_000,
        max_action_length: int = 100_000,
        render_mode: str | None = None,
        **dataset_kwargs: Any,
    ) -> None:
        self.render_mode = check_render_mode(render_mode)
        if isinstance(dataset, str):
            check_arguments(dataset, dataset_kwargs, type(self))
            dataset = load_dataset(dataset, **dataset_kwargs)
        elif dataset_kwargs := without_registered_defaults(dataset_kwargs):
            raise TypeError(f"dataset loader arguments {sorted(dataset_kwargs)} given with a prepared dataset")
        self.dataset, self.split = dataset, split
        self.num_candidates = check_int("num_candidates", num_candidates, 2)
        self.negatives, self.candidate_seed = negatives, check_int("candidate_seed", candidate_seed, 0)
        self.template = get_template(template, task="ranking")
        self.reward_fn = reward_for_template(reward, RankingReward, self.template.tags)
        self.max_user_history = check_int("max_user_history", max_user_history, 0)
        dataset.require_samples(split)
        self.lists = CandidateLists(dataset, split, self.num_candidates, negatives, candidate_seed)
        self.skipped = self.lists.skipped
        if not self.lists:
            raise ValueError(f"split {split!r} has no sample with {num_candidates - 1} available negatives: "
                             "lower num_candidates")
        self.observation_space = UnicodeText(check_int("max_observation_length", max_observation_length, 1))
        self.action_space = UnicodeText(check_int("max_action_length", max_action_length, 1))
        self._current = None
        self._rendered = ""

    def __len__(self) -> int:
        return len(self.lists)

    def prompt(self, n: int) -> list[dict[str, str]]:
        _, c = self.lists[n]
        d = self.dataset
        rows = c.history_rows[-self.max_user_history:] if self.max_user_history > 0 else ()
        history = [(d.item_titles[d.item_codes[r]], d.item_categories[d.item_codes[r]], float(d.ratings[r]),
                    d.review_texts[r] or "") for r in rows]
        return self.template.messages(history, [(d.item_titles[i], d.item_descriptions[i]) for i in c.items], d.scale)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._current = None
        n = choose_index(options, len(self.lists), self.np_random, "{} lists")
        messages = self.prompt(n)
        text = check_observation(messages_to_text(messages), self.observation_space.max_length, f"list {n}",
                                 "max_user_history, num_candidates")
        self._current = n
        sample, c = self.lists[n]
        info = {"messages": messages, "index": n, "sample_index": sample,
                "user_id": str(self.dataset.user_ids[int(self.dataset.user_codes[self.dataset.row(self.split, sample)])]),
                "candidates": [str(self.dataset.item_ids[i]) for i in c.items]}
        self._rendered = text
        return text, info

    def step(self, action: str):
        check_action(action, self._current is not None, self.action_space.max_length)
        _, c = self.lists[self._current]
        breakdown = self.reward_fn(action, c.target_position, len(c.items))
        if not isinstance(breakdown, dict) or not {"total", "rank_of_target"} <= breakdown.keys():
            got = f"a dict of {sorted(breakdown)}" if isinstance(breakdown, dict) else type(breakdown).__name__
            raise TypeError(f"the reward returned {got}: reward(completion, target_position, num_candidates) must "
                            "return a dict with at least 'total' and 'rank_of_target', as RankingReward does")
        total = check_reward_total(breakdown["total"], self.reward_fn)
        info = {"index": self._current, "reward_breakdown": breakdown, "rank_of_target": breakdown["rank_of_target"],
                "abs_error": breakdown["rank_of_target"] - 1, "shuffle_seed": c.shuffle_seed}
        self._current = None
        self._rendered = step_text(action, "", info)
        return "", total, True, False, info

    def render(self) -> str | None:
        """``"ansi"``: the prompt after ``reset``, the completion and its reward after ``step``
        (``""`` before the first ``reset``)."""
        return rendered(self.render_mode, self._rendered)
