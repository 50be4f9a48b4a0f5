"""What `recgym baseline` and `recgym eval` say about the data they scored: the preparation's split and
k-core, a preparation made anew beside one with other options, ranking samples skipped; and what
`recgym baseline --limit` refuses."""

from __future__ import annotations

import json
from pathlib import Path

import raw_fixtures as fx

from recgym.cli import main


def movielens(root: Path) -> Path:
    """ml-latest layout: 6 users, each rating 8 of 12 movies."""
    ratings = [f"{u},{m},{1 + (u + m) % 5}.0,{1_600_000_000 + 1000 * m + u}" for u in range(1, 7) for m in range(1, 13)
               if (u + m) % 3]
    fx.write_lines(root / "ratings.csv", ["userId,movieId,rating,timestamp", *ratings])
    fx.write_lines(root / "movies.csv", ["movieId,title,genres", *(f"{m},Movie {m} (1995),Drama" for m in range(1, 13))])
    return root


def flat(text: str) -> str:
    return " ".join(text.split())


def test_baseline_and_eval_titles_name_the_split_and_kcore(tmp_path, monkeypatch, capsys):
    """The titles gave the scale alone: a leave-last-out table read like one of the time split prepared before."""
    monkeypatch.setenv("RECGYM_CACHE", str(tmp_path / "cache"))
    root = movielens(tmp_path / "ml")
    assert main(["baseline", "RecRating-MovieLens-v0", "--data-dir", str(root), "--split-method", "time",
                 "--valid-fraction", "0.2", "--test-fraction", "0.2"]) == 0
    out = flat(capsys.readouterr().out)
    assert "RecRating-MovieLens-v0: classical baselines (scale 0.5-5 step 0.5, split time, valid 0.2, test 0.2, " \
           "no k-core, fit on train)" in out
    assert main(["baseline", "RecRank-MovieLens-v0", "--data-dir", str(root), "--kcore", "2", "--splits", "test",
                 "--env-kwargs", '{"num_candidates": 3}']) == 0
    assert "samples skipped; split leave_last_out, k-core 2)" in flat(capsys.readouterr().out)
    metrics = tmp_path / "m.json"
    assert main(["eval", "RecRating-MovieLens-v0", "--data-dir", str(root), "--keep-cold-samples", "--policy",
                 "scripted", "--model", "user_average", "-n", "2", "--quiet", "--metrics-json", str(metrics)]) == 0
    assert "RecRating-MovieLens-v0 test: user_average (scripted); split leave_last_out, no k-core, cold samples " \
           "kept" in flat(capsys.readouterr().out)
    assert json.loads(metrics.read_text())["preparation"] == {
        "split_method": "leave_last_out", "valid_fraction": 0.1, "test_fraction": 0.1, "kcore": 0,
        "keep_cold_samples": True, "skip_bad_records": False}


def test_a_load_by_name_notes_the_preparation_it_does_not_reuse(tmp_path, monkeypatch, capsys):
    """After `data prepare --split-method time`, a name-only baseline prepared leave-last-out silently."""
    monkeypatch.setenv("RECGYM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RECGYM_DATA_DIR", raising=False)
    root = movielens(tmp_path / "ml")
    assert main(["data", "prepare", "movielens", "--data-dir", str(root), "--split-method", "time", "--kcore", "2"]) == 0
    capsys.readouterr()
    assert main(["baseline", "RecRating-MovieLens-v0"]) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if line.startswith("recgym: warning:")]
    assert notes == [("recgym: warning: dataset 'movielens': preparing it anew with split_method='leave_last_out', "
                     "kcore=0, while the cache holds these raw files prepared with split_method='time', kcore=2 "
                     "(--split-method time --kcore 2): preparation options are not remembered; pass them again to "
                     "use that preparation")]
    assert "split leave_last_out, no k-core" in flat(captured.out)
    assert main(["baseline", "RecRating-MovieLens-v0", "--split-method", "time", "--kcore", "2"]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and "split time, valid 0.1, test 0.1, k-core 2" in flat(captured.out)
    assert len(list((tmp_path / "cache" / "datasets" / "movielens").iterdir())) == 2


def test_a_preparation_given_on_purpose_is_not_noted(tmp_path, monkeypatch, capsys):
    """Every fresh preparation warned about the others in the cache, options the user gave included."""
    monkeypatch.setenv("RECGYM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RECGYM_DATA_DIR", raising=False)
    data = ["--data-dir", str(movielens(tmp_path / "ml"))]
    assert main(["data", "prepare", "movielens", *data, "--split-method", "time", "--kcore", "2"]) == 0
    assert main(["data", "prepare", "movielens", *data, "--split-method", "time", "--kcore", "3"]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["data", "prepare", "movielens", *data, "--split-method", "time"]) == 0  # k-core left out
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("recgym: warning:")]
    assert len(notes) == 1 and "preparing it anew with kcore=0, while the cache holds these raw files prepared " \
        "with kcore=2 (--kcore 2); or with kcore=3 (--kcore 3)" in notes[0], notes


def test_eval_reports_the_ranking_samples_it_skipped(tmp_path, capsys):
    """`recgym baseline` said how many samples had too few negatives for a list; `recgym eval` did not."""
    metrics = tmp_path / "m.json"
    args = ["eval", "RecRank-Synthetic-v0", "--policy", "scripted", "--model", "ranker", "--split", "valid", "-n", "2",
            "--quiet", "--no-baselines", "--env-kwargs", '{"num_candidates": 64}']
    assert main([*args, "--metrics-json", str(metrics)]) == 0
    out = flat(capsys.readouterr().out)
    assert "2 of the valid split's 300 samples have no candidate list (fewer than 63 negatives before their time) " \
           "and are never scored" in out
    assert json.loads(metrics.read_text())["samples_skipped"] == 2
    assert main([*args[:-2], "--metrics-json", str(metrics)]) == 0  # 20 candidates: none skipped
    assert "no candidate list" not in capsys.readouterr().out
    assert json.loads(metrics.read_text())["samples_skipped"] == 0


def test_baseline_refuses_a_negative_limit_and_a_limit_without_lists(capsys):
    """--limit -3 scored every list but the last 3; on a rating env --limit was ignored."""
    assert main(["baseline", "RecRank-Synthetic-v0", "--splits", "valid", "--limit", "-3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "recgym baseline: error: --limit must be >= 0 (0: every list), got -3"
    assert main(["baseline", "RecRating-Synthetic-v0", "--limit", "5"]) == 2
    assert "--limit applies to RecRank-* environments" in capsys.readouterr().err
    assert main(["baseline", "RecRank-Synthetic-v0", "--splits", "valid", "--limit", "0"]) == 0
    assert "on the same 300 candidate lists" in flat(capsys.readouterr().out)
