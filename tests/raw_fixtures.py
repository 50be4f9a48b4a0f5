"""Tiny raw files in every published layout, written by the tests themselves."""

from __future__ import annotations

import gzip
import json
from pathlib import Path


def write_lines(path: Path, lines: list[str], compress: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(line + "\n" for line in lines).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def jsonl(path: Path, records: list[dict], compress: bool = False) -> Path:
    return write_lines(path, [json.dumps(r) for r in records], compress)


def yelp(root: Path, compress: bool = False) -> Path:
    reviews = [
        {"review_id": "r1", "user_id": "U1", "business_id": "B1", "stars": 5.0, "text": "great tacos",
         "date": "2018-01-01 10:00:00"},
        {"review_id": "r2", "user_id": "U1", "business_id": "B2", "stars": 2.0, "text": "slow service",
         "date": "2018-02-01 10:00:00"},
        {"review_id": "r3", "user_id": "U1", "business_id": "B3", "stars": 4.0, "text": "nice view",
         "date": "2018-03-01 10:00:00"},
        {"review_id": "r4", "user_id": "U2", "business_id": "B1", "stars": 3.0, "text": "fine tacos",
         "date": "2018-01-15 09:00:00"},
        {"review_id": "r5", "user_id": "U2", "business_id": "B3", "stars": 1.0, "text": "cold food",
         "date": "2018-04-01 09:00:00"},
    ]
    businesses = [
        {"business_id": f"B{i}", "name": f"Place {i}", "categories": "Mexican, Restaurants",
         "city": "Tucson", "state": "AZ"}
        for i in (1, 2, 3)
    ]
    suffix = ".json.gz" if compress else ".json"
    jsonl(root / f"yelp_academic_dataset_review{suffix}", reviews, compress)
    jsonl(root / "yelp_academic_dataset_business.json", businesses)
    return root


def amazon_2014(root: Path) -> Path:
    """2014 reviews (JSON) and metadata as Python literals (single quotes, as published)."""
    reviews = [
        {"reviewerID": "A1", "asin": "X1", "overall": 5.0, "reviewText": "loved it", "summary": "wow",
         "unixReviewTime": 1000, "helpful": [0, 0]},
        {"reviewerID": "A1", "asin": "X2", "overall": 3.0, "reviewText": "meh", "summary": "ok",
         "unixReviewTime": 2000, "helpful": [1, 2]},
        {"reviewerID": "A1", "asin": "X3", "overall": 4.0, "reviewText": "good one", "summary": "good",
         "unixReviewTime": 3000, "helpful": [0, 0]},
        {"reviewerID": "A2", "asin": "X1", "overall": 4.0, "reviewText": "solid", "summary": "solid",
         "unixReviewTime": 1500, "helpful": [0, 0]},
    ]
    meta = [
        "{'asin': 'X1', 'title': \"Enya's Album\", 'categories': [['CDs & Vinyl', 'New Age']], 'price': 9.5}",
        "{'asin': 'X2', 'title': 'Second', 'categories': [['CDs & Vinyl', 'Pop']], 'salesRank': {'Music': 5}}",
        "{'asin': 'X3', 'title': 'Third', 'description': 'A live record'}",
    ]
    jsonl(root / "reviews_Digital_Music_5.json", reviews)
    write_lines(root / "meta_Digital_Music.json", meta)
    return root


def amazon_2018(root: Path) -> Path:
    reviews = [
        {"overall": 5.0, "verified": True, "reviewerID": "A1", "asin": "Y1", "reviewText": "fits well",
         "summary": "Five Stars", "unixReviewTime": 1441324800, "style": {"Size:": " L"}},
        {"overall": 2.0, "verified": True, "reviewerID": "A1", "asin": "Y2", "reviewText": "too small",
         "summary": "Two Stars", "unixReviewTime": 1441324900, "vote": "3"},
        {"overall": 4.0, "verified": False, "reviewerID": "A2", "asin": "Y1", "reviewText": "nice fabric",
         "summary": "Good", "unixReviewTime": 1441324950},
    ]
    meta = [{"asin": "Y1", "title": "Shirt", "category": ["Clothing", "Shirts"], "brand": "Acme",
             "description": ["Cotton shirt."]}]
    jsonl(root / "Books_5.json", reviews)
    jsonl(root / "meta_Books.json", meta + [{"asin": "Y2", "title": "Socks", "category": ["Clothing"]}])
    return root


def amazon_2023(root: Path) -> Path:
    """2023 layout, gzipped: timestamps in milliseconds, items keyed by parent_asin."""
    reviews = [
        {"rating": 5.0, "title": "Great", "text": "a fine book", "asin": "c1", "parent_asin": "P1",
         "user_id": "U1", "timestamp": 1600000000000, "helpful_vote": 0, "verified_purchase": True},
        {"rating": 1.0, "title": "Bad", "text": "dull plot", "asin": "c2", "parent_asin": "P2",
         "user_id": "U1", "timestamp": 1600000100000, "helpful_vote": 0, "verified_purchase": True},
        {"rating": 3.0, "title": "Fine", "text": "average", "asin": "c1", "parent_asin": "P1",
         "user_id": "U2", "timestamp": 1600000050000, "helpful_vote": 1, "verified_purchase": False},
    ]
    meta = [
        {"parent_asin": "P1", "title": "Dune", "main_category": "Books", "categories": ["Books", "Sci-Fi"],
         "description": ["Desert planet."], "features": ["Paperback"], "store": "Ace"},
        {"parent_asin": "P2", "title": "Dull", "categories": [], "description": [], "features": []},
    ]
    jsonl(root / "Books.jsonl.gz", reviews, compress=True)
    jsonl(root / "meta_Books.jsonl.gz", meta, compress=True)
    return root


def imdb(root: Path) -> Path:
    reviews = [
        {"review_date": "10 February 2006", "movie_id": "tt1", "user_id": "ur1", "is_spoiler": True,
         "review_text": "Brilliant prison drama", "rating": "10", "review_summary": "best"},
        {"review_date": "6 September 2000", "movie_id": "tt2", "user_id": "ur1", "is_spoiler": False,
         "review_text": "Too long", "rating": "4", "review_summary": "meh"},
        {"review_date": "3 August 2001", "movie_id": "tt1", "user_id": "ur2", "is_spoiler": False,
         "review_text": "Moving", "rating": "9", "review_summary": "good"},
    ]
    movies = [
        {"movie_id": "tt1", "plot_summary": "Two imprisoned men bond.", "duration": "2h 22min",
         "genre": ["Drama"], "rating": 9.3, "release_date": "1994-10-14"},
        {"movie_id": "tt2", "plot_summary": "A long film.", "genre": ["Drama", "War"]},
    ]
    jsonl(root / "IMDB_reviews.json", reviews)
    jsonl(root / "IMDB_movie_details.json", movies)
    return root


def movielens_latest(root: Path) -> Path:
    write_lines(root / "ratings.csv", ["userId,movieId,rating,timestamp", "1,10,4.5,100", "1,20,0.5,200",
                                       "1,30,3.0,300", "2,10,5.0,150"])
    write_lines(root / "movies.csv", ["movieId,title,genres", '10,"Heat, The (1995)",Action|Crime',
                                      "20,Toy Story (1995),Animation|Children", "30,Nixon (1995),Drama"])
    return root


def movielens_100k(root: Path) -> Path:
    write_lines(root / "u.data", ["1\t10\t4\t100", "1\t20\t1\t200", "1\t30\t3\t300", "2\t10\t5\t150"])
    flags = ["0"] * 19
    action = flags.copy()
    action[1] = "1"
    lines = [
        "|".join(["10", "Heat (1995)", "01-Jan-1995", "", "http://x"] + action),
        "|".join(["20", "Caf\xe9 Society (1995)", "01-Jan-1995", "", "http://x"] + flags),
        "|".join(["30", "Nixon (1995)", "01-Jan-1995", "", "http://x"] + flags),
    ]
    (root / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    return root
