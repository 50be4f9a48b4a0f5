"""Preparation at scale: time, reviews/s, peak RSS and on-disk size for synthetic Yelp files.

Each size is prepared in a fresh process (so peak RSS is that run's alone), from a file in
the Yelp raw schema written by ``make_yelp_synthetic.py`` (kept in ``--work`` between runs).
Targets on a 2-core machine: 1M reviews in <= 60 s; peak RSS < 3 GB at 3M; time per review
at 3M within 1.3x of that at 100k.

    python bench/prepare_scale.py [--sizes 100000 1000000 3000000] [--work /tmp/recgym-bench]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_yelp_synthetic import write

CHILD = """
import json, resource, sys, time
from recgym.data.loaders import load_yelp
start = time.perf_counter()
ds = load_yelp(sys.argv[1], cache_dir=sys.argv[2], progress=False, keep_cold_samples=True)
seconds = time.perf_counter() - start
start = time.perf_counter()
load_yelp(sys.argv[1], cache_dir=sys.argv[2], progress=False, keep_cold_samples=True)
print(json.dumps({"seconds": seconds, "reload_seconds": time.perf_counter() - start,
                  "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "ratings": ds.stats["ratings"], "cache_dir": ds.stats["cache_dir"]}))
"""


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run(size: int, work: Path) -> dict:
    raw = work / f"yelp_{size}"
    if not (raw / "yelp_academic_dataset_review.json").exists():
        write(raw, size)
    cache = work / f"cache_{size}"
    shutil.rmtree(cache, ignore_errors=True)
    out = subprocess.run([sys.executable, "-c", CHILD, str(raw), str(cache)],
                         check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(reviews=size, raw_bytes=dir_size(raw), prepared_bytes=dir_size(cache))
    result["reviews_per_s"] = size / result["seconds"]
    result["us_per_review"] = 1e6 * result["seconds"] / size
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000, 3_000_000])
    parser.add_argument("--work", type=Path, default=Path("/tmp/recgym-bench"))
    args = parser.parse_args()
    rows = [run(size, args.work) for size in args.sizes]
    print("| reviews | time (s) | reviews/s | µs/review | peak RSS (MB) | raw (MB) | prepared (MB) | reload (s) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['reviews']:,} | {r['seconds']:.1f} | {r['reviews_per_s']:,.0f} | {r['us_per_review']:.1f} "
              f"| {r['peak_rss_kb'] / 1024:,.0f} | {r['raw_bytes'] / 2**20:,.0f} "
              f"| {r['prepared_bytes'] / 2**20:,.0f} | {r['reload_seconds']:.3f} |")
    base = rows[0]["us_per_review"]
    for r in rows[1:]:
        print(f"time per review at {r['reviews']:,} / at {rows[0]['reviews']:,}: {r['us_per_review'] / base:.2f}x")


if __name__ == "__main__":
    main()
