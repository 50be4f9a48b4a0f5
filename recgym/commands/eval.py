"""``recgym eval ENV_ID --model M --policy vllm --split test -n 500 --out results.jsonl``."""

from __future__ import annotations

import argparse
from pathlib import Path

from recgym.commands import CommandError, check_output_path, given_values
from recgym.commands.data import add_dataset_options, dataset_kwargs, env_kwargs_option
from recgym.console import fmt, make_console, metrics_table


def _policy_kwargs(args) -> dict:
    if args.policy == "openai":
        kwargs = {"timeout": args.timeout, "max_concurrency": args.concurrency, "max_retries": args.retries}
        if args.base_url:
            kwargs["base_url"] = args.base_url
        return kwargs
    kwargs = {"dtype": args.dtype} if args.dtype else {}
    if args.policy == "hf":
        kwargs["batch_size"] = args.batch_size * args.samples
        if args.max_model_len is not None:
            kwargs["max_context"] = args.max_model_len
    else:
        kwargs["max_model_len"] = _vllm_max_model_len(args)
        if args.kv_cache_gib is not None:
            kwargs["kv_cache_gib"] = args.kv_cache_gib
    return kwargs


#: vLLM's context length where --max-model-len is left out (the hf policy's is the model's own).
VLLM_MAX_MODEL_LEN = 4096


def _vllm_max_model_len(args) -> int:
    return VLLM_MAX_MODEL_LEN if args.max_model_len is None else args.max_model_len


def _check_counts(args) -> None:
    for flag, value in (("-n", args.n), ("--samples", args.samples), ("--batch-size", args.batch_size),
                        ("--max-model-len", args.max_model_len)):
        if value is not None and value < 1:
            raise CommandError(f"{flag} must be >= 1, got {value}")


