"""``recgym compare A.jsonl B.jsonl``: two ``recgym eval --out`` files on the same samples side by side,
with B's paired gain over A and its standard error."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from recgym.commands import CommandError, given_values
from recgym.console import make_console

#: Header fields two files must share to be results on the same samples and prompts (where both hold them:
#: ``evaluate(out=)`` from Python records no ``env_id``; each paired sample's prompt hash is checked too).
SAME_SAMPLES = ("env_id", "dataset", "dataset_key", "split", "scale", "task", "num_candidates", "negatives",
                "template")
#: Header fields of how the answers were decoded and read: files may differ in them (comparing two
#: decodings of one model is a use), and the summary names those that do.
PROTOCOL = ("temperature", "top_p", "max_new_tokens", "seed", "stop", "samples_per_prompt", "rating_from_probs",
            "mean_of_k", "dtype", "max_model_len")


def compare_records(records_a: list[dict[str, Any]], records_b: list[dict[str, Any]],
                    names: tuple[str, str] = ("A", "B")) -> dict[str, Any]:
    """B against A on the samples both hold (paired by sample index): each one's MAE (ranking: NDCG@10)
    and coverage there, B's gain (``metrics.paired_difference``; ranking ``paired_ranking_difference``;
    positive: B is better) with its standard error, the samples only one of them holds, and the decoding
    settings in which they differ (``protocol_differs``: {field: [A's, B's]}). A
    ValueError where they are not results on the same samples: another env, split, data (``dataset_key``),
    scale or template, or a paired sample whose prompt or target differs."""
    import numpy as np

    from recgym.agents.evaluation import completion_ranks, parsed_share, ranking_parsed_share
    from recgym.metrics import paired_difference, paired_ranking_difference, ranking_values

    for name, records in zip(names, (records_a, records_b)):
        if not records:
            raise ValueError(f"{name} holds no records")
    first_a, first_b = records_a[0], records_b[0]
    sides = [{"task": "rating", **first} for first in (first_a, first_b)]  # rating records name no task
    differ = [f"{key}={sides[0][key]!r} vs {sides[1][key]!r}" for key in SAME_SAMPLES
              if key in sides[0] and key in sides[1] and sides[0][key] != sides[1][key]]
    if differ:
        raise ValueError(f"{names[0]} and {names[1]} are not results on the same samples ({'; '.join(differ)}); "
                         "compare files of one env, split, data and template")
    ranking = first_a.get("task") == "ranking"
    needed = ("index", "prompt_sha1", "target", *(("rank", "reward_breakdowns") if ranking else ("prediction_or_fallback",)))
    by_index = []
    for name, records in zip(names, (records_a, records_b)):
        held: dict[int, dict[str, Any]] = {}
        for line, record in enumerate(records, 1):
            if not isinstance(record, dict) or any(key not in record for key in needed):
                raise ValueError(f"{name}: record {line} lacks {', '.join(needed)}; is it a recgym eval --out file?")
            if int(record["index"]) in held:
                raise ValueError(f"{name} holds sample {record['index']} twice")
            held[int(record["index"])] = record
        by_index.append(held)
    a, b = by_index
    common = sorted(a.keys() & b.keys())
    unlike = [i for i in common if (a[i]["prompt_sha1"], a[i]["target"]) != (b[i]["prompt_sha1"], b[i]["target"])]
    if unlike:
        i = unlike[0]
        what = "prompt" if a[i]["prompt_sha1"] != b[i]["prompt_sha1"] else f"target ({a[i]['target']} vs {b[i]['target']})"
        raise ValueError(f"{len(unlike)} of the {len(common)} paired samples differ in prompt or target (sample {i}: "
                         f"the {what}); {names[0]} and {names[1]} were not scored on the same samples")
    if len(common) < 2:
        raise ValueError(f"{len(common)} sample(s) in both {names[0]} and {names[1]}; a paired standard error needs 2")
    pa, pb = [a[i] for i in common], [b[i] for i in common]
    if ranking:
        metric = "ndcg@10"
        ranks_a, ranks_b = [completion_ranks(r) for r in pa], [completion_ranks(r) for r in pb]
        value_a, value_b = (float(ranking_values(r)[metric].mean()) for r in (ranks_a, ranks_b))
        gain, se = paired_ranking_difference(ranks_a, ranks_b, metric)
        coverage = [float(np.mean([ranking_parsed_share(r) for r in p])) for p in (pa, pb)]
    else:
        metric = "mae"
        errors_a, errors_b = (np.array([r["prediction_or_fallback"] - r["target"] for r in p]) for p in (pa, pb))
        value_a, value_b = float(np.abs(errors_a).mean()), float(np.abs(errors_b).mean())
        gain, se = paired_difference(errors_a, errors_b)
        coverage = [float(np.mean([parsed_share(r) for r in p])) for p in (pa, pb)]
    greedy = first_a.get("temperature") == first_b.get("temperature") == 0  # a seed changes nothing there
    protocol = {key: [first_a.get(key), first_b.get(key)] for key in PROTOCOL
                if first_a.get(key) != first_b.get(key) and not (greedy and key == "seed")}
    return {
        "metric": metric, "protocol_differs": protocol, "n": len(common), "only_in_a": len(a.keys() - b.keys()), "only_in_b": len(b.keys() - a.keys()),
        "value_a": value_a, "value_b": value_b, "coverage_a": coverage[0], "coverage_b": coverage[1],
        "gain": gain, "se": se,
        **{key: first_a.get(key) for key in ("env_id", "split", "dataset_key", "template")},
        **{f"{key}_{side}": first.get(key) for key in ("model", "policy") for side, first in (("a", first_a), ("b", first_b))},
    }


def run(args: argparse.Namespace) -> int:
    from recgym.agents.evaluation import read_records
    from recgym.agents.run_log import json_text
    from recgym.metrics import paired_change_text

    records = []
    for path in (args.a, args.b):
        if not Path(path).is_file():
            raise CommandError(f"{path}: no such file; pass two `recgym eval --out` files")
        with given_values():
            records.append(read_records(path))
    with given_values():
        summary = compare_records(*records, names=(args.a, args.b))
    summary = {"a": args.a, "b": args.b, **summary}
    if args.json:
        print(json_text(summary, indent=2))
        return 0
    label = "NDCG@10" if summary["metric"] == "ndcg@10" else "MAE"
    console = make_console()
    for side in ("a", "b"):
        console.print(f"{side.upper()}: {summary[side]} ({summary['model_' + side]}, {summary['policy_' + side]})",
                      highlight=False)
    if summary["protocol_differs"]:
        console.print("decoded differently: " + "; ".join(f"{key} {a!r} (A) vs {b!r} (B)" for key, (a, b)
                                                          in summary["protocol_differs"].items()), highlight=False)
    console.print(f"{summary['env_id'] or 'env'} {summary['split']}: {summary['n']} paired samples; unpaired: "
                  f"{summary['only_in_a']} only in A, {summary['only_in_b']} only in B", highlight=False)
    console.print(f"{label}: A {summary['value_a']:.3f}, B {summary['value_b']:.3f} (coverage "
                  f"{summary['coverage_a']:.1%}, {summary['coverage_b']:.1%})", highlight=False)
    what = "MAE lower by" if label == "MAE" else "NDCG@10 higher by"
    console.print(f"B vs A: {paired_change_text(summary['gain'], summary['se'], what)}", highlight=False)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "compare", help="two `recgym eval --out` files on the same samples: each one's MAE (ranking: NDCG@10) "
        "and B's paired gain over A with its standard error",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("a", help="the first results file (A)")
    parser.add_argument("b", help="the second results file (B); a positive gain means B is better")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.set_defaults(func=run)
