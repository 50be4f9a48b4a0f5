"""The real-data loaders, registered by name: ``yelp``, ``amazon_book``, ``amazon_music``,
``amazon``, ``imdb``, ``movielens`` and ``custom``.

Every loader takes ``data_dir`` (default ``$RECGYM_DATA_DIR/<name>``) and the preparation
options of :func:`prepare_options`; the prepared dataset is cached (see ``recgym.data.pipeline``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from recgym.data.dataset import PrepareConfig, RatingDataset
from recgym.data.pipeline import prepare_source
from recgym.data.readers import (
    AmazonSource,
    ImdbSource,
    MissingDataError,
    MovieLensSource,
    RawSource,
    TableSource,
    YelpSource,
)
from recgym.data.registry import register_dataset

REAL_DATASETS = ("yelp", "amazon_book", "amazon_music", "amazon", "imdb", "movielens", "custom")
BOOK_FILES = ("Books",)
MUSIC_FILES = ("Digital_Music", "CDs_and_Vinyl", "Music", "CDs")


def default_data_dir(name: str, data_dir: Path | str | None, cache_dir: Path | str | None = None) -> Path | None:
    """``data_dir`` if given, else ``$RECGYM_DATA_DIR/<name>`` if that variable is set, else the folder
    that ``name`` was prepared from (``recgym data prepare NAME --data-dir DIR``), if the cache holds
    one that still exists; several are a :class:`MissingDataError` that names them."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    root = os.environ.get("RECGYM_DATA_DIR")
    if root:
        return Path(root).expanduser() / name
    folders = prepared_folders(name, cache_dir)
    if len(folders) > 1:
        raise MissingDataError(f"dataset {name!r} was prepared from several folders ({', '.join(map(str, folders))}): "
                               "pass data_dir (--data-dir) to choose one")
    return folders[0] if folders else None


def prepared_folders(name: str, cache_dir: Path | str | None = None) -> list[Path]:
    """The existing folders whose raw files the cache's prepared ``name`` datasets were read from."""
    from recgym.cache import cache_dir as default_cache

    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache(create=False)
    folders: set[Path] = set()
    for manifest in (root / "datasets" / name).glob("*/manifest.json"):
        try:
            folders.update(Path(f["path"]).parent for f in json.loads(manifest.read_text())["files"])
        except (OSError, ValueError, KeyError, TypeError):  # a manifest being written, or of an older format
            continue
    return sorted(f for f in folders if f.is_dir())


def prepare(
    name: str,
    source: RawSource,
    *,
    skip_bad_records: bool = False,
    kcore: int = 0,
    split_method: str = "leave_last_out",
    valid_fraction: float = 0.1,
    test_fraction: float = 0.1,
    keep_cold_samples: bool = False,
    cache_dir: Path | str | None = None,
    progress: bool = True,
    rebuild: bool = False,
) -> RatingDataset:
    """Prepare (or load from the cache) ``source`` with the given options."""
    for flag, value in (("skip_bad_records", skip_bad_records), ("progress", progress), ("rebuild", rebuild)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be True or False, got {value!r}")
    config = PrepareConfig(split_method, valid_fraction, test_fraction, kcore, keep_cold_samples)
    return prepare_source(name, source, config, skip_bad_records, cache_dir, progress, rebuild)


def make_source(name: str, data_dir: Path | str | None = None, cache_dir: Path | str | None = None,
                **reader: Any) -> RawSource:
    """The raw source of a registered real dataset (no reading yet); ``cache_dir`` is where to look
    for the folder it was prepared from when ``data_dir`` is not given (:func:`default_data_dir`)."""
    data_dir = default_data_dir(name, data_dir, cache_dir) if name != "custom" else data_dir
    if name == "yelp":
        return YelpSource(data_dir)
    if name == "imdb":
        return ImdbSource(data_dir)
    if name == "movielens":
        return MovieLensSource(data_dir)
    if name in ("amazon", "amazon_book", "amazon_music"):
        hint = {"amazon_book": BOOK_FILES, "amazon_music": MUSIC_FILES}.get(name, ())
        return AmazonSource(data_dir, name, hint, reader.get("reviews_file"), reader.get("meta_file"))
    if name == "custom":
        return TableSource(reader.get("path"), reader.get("columns"), reader.get("scale", (1, 5)))
    raise ValueError(f"no raw reader for dataset {name!r}")


def load_yelp(data_dir: Path | str | None = None, **options: Any) -> RatingDataset:
    return prepare("yelp", make_source("yelp", data_dir, options.get("cache_dir")), **options)


def load_imdb(data_dir: Path | str | None = None, **options: Any) -> RatingDataset:
    return prepare("imdb", make_source("imdb", data_dir, options.get("cache_dir")), **options)


def load_movielens(data_dir: Path | str | None = None, **options: Any) -> RatingDataset:
    return prepare("movielens", make_source("movielens", data_dir, options.get("cache_dir")), **options)


def _amazon_loader(name: str):
    def load(
        data_dir: Path | str | None = None,
        reviews_file: str | None = None,
        meta_file: str | None = None,
        **options: Any,
    ) -> RatingDataset:
        source = make_source(name, data_dir, options.get("cache_dir"), reviews_file=reviews_file, meta_file=meta_file)
        return prepare(name, source, **options)

    load.__name__ = f"load_{name}"
    load.__doc__ = f"Dataset {name!r}: an Amazon review file (2014/2018/2023) and optional meta file."
    return load


load_amazon = _amazon_loader("amazon")
load_amazon_book = _amazon_loader("amazon_book")
load_amazon_music = _amazon_loader("amazon_music")


def load_custom(
    path: Path | str | None = None,
    columns: Mapping[str, str] | None = None,
    scale: Any = (1, 5),
    **options: Any,
) -> RatingDataset:
    """Any ratings table: ``columns`` maps user/item/rating/timestamp (+ optional review,
    review_title, title, categories, item_text) to the file's columns."""
    return prepare("custom", make_source("custom", path=path, columns=columns, scale=scale), **options)


register_dataset(
    "yelp", load_yelp, "1-5",
    "data_dir with yelp_academic_dataset_review.json (+ _business.json)",
    options=prepare,
)
register_dataset(
    "amazon_book", load_amazon_book, "1-5",
    "data_dir with an Amazon Books review file (2014/2018/2023) (+ meta_Books)",
    options=prepare,
)
register_dataset(
    "amazon_music", load_amazon_music, "1-5",
    "data_dir with an Amazon Digital_Music or CDs_and_Vinyl review file (+ meta_*)",
    options=prepare,
)
register_dataset(
    "amazon", load_amazon, "1-5",
    "data_dir with one Amazon review file of any category (+ meta_*)",
    options=prepare,
)
register_dataset(
    "imdb", load_imdb, "1-10",
    "data_dir with IMDB_reviews.json (+ IMDB_movie_details.json)",
    options=prepare,
)
register_dataset(
    "movielens", load_movielens, "0.5-5 step 0.5 (ml-latest) / 1-5 (ml-100k)",
    "data_dir with ratings.csv + movies.csv (ml-latest-small) or u.data + u.item (ml-100k)",
    options=prepare,
)
register_dataset(
    "custom", load_custom, "given by scale=(low, high[, step])",
    "path to a CSV/TSV/JSONL/Parquet file, columns={user, item, rating, timestamp, ...}, scale",
    options=prepare,
)
