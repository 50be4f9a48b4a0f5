"""``recgym train grpo --config FILE [--resume] [--estimate-memory] [--field value ...]``: GRPO-family training.

``--estimate-memory`` prints the config's GPU memory estimate (:mod:`recgym.agents.learner.memory`) and
exits: 0 when it fits the declared ``gpu_memory_gib``, 2 (with what to change) when it does not.
It reads only the model's ``config.json`` shape: no weights, no GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
from pathlib import Path

from recgym.commands import CommandError, check_output_path, given_values

#: Where a local checkpoint that does not exist yet usually comes from.
SFT_HINT = ("a RecOne SFT checkpoint is made by `recgym sft train` (or `python examples/train_recone.py`); "
            "give its output_dir as the model")


def add_config_options(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One ``--field`` option per config field (values are parsed as YAML, typed by the field), its
    help the field's type, default and docstring."""
    from recgym.agents.config import field_default, field_docs

    group = parser.add_argument_group("config overrides (any field; YAML values)")
    hints = typing.get_type_hints(config_cls)
    docs = field_docs(config_cls)
    for f in dataclasses.fields(config_cls):
        default = field_default(f)
        kind = getattr(hints[f.name], "__name__", str(hints[f.name]))
        doc = f": {docs[f.name]}" if f.name in docs else ""
        group.add_argument(f"--{f.name}", dest=f"cfg__{f.name}", default=argparse.SUPPRESS, metavar="V",
                           help=f"{kind}, default {default!r}{doc}".replace("%", "%%"))


