"""The embedded synthetic world: restaurants and diners whose ratings depend on what a reader
can learn from text.

Each restaurant has a cuisine, a price tier, an atmosphere (all stated in its description) and a
hidden quality (visible only through other diners' ratings and reviews). Each diner likes some
cuisines, dislikes others, has a budget and an atmosphere preference, and a personal leniency.
A rating is ``3 + leniency + quality + match`` plus bounded noise, rounded to an integer on 1–5;
each comes with a short review that names what the diner liked or disliked. The noise-free value
(clipped to the scale) is the world's oracle.

``long_history=True`` builds the variant for the tool-using environment (``RecRatingTools-*``):
sixteen cuisines, and each diner's taste is one idiosyncratic offset per cuisine (price and
atmosphere no longer matter). A diner visits the cuisines round-robin in a fixed personal order,
``history_rounds`` times, so every rating's same-cuisine evidence, the one thing that predicts the
taste, lies exactly sixteen ratings back and earlier: never among the most recent fifteen, which
is all a fixed-cut prompt shows. The item's quality is visible through others' ratings of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recgym.data.dataset import PrepareConfig, RatingDataset
from recgym.data.registry import register_dataset
from recgym.data.schema import RatingScale, check_number, check_types

CUISINES = ("Italian", "Mexican", "Japanese", "Indian", "French", "Thai", "Greek", "Korean")
PRICES = ("budget", "moderate", "upscale")
ATMOSPHERES = ("quiet", "lively", "family-friendly", "romantic")
_SYLLABLES = ("ka", "lo", "mi", "ro", "sa", "ve", "ta", "no", "be", "li", "zo", "ra", "du", "po")
_PLACE = ("Kitchen", "Bistro", "House", "Table", "Corner", "Garden", "Grill", "Canteen")
#: The long-history world's sixteen cuisines (the first eight are ``CUISINES``).
CUISINES_LONG = CUISINES + (
    "Vietnamese", "Spanish", "Chinese", "Lebanese", "Ethiopian", "Turkish", "Peruvian", "Caribbean",
)
_DISH = {
    "Italian": "pasta", "Mexican": "tacos", "Japanese": "sushi", "Indian": "curry",
    "French": "pastries", "Thai": "noodles", "Greek": "souvlaki", "Korean": "barbecue",
    "Vietnamese": "pho", "Spanish": "tapas", "Chinese": "dumplings", "Lebanese": "falafel",
    "Ethiopian": "injera", "Turkish": "kebab", "Peruvian": "ceviche", "Caribbean": "jerk chicken",
}
SCALE = RatingScale(1, 5, 1)
DAY = 86_400
START_TIME = 1_600_000_000


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and behaviour of the synthetic world."""

    num_users: int = 300
    num_items: int = 80
    min_ratings_per_user: int = 8
    max_ratings_per_user: int = 16
    noise: float = 0.4
    """Half-width of the uniform noise added before rounding."""
    seed: int = 0
    long_history: bool = False
    """The tool environment's variant (see the module docstring): 16 cuisines visited round-robin,
    ``history_rounds`` times each; ``min``/``max_ratings_per_user`` are then unused."""
    history_rounds: int = 3
    """Long-history world: visits per cuisine per diner (ratings per diner = 16 x this)."""
    choice_temperature: float = 0.0
    """0: diners visit restaurants uniformly at random (the world of ``RecRating-Synthetic-v0``).
    > 0: each next visit is drawn from the restaurants not yet visited with probability
    proportional to ``exp(affinity / choice_temperature)``, the affinity being the noise-free
    expected rating (quality + cuisine, price and atmosphere match; leniency cancels), so the next
    item is predictable from tastes (``RecRank-Synthetic-v0`` uses 0.5; lower: more predictable).
    Not used by the long-history world."""

    def __post_init__(self) -> None:
        check_types(self)
        check_number("noise", self.noise, 0)
        check_number("choice_temperature", self.choice_temperature, 0)


@dataclass
class SyntheticWorld:
    """The generated world: the prepared dataset plus the hidden truth behind it."""

    dataset: RatingDataset
    config: SyntheticConfig
    oracle: np.ndarray
    """Noise-free expected rating of every interaction row, clipped to the scale."""

    def oracle_for(self, split: str) -> np.ndarray:
        return self.oracle[self.dataset.samples[split]]


def _name(rng: np.random.Generator) -> str:
    word = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
    return f"{word.capitalize()} {rng.choice(_PLACE)}"


def _review(rng: np.random.Generator, rating: int, likes: list[str], dislikes: list[str], cuisine: str) -> str:
    opener = {
        1: "Very disappointing.", 2: "Not for me.", 3: "It was okay.", 4: "Really enjoyed it.", 5: "Outstanding!",
    }[rating]
    parts = [opener]
    if likes:
        parts.append(f"I liked the {' and the '.join(likes)}.")
    if dislikes:
        parts.append(f"I did not like the {' or the '.join(dislikes)}.")
    if rating >= 4 and rng.random() < 0.5:
        parts.append(f"I would order the {_DISH[cuisine]} again.")
    elif rating <= 2 and rng.random() < 0.5:
        parts.append(f"I would skip the {_DISH[cuisine]}.")
    return " ".join(parts)


