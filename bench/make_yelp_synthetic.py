"""Write a file in the Yelp Open Dataset raw schema, of any size, for scale benchmarks.

Reviews have Yelp-like text lengths (log-normal, median ~90 words), skewed user and business
popularity, and dates over ten years. ``--businesses`` also writes the business file.

    python bench/make_yelp_synthetic.py OUT_DIR --reviews 1000000 [--gzip]
"""

from __future__ import annotations

import argparse
import gzip
import json
import string
from pathlib import Path

import numpy as np

WORDS = ["the", "food", "was", "great", "service", "friendly", "staff", "amazing", "place", "order", "table", "wait", "time", "price", "delicious", "fresh", "menu", "dinner", "lunch", "coffee", "pizza", "burger", "salad", "chicken", "taste", "nice", "back", "again", "never", "recommend", "love", "hate", "slow", "fast", "clean", "dirty", "parking", "location", "music", "drinks", "dessert", "cold", "hot", "spicy", "sweet", "small", "big", "portion", "value", "worth", "visit", "owner", "manager", "experience", "best", "worst", "okay"]


def _ids(rng: np.random.Generator, n: int) -> np.ndarray:
    alphabet = np.frombuffer((string.ascii_letters + string.digits + "-_").encode(), dtype=np.uint8)
    return rng.choice(alphabet, size=(n, 22)).view("S22").ravel()


def write(out_dir: Path, reviews: int, seed: int = 0, compress: bool = False, chunk: int = 100_000) -> Path:
    """Write ``yelp_academic_dataset_review.json[.gz]`` (and the business file) under ``out_dir``."""
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_users, n_items = max(10, reviews // 8), max(10, reviews // 40)
    user_ids, item_ids = _ids(rng, n_users), _ids(rng, n_items)
    vocab = np.array(WORDS)
    suffix = ".json.gz" if compress else ".json"
    path = out_dir / f"yelp_academic_dataset_review{suffix}"
    opener = gzip.open if compress else open
    start = np.datetime64("2010-01-01T00:00:00").astype(np.int64)
    with opener(path, "wt", encoding="utf-8") as out:
        for base in range(0, reviews, chunk):
            n = min(chunk, reviews - base)
            users = (n_users * rng.random(n) ** 2).astype(np.int64)  # a few heavy users
            items = (n_items * rng.random(n) ** 3).astype(np.int64)  # popular businesses
            stars = rng.integers(1, 6, n)
            seconds = start + rng.integers(0, 10 * 365 * 86400, n)
            dates = np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s")
            lengths = np.clip(rng.lognormal(4.5, 0.7, n).astype(int), 5, 1000)
            words = rng.choice(vocab, size=int(lengths.sum()))
            ends = np.cumsum(lengths)
            for k in range(n):
                text = " ".join(words[ends[k] - lengths[k] : ends[k]]).capitalize() + "."
                out.write(json.dumps({
                    "review_id": f"r{base + k}", "user_id": user_ids[users[k]].decode(),
                    "business_id": item_ids[items[k]].decode(), "stars": float(stars[k]),
                    "useful": 0, "funny": 0, "cool": 0, "text": text,
                    "date": str(dates[k]).replace("T", " "),
                }) + "\n")
    with open(out_dir / "yelp_academic_dataset_business.json", "w", encoding="utf-8") as out:
        for k, business in enumerate(item_ids):
            out.write(json.dumps({
                "business_id": business.decode(), "name": f"Business {k}", "city": "Santa Barbara",
                "state": "CA", "stars": 4.0, "categories": "Restaurants, Food",
            }) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--reviews", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gzip", action="store_true")
    args = parser.parse_args()
    print(write(args.out_dir, args.reviews, args.seed, args.gzip))


if __name__ == "__main__":
    main()