def run(args) -> int:
    import gymnasium as gym
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    import recgym  # noqa: F401  (registers the environments)
    from recgym.agents.evaluation import (
        check_not_being_written,
        check_resumable,
        evaluate,
        rating_from_probs_problem,
        record_header,
    )
    from recgym.agents.policies import make_policy
    from recgym.agents.types import SamplingParams

    console = make_console(stderr=True)
    _check_counts(args)
    with given_values():
        sampling = SamplingParams(
            temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed
        )
    env_kwargs = env_kwargs_option(args.env_kwargs, "--split")
    options = dataset_kwargs(args)
    if twice := sorted(options.keys() & env_kwargs.keys()):
        raise CommandError(f"--env-kwargs and {', '.join('--' + k.replace('_', '-') for k in twice)} both set "
                           f"{', '.join(twice)}: give each once")
    env_kwargs.update(options)
    if args.template:
        env_kwargs["template"] = args.template
    try:
        env = gym.make(args.env_id, split=args.split, **env_kwargs)
    except (gym.error.Error, ValueError, TypeError) as exc:  # an unknown id, bad --env-kwargs values
        raise CommandError(f"cannot make {args.env_id}: {exc} (see `recgym envs`)") from exc
    if args.rating_from_probs:
        problem = "--policy scripted has no token probabilities" if args.policy == "scripted" \
            else rating_from_probs_problem(env)
        if problem:
            raise CommandError(f"--rating-from-probs cannot apply: {problem}; leave it out")
    # every setting that changes a record (the template and sampling: record_header) must match a resumed --out;
    # where the data is read from is not one (record_header's dataset_key says which data it is)
    recorded = {k: v for k, v in env_kwargs.items() if k not in ("template", "data_dir", "cache_dir")}
    if isinstance(recorded.get("path"), str):  # a custom dataset's file, however it is spelled
        recorded["path"] = str(Path(recorded["path"]).expanduser().resolve())
    header = {"env_id": args.env_id, "model": args.model, "policy": args.policy, "env_kwargs": recorded}
    # the local model's precision and context change its answers (hf: its own context unless given)
    if args.policy == "vllm":
        header.update(dtype=args.dtype, max_model_len=_vllm_max_model_len(args))
    elif args.policy == "hf":
        header.update(dtype=args.dtype, **({} if args.max_model_len is None else {"max_model_len": args.max_model_len}))
    settings = record_header(env, sampling, args.samples, args.rating_from_probs, header)
    for path, flag in ((args.out, "--out"), (args.metrics_json, "--metrics-json")):  # before the model loads
        if path:
            check_output_path(path, flag)
    if args.out:
        with given_values():  # check_resumable checks the lock too
            if args.no_resume:
                check_not_being_written(args.out)
            else:
                check_resumable(args.out, settings, env, args.n)
    from recgym.agents.models import ModelNotFoundError

    try:
        if args.policy == "scripted":  # a scripted teacher by name, e.g. --model ranker
            from recgym.agents.teachers.cold_start import scripted_teacher

            policy = scripted_teacher(args.model, env_kwargs.get("template"))
        else:
            policy = make_policy(args.policy, args.model, **_policy_kwargs(args))
    except (ModelNotFoundError, ImportError, ValueError, TypeError) as exc:
        raise CommandError(f"cannot load {args.model!r} for --policy {args.policy}: {exc}") from exc
    total = len(env.unwrapped) if args.n is None else min(args.n, len(env.unwrapped))
    if args.n is not None and args.n > total:
        console.print(f"-n {args.n}: the {args.split} split has {total} samples; evaluating all {total}")
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[running]}"), TimeElapsedColumn(), console=console, disable=args.quiet,
    ) as progress:
        task = progress.add_task(f"eval {args.split}", total=total, running="")

        def on_record(record, running):  # rating: MAE and coverage; ranking: NDCG@10 and coverage
            figures = "  ".join(f"{k} {fmt(v)}" for k, v in running.items() if k not in ("done", "total"))
            progress.update(task, completed=running["done"], running=figures)

        try:
            result = evaluate(
                env, policy, n=args.n, out=args.out, resume=not args.no_resume, sampling=sampling,
                samples_per_prompt=args.samples, batch_size=args.batch_size,
                rating_from_probs=args.rating_from_probs, baselines=not args.no_baselines,
                header=header, on_record=on_record,
            )
        except (ValueError, RuntimeError) as exc:  # a prompt too long, an endpoint that failed
            kept = f" (finished samples are kept in {args.out}; rerun to resume)" if args.out else ""
            raise CommandError(f"eval stopped: {exc}{kept}") from exc
        finally:
            getattr(policy, "close", lambda: None)()
    if result.skipped:
        console.print(f"resumed: {result.skipped} samples were already in {args.out}")
    from recgym.data.dataset import preparation
    from recgym.data.store import preparation_label

    prepared = preparation(env.unwrapped.dataset)  # options given to `data prepare` are not remembered
    title = f"{args.env_id} {args.split}: {args.model} ({args.policy})"
    if prepared:
        title += f"; {preparation_label(prepared)}"
    ranking = getattr(env.unwrapped, "task", "rating") == "ranking"
    if ranking:
        make_console().print(_ranking_table(title, result.metrics, result.baselines))
    else:
        notes = [result.baselines_note] if result.baselines_note else []
        if args.samples > 1:
            notes.insert(0, f"each prediction is the mean of {args.samples} completions, an unparsed one counted as "
                         "the fallback; coverage is per completion, MAE parsed over samples whose every completion parsed")
        make_console().print(metrics_table(title, {"LLM": result.metrics}, result.baselines, "; ".join(notes)))
    if ranking and env.unwrapped.skipped:
        core = env.unwrapped
        make_console().print(f"{core.skipped:,} of the {args.split} split's {core.dataset.num_samples(args.split):,} "
                             f"samples have no candidate list (fewer than {core.num_candidates - 1} negatives before "
                             "their time) and are never scored")
    if result.episode_stats:  # multi-turn (RecRatingTools-*): what the agent read to get there
        e = result.episode_stats
        make_console().print(
            f"per episode: {e['tool_calls_mean']:.2f} tool calls, {e['tokens_read_mean']:.1f} tokens read, "
            f"{e['turns_mean']:.2f} turns, {e['invalid_turns_mean']:.2f} invalid turns"
        )
    if result.probs_decoded is not None:
        console.print(f"--rating-from-probs decoded the rating on {result.probs_decoded} of {len(result.records)} "
                      "samples (the parsed rating stands on the others)")
    stats = getattr(policy, "stats", {})
    if stats.get("truncated_prompts"):
        console.print(f"{stats['truncated_prompts']} prompts lost {stats['history_lines_dropped']} history lines to fit the context")
    if args.metrics_json:
        payload = {"metrics": {**result.metrics.as_dict(), **result.episode_stats}, "baselines": result.baselines,
                   "baselines_note": result.baselines_note, "seconds": result.seconds_total,
                   "seconds_this_run": result.seconds, **settings}
        if result.probs_decoded is not None:
            payload["probs_decoded"] = result.probs_decoded
        if ranking:
            payload["samples_skipped"] = env.unwrapped.skipped  # no candidate list: too few negatives
        if prepared:
            payload["preparation"] = prepared
        from recgym.agents.run_log import json_text, write_text_atomic

        Path(args.metrics_json).parent.mkdir(parents=True, exist_ok=True)  # as --out's
        write_text_atomic(Path(args.metrics_json), json_text(payload, indent=2))
    return 0