def generate_world(config: SyntheticConfig | None = None, prepare: PrepareConfig | None = None) -> SyntheticWorld:
    config = config or SyntheticConfig()
    if config.num_users < 1 or config.num_items < 2:
        raise ValueError("the synthetic world needs at least 1 user and 2 items")
    if not 1 <= config.min_ratings_per_user <= config.max_ratings_per_user:
        raise ValueError("need 1 <= min_ratings_per_user <= max_ratings_per_user")
    rng = np.random.default_rng(config.seed)
    if config.long_history:
        return _generate_long_world(config, prepare, rng)
    n_items = config.num_items

    item_cuisine = rng.integers(len(CUISINES), size=n_items)
    item_price = rng.integers(len(PRICES), size=n_items)
    item_atmos = rng.integers(len(ATMOSPHERES), size=n_items)
    item_quality = np.clip(rng.normal(0.0, 0.5, size=n_items), -1.0, 1.0)
    titles = [_name(rng) for _ in range(n_items)]
    categories = [f"Restaurants, {CUISINES[c]}" for c in item_cuisine]
    descriptions = _describe(CUISINES, item_cuisine, item_price, item_atmos)

    rows: dict[str, list] = {k: [] for k in ("user_id", "item_id", "rating", "timestamp", "review_text")}
    oracle: list[float] = []
    for u in range(config.num_users):
        prefs = rng.permutation(len(CUISINES))
        likes, dislikes = set(prefs[:2].tolist()), set(prefs[2:4].tolist())
        budget = int(rng.integers(len(PRICES)))  # the highest price tier this diner is happy with
        favourite_atmos = int(rng.integers(len(ATMOSPHERES)))
        leniency = float(np.clip(rng.normal(0.0, 0.6), -1.2, 1.2))
        n = int(rng.integers(config.min_ratings_per_user, config.max_ratings_per_user + 1))
        size = min(n, n_items)
        taste = [_match(int(c), int(p), int(a), likes, dislikes, budget, favourite_atmos)
                 for c, p, a in zip(item_cuisine, item_price, item_atmos)]
        if config.choice_temperature > 0:
            affinity = (item_quality + np.array([m for m, _, _ in taste])) / config.choice_temperature
            weights = np.exp(affinity - affinity.max())
            # i.i.d. draws kept at first occurrence: successive sampling without replacement, in visit order
            chosen = rng.choice(n_items, size=size, replace=False, p=weights / weights.sum())
        else:
            chosen = rng.choice(n_items, size=size, replace=False)
        t = START_TIME + int(rng.integers(0, 365)) * DAY
        for i in chosen:
            match, liked, disliked = taste[i]
            c = int(item_cuisine[i])
            expected = 3.0 + leniency + float(item_quality[i]) + match
            rating = int(np.clip(np.rint(expected + rng.uniform(-config.noise, config.noise)), 1, 5))
            t += int(rng.integers(1, 30)) * DAY + int(rng.integers(0, DAY))
            _add(rows, oracle, u, int(i), rating, t, _review(rng, rating, liked, disliked, CUISINES[c]), expected)

    return _world(config, prepare, rows, titles, categories, descriptions, oracle)


def _match(c: int, p: int, a: int, likes: set[int], dislikes: set[int], budget: int,
           favourite_atmos: int) -> tuple[float, list[str], list[str]]:
    """How a restaurant's cuisine, price and atmosphere fit a diner: the rating shift and the
    traits the review names as liked and disliked."""
    liked, disliked = [], []
    match = 0.0
    if c in likes:
        match += 1.0
        liked.append(f"{CUISINES[c]} food")
    elif c in dislikes:
        match -= 1.0
        disliked.append(f"{CUISINES[c]} food")
    if p > budget:
        match -= 0.6 * (p - budget)
        disliked.append(f"{PRICES[p]} prices")
    elif p < budget and p == 0:
        match += 0.3
        liked.append("low prices")
    if a == favourite_atmos:
        match += 0.6
        liked.append(f"{ATMOSPHERES[a]} atmosphere")
    return match, liked, disliked


def _add(rows: dict[str, list], oracle: list[float], user: int, item: int, rating: int, timestamp: int, review: str,
         expected: float) -> None:
    rows["user_id"].append(f"u{user:05d}")
    rows["item_id"].append(f"r{item:04d}")
    rows["rating"].append(rating)
    rows["timestamp"].append(timestamp)
    rows["review_text"].append(review)
    oracle.append(float(np.clip(expected, SCALE.low, SCALE.high)))