def config_from_args(args: argparse.Namespace, config_cls: type):
    """``--config FILE`` (or the defaults) with the given ``--field`` overrides applied; a file
    that is missing or not YAML, or a bad field or value, is a :class:`CommandError`."""
    import yaml

    overrides = []
    for key, value in vars(args).items():
        if key.startswith("cfg__") and value is not None:
            overrides += [f"--{key[5:]}", value]
    if not args.config:
        with given_values():
            return config_cls().with_overrides(overrides)
    try:
        with given_values(f"{args.config}: "):
            return config_cls.from_yaml(args.config, overrides)
    except OSError as exc:
        raise CommandError(f"cannot read config file {args.config}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise CommandError(f"{args.config} is not valid YAML: {exc}") from exc


def check_model(name: str, hint: str = "") -> Path:
    """Resolve the model before anything slow, so that a missing one fails at once (with ``hint``),
    as does one without a chat template (:func:`has_chat_template`); returns its checkpoint directory."""
    from recgym.agents.models import EMBEDDED_MODELS, ModelNotFoundError, model_path

    try:
        path = model_path(name)
    except ModelNotFoundError as exc:
        suffix = f"; {hint}" if hint and name not in EMBEDDED_MODELS else ""
        raise CommandError(f"model {name!r} not found: {exc}{suffix}") from exc
    if not has_chat_template(path):
        raise CommandError(f"model {name!r} has no chat template: recgym's prompts and SFT traces are chat messages; "
                           "use an instruct (chat) model, or set its tokenizer's chat_template and save it with the model")
    return path


def has_chat_template(path: Path) -> bool:
    """Whether the checkpoint at ``path`` has a chat template: read from its tokenizer files, and where
    they show none, from its tokenizer (a checkpoint without tokenizer files counts as having one:
    loading it fails with its own message)."""
    if any((path / name).exists() for name in ("chat_template.jinja", "chat_template.json", "additional_chat_templates")):
        return True
    config = path / "tokenizer_config.json"
    try:
        if config.is_file() and json.loads(config.read_text()).get("chat_template"):
            return True
    except (OSError, ValueError):
        return True
    if not config.is_file() and not (path / "tokenizer.json").is_file():
        return True
    from recgym.agents.models import load_tokenizer

    try:
        return bool(getattr(load_tokenizer(path), "chat_template", None))
    except (OSError, ValueError):  # a tokenizer that does not load is the loader's to report
        return True


def check_env(env_id: str, env_kwargs: dict, *splits: str) -> None:
    """The environment id (:func:`check_env_id`), then the environment built once on each split with
    ``env_kwargs`` (datasets load once per process, so the run reuses them): a bad keyword, value or
    split is a :class:`CommandError` naming them."""
    import gymnasium as gym

    check_env_id(env_id)
    if "split" in env_kwargs:
        raise CommandError(f"env_kwargs cannot set split ({env_kwargs['split']!r}): the run chooses each split "
                           f"({', '.join(dict.fromkeys(splits))}) with its own split fields")
    for split in dict.fromkeys(splits):
        with given_values(f"{env_id}, split {split!r}, env_kwargs {env_kwargs}: "):
            gym.make(env_id, split=split, **env_kwargs).close()


def check_env_id(env_id: str) -> None:
    """An unregistered environment id fails before anything is loaded."""
    import gymnasium as gym

    import recgym  # noqa: F401  (registers the environments)

    try:
        gym.spec(env_id)
    except gym.error.Error as exc:
        raise CommandError(f"env_id: {exc} (see `recgym envs`)") from exc


def check_schedule(name: str, field: str = "lr_scheduler_type") -> None:
    """A learning-rate schedule that ``transformers.get_scheduler`` knows, checked before anything slow
    (the configs do not import transformers to check it themselves)."""
    from transformers import SchedulerType

    known = [s.value for s in SchedulerType]
    if name not in known:
        raise CommandError(f"{field} {name!r} is not a schedule transformers knows: choose one of {', '.join(known)}")


def check_config(config, model_hint: str = SFT_HINT) -> None:
    """What a ``GRPOConfig`` names, checked before the model loads: that ``output_dir`` can be
    written (:func:`~recgym.commands.check_output_path`), each ``report_to`` tracker's
    package (the run imports it only once the model has loaded), the algorithm and its
    ``algorithm_kwargs``, the schedule, the environment with its ``env_kwargs`` on the training and
    evaluation splits, the model (``model_hint`` says where a missing one comes from) and
    ``trainable_layers`` against its blocks (:func:`check_layers_fit`). A problem is a
    :class:`CommandError` naming the field."""
    import importlib.util

    from recgym.agents.algorithms import get_algorithm

    check_output_path(config.output_dir, "output_dir", folder=True)
    for name in config.report_to:  # each target's package has its name (TensorBoard's writer is torch's)
        if importlib.util.find_spec(name) is None:
            raise CommandError(f"report_to {name} needs the {name} package, which is not installed: "
                               f"pip install {name} (or leave {name} out of report_to)")
    try:
        algorithm = get_algorithm(config.algorithm)
    except KeyError as exc:
        raise CommandError(f"{exc.args[0]} (see `recgym algorithms`)") from exc
    with given_values("algorithm_kwargs: "):
        algorithm.from_config(config, **config.algorithm_kwargs)
    check_schedule(config.lr_scheduler_type)
    check_env(config.env_id, config.env_kwargs, config.train_split, config.eval_split)
    check_layers_fit(config.model, config.trainable_layers, model_hint)


def check_layers_fit(model: str, trainable_layers: int, hint: str = "") -> None:
    """The model (:func:`check_model`), and ``trainable_layers`` no more than its transformer blocks
    (the learner refuses more only once it has loaded the weights)."""
    from recgym.agents.config import check_layer_count

    blocks = json.loads((check_model(model, hint) / "config.json").read_text()).get("num_hidden_layers")
    if blocks is not None:
        with given_values(f"--model {model}: "):
            check_layer_count(trainable_layers, int(blocks))


def register(subparsers) -> None:
    from recgym.agents.config import GRPOConfig

    parser = subparsers.add_parser("train", help="train an LLM policy with RL (grpo, dr_grpo, rloo, reinforce, ...)")
    sub = parser.add_subparsers(dest="trainer", metavar="TRAINER", required=True)
    grpo = sub.add_parser("grpo", help="the GRPO-family trainer (the algorithm is a config field)",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    grpo.add_argument("--config", help="YAML file of config fields (examples/configs/*.yaml)")
    grpo.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in output_dir")
    grpo.add_argument("--estimate-memory", action="store_true",
                      help="print the GPU memory estimate against gpu_memory_gib and exit (0: fits, 2: does not); "
                           "loads no weights")
    add_config_options(grpo, GRPOConfig)
    grpo.set_defaults(func=run)


def estimate(config) -> int:
    """Print the memory table; 0 when it fits, 2 (advice on stderr) when not or when it cannot be made."""
    import sys

    from recgym.agents.learner.memory import estimate_memory
    from recgym.console import make_console

    try:
        result = estimate_memory(config)
    except (ValueError, TypeError, KeyError) as exc:  # KeyError: an unknown algorithm; TypeError: its knobs
        print(f"recgym train grpo --estimate-memory: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    make_console().print(result.table())
    if result.fits:
        print(result.summary())
        return 0
    print(result.summary(), file=sys.stderr)
    print("change one of: " + "; ".join(result.advice()), file=sys.stderr)
    return 2


def run(args) -> int:
    from recgym.agents.config import GRPOConfig

    config = config_from_args(args, GRPOConfig)
    if args.estimate_memory:
        return estimate(config)
    check_config(config)
    from recgym.agents.checkpoints import check_output_dir

    with given_values():
        check_output_dir(config, args.resume)

    from recgym.agents.learner.data_parallel import end_process_group
    from recgym.agents.run_log import comparison_table, current_plot
    from recgym.agents.trainer import train
    from recgym.console import make_console

    result = train(config, resume=args.resume)
    end_process_group()
    if result.evals:  # the main process's; the others of a multi-process run print nothing
        rows = {f"step {result.evals[0]['step']}": result.evals[0]}
        if len(result.evals) > 1:
            rows[f"step {result.evals[-1]['step']}"] = result.evals[-1]
        make_console().print(comparison_table(rows))
        curves = current_plot(config.output_dir)
        print(f"metrics: {config.output_dir}/metrics.jsonl" + (f", plot: {curves}" if curves else ""))
    return 0
