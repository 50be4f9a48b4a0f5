"""Readers of the public raw formats; each yields the common interaction and item tuples."""

from recgym.data.readers.amazon import AmazonSource, detect_generation
from recgym.data.readers.base import MissingDataError, RawSource
from recgym.data.readers.imdb import ImdbSource
from recgym.data.readers.movielens import MovieLensSource
from recgym.data.readers.records import BadRecordError, BadRecords
from recgym.data.readers.table import TableSource
from recgym.data.readers.yelp import YelpSource

__all__ = [
    "AmazonSource",
    "BadRecordError",
    "BadRecords",
    "ImdbSource",
    "MissingDataError",
    "MovieLensSource",
    "RawSource",
    "TableSource",
    "YelpSource",
    "detect_generation",
]