def _world(config: SyntheticConfig, prepare: PrepareConfig | None, rows: dict[str, list], titles: list[str],
           categories: list[str], descriptions: list[str], oracle: list[float]) -> SyntheticWorld:
    items = {
        "item_id": [f"r{i:04d}" for i in range(len(titles))],
        "title": titles,
        "categories": categories,
        "description": descriptions,
    }
    dataset = RatingDataset.from_tables("synthetic", SCALE, rows, items, prepare)
    # from_tables keeps rows in input order when nothing is deduplicated (each user rates an item once)
    assert dataset.stats["duplicates_dropped"] == 0 and len(dataset.ratings) == len(oracle)
    return SyntheticWorld(dataset, config, np.asarray(oracle))


def _describe(cuisines: tuple[str, ...], item_cuisine, item_price, item_atmos) -> list[str]:
    return [
        f"{'An' if PRICES[p][0] in 'aeiou' else 'A'} {PRICES[p]} {cuisines[c]} restaurant with a {ATMOSPHERES[a]} atmosphere, known for its {_DISH[cuisines[c]]}."
        for c, p, a in zip(item_cuisine, item_price, item_atmos)
    ]


def _generate_long_world(config: SyntheticConfig, prepare: PrepareConfig | None,
                         rng: np.random.Generator) -> SyntheticWorld:
    """The long-history variant: per-cuisine tastes, cuisines visited round-robin (module docstring)."""
    cuisines = CUISINES_LONG
    n_items, rounds = config.num_items, config.history_rounds
    if rounds < 1:
        raise ValueError(f"history_rounds must be >= 1, got {rounds}")
    if n_items < len(cuisines) * rounds:
        raise ValueError(
            f"the long-history world needs num_items >= {len(cuisines)} cuisines x history_rounds={rounds} "
            f"(each diner rates {rounds} distinct restaurants of every cuisine), got {n_items}"
        )
    item_cuisine = np.arange(n_items) % len(cuisines)
    item_price = rng.integers(len(PRICES), size=n_items)
    item_atmos = rng.integers(len(ATMOSPHERES), size=n_items)
    item_quality = np.clip(rng.normal(0.0, 0.4, size=n_items), -0.8, 0.8)
    titles = [_name(rng) for _ in range(n_items)]
    categories = [f"Restaurants, {cuisines[c]}" for c in item_cuisine]
    descriptions = _describe(cuisines, item_cuisine, item_price, item_atmos)
    by_cuisine = [np.flatnonzero(item_cuisine == c) for c in range(len(cuisines))]

    rows: dict[str, list] = {k: [] for k in ("user_id", "item_id", "rating", "timestamp", "review_text")}
    oracle: list[float] = []
    for u in range(config.num_users):
        taste = np.clip(rng.normal(0.0, 1.0, size=len(cuisines)), -1.6, 1.6)
        leniency = float(np.clip(rng.normal(0.0, 0.4), -0.8, 0.8))
        order = rng.permutation(len(cuisines))
        visits = [rng.permutation(by_cuisine[c])[:rounds] for c in range(len(cuisines))]
        t = START_TIME + int(rng.integers(0, 365)) * DAY
        for r in range(rounds):
            for c in order:
                i = int(visits[c][r])
                expected = 3.0 + leniency + float(item_quality[i]) + float(taste[c])
                rating = int(np.clip(np.rint(expected + rng.uniform(-config.noise, config.noise)), 1, 5))
                liked = [f"{cuisines[c]} food"] if taste[c] > 0.5 else []
                disliked = [f"{cuisines[c]} food"] if taste[c] < -0.5 else []
                t += int(rng.integers(1, 15)) * DAY + int(rng.integers(0, DAY))
                _add(rows, oracle, u, i, rating, t, _review(rng, rating, liked, disliked, cuisines[c]), expected)
    return _world(config, prepare, rows, titles, categories, descriptions, oracle)


def load_synthetic(
    num_users: int = SyntheticConfig.num_users,
    num_items: int = SyntheticConfig.num_items,
    seed: int = SyntheticConfig.seed,
    min_ratings_per_user: int = SyntheticConfig.min_ratings_per_user,
    max_ratings_per_user: int = SyntheticConfig.max_ratings_per_user,
    noise: float = SyntheticConfig.noise,
    keep_cold_samples: bool = False,
    long_history: bool = False,
    history_rounds: int = SyntheticConfig.history_rounds,
    choice_temperature: float = SyntheticConfig.choice_temperature,
) -> RatingDataset:
    config = SyntheticConfig(num_users, num_items, min_ratings_per_user, max_ratings_per_user, noise, seed,
                             long_history, history_rounds, choice_temperature)
    return generate_world(config, PrepareConfig(keep_cold_samples=keep_cold_samples)).dataset


register_dataset(
    "synthetic",
    load_synthetic,
    SCALE.label,
    "nothing: generated in memory (num_users, num_items, seed, noise, long_history, choice_temperature are parameters)",
)
