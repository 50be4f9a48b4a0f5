"""The real-data environment ids, single-turn (``RecRating-*``) and tool-using (``RecRatingTools-*``).
Each passes its keyword arguments (``data_dir``, ``split``,
``skip_bad_records``, ``kcore``, ...) to the dataset loader of ``recgym.data.loaders``."""

from __future__ import annotations

from recgym.data import loaders as _loaders  # noqa: F401  (registers the real datasets)
from recgym.envs.registration import register_rank_env, register_rating_env, register_tools_env

REAL_ENVS = {
    "RecRating-Yelp-v0": "yelp",
    "RecRating-AmazonBook-v0": "amazon_book",
    "RecRating-AmazonMusic-v0": "amazon_music",
    "RecRating-Amazon-v0": "amazon",
    "RecRating-IMDb-v0": "imdb",
    "RecRating-MovieLens-v0": "movielens",
    "RecRating-Custom-v0": "custom",
}

for _env_id, _dataset in REAL_ENVS.items():
    register_rating_env(_env_id, _dataset)
    register_tools_env(_env_id.replace("RecRating-", "RecRatingTools-", 1), _dataset)
    register_rank_env(_env_id.replace("RecRating-", "RecRank-", 1), _dataset)