RANKING_COLUMNS = ("ndcg@5", "ndcg@10", "hr@1", "hr@5", "hr@10", "mrr")


def _ranking_table(title: str, metrics: dict, baselines: dict):
    from rich.table import Table

    table = Table(title=title)
    for column in ("predictor", "n", *(c.upper() for c in RANKING_COLUMNS), "coverage", "format rate",
                   "NDCG@10 vs LLM"):
        table.add_column(column, justify="left" if column == "predictor" else "right", no_wrap=True)
    table.add_row("LLM", str(metrics["n"]), *(fmt(metrics[c]) for c in RANKING_COLUMNS),
                  fmt(metrics["coverage"], ".1%"), fmt(metrics["format_rate"], ".1%"), "-")
    for name, m in baselines.items():
        paired = f"{m['paired_ndcg@10']:+.3f} ± {m['paired_se']:.3f}" if "paired_se" in m else "-"
        table.add_row(f"{name} (baseline)", str(m["n"]), *(fmt(m[c]) for c in RANKING_COLUMNS), "100.0%", "-", paired)
    table.caption = ("unparsed rankings count in the prompt's (shuffled) order; NDCG@10 vs LLM: the LLM's mean "
                     "per-list gain over the baseline ± its paired standard error")
    return table


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="score an LLM policy on a split: MAE, RMSE, coverage, format rate (and, for tool "
        "environments, tool calls and tokens read per episode), next to baselines",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("env_id", help="e.g. RecRating-Synthetic-v0, or the tool-using RecRatingTools-Synthetic-v0 "
                        "(see `recgym envs`)")
    parser.add_argument("--model", default="smollm2-135m-instruct",
                        help="model name, local path or hub id; with --policy scripted a scripted teacher "
                        "(reasoner, user_average, ranker)")
    parser.add_argument("--policy", choices=("hf", "vllm", "openai", "scripted"), default="vllm",
                        help="what answers: a local model (hf, vllm), an OpenAI-compatible endpoint, a scripted teacher")
    parser.add_argument("--split", choices=("train", "valid", "test"), default="test", help="the split to score")
    parser.add_argument("-n", type=int, default=None, help="evaluate the first n samples (None: all)")
    parser.add_argument("--out", default=None, help="JSONL file of per-sample records (resumed if it exists)")
    parser.add_argument("--no-resume", action="store_true", help="overwrite --out instead of resuming")
    parser.add_argument("--samples", type=int, default=1,
                        help="completions per sample; the prediction is their mean, each unparsed one counted as "
                        "the fallback")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling's probability mass")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="tokens per completion at most")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (changes nothing at temperature 0)")
    parser.add_argument("--batch-size", type=int, default=16, help="samples per policy call")
    parser.add_argument("--rating-from-probs", action="store_true",
                        help="predict the expected rating over the scale's digit-token probabilities")
    parser.add_argument("--template", default=None,
                        help="prompt template: think (default) or rate_only; RecRank-*: think or rank_only")
    parser.add_argument("--env-kwargs", default=None, help='JSON, e.g. \'{"max_user_history": 10}\'')
    parser.add_argument("--dtype", default=None, help="model dtype (default float32 on CPU)")
    parser.add_argument("--max-model-len", type=int, default=None,
                        help=f"context length: vllm default {VLLM_MAX_MODEL_LEN}, hf default the model's own "
                        "(max_position_embeddings)")
    parser.add_argument("--kv-cache-gib", type=float, default=None, help="vLLM KV cache in GiB (default: 4 on CPU)")
    parser.add_argument("--base-url", default=None, help="OpenAI-compatible endpoint (default $OPENAI_BASE_URL)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request (openai policy)")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight (openai policy)")
    parser.add_argument("--retries", type=int, default=3,
                        help="retries of a failed request, with exponential backoff (openai policy)")
    parser.add_argument("--no-baselines", action="store_true", help="skip the classical baselines")
    parser.add_argument("--metrics-json", default=None,
                        help="also write the final figures and the settings (split, dataset, sampling, ...) to this JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataset_options(parser)
    parser.set_defaults(func=run)
