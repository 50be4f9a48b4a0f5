"""Training configuration: one dataclass, every knob named, typed, defaulted and documented.

Load it from YAML (``GRPOConfig.from_yaml(path)``), build it in Python (``GRPOConfig(max_steps=3)``)
and override any field from the command line (``config.with_overrides(["--max_steps", "3"])``).
Values on the command line are parsed as YAML scalars/collections, so ``--env_kwargs
'{num_users: 40}'`` and ``--report_to '[tensorboard]'`` work.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import itertools
import re
import textwrap
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


def field_default(f: dataclasses.Field) -> Any:
    """A dataclass field's default value (a fresh one from its ``default_factory``)."""
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Each field's attribute docstring (the string under it in the dataclass body, its own or a base
    class's) on one line, double backquotes made single: the flags' help texts. A class whose source
    cannot be read has none."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        except (OSError, TypeError, IndexError, AttributeError, SyntaxError):
            continue
        for node, after in itertools.pairwise(body):
            if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split()).replace("``", "`")
    return docs


def check_trainable_layers(trainable_layers: int, use_lora: bool) -> None:
    """``trainable_layers``' checks, shared by the GRPO and SFT configs."""
    if trainable_layers < 0:
        raise ValueError(f"trainable_layers must be >= 0 (0: every weight trains), got {trainable_layers}")
    if trainable_layers and use_lora:
        raise ValueError("trainable_layers and use_lora are two ways to train part of the model: choose one")


def check_layer_count(trainable_layers: int, blocks: int) -> None:
    """Refuse ``trainable_layers`` above the model's number of transformer blocks."""
    if trainable_layers > blocks:
        raise ValueError(f"trainable_layers {trainable_layers} is more than the model's {blocks} blocks: "
                         f"give at most {blocks}, or 0 to train every weight")


class ConfigMixin:
    """YAML loading, command-line overrides and validation for the training config dataclasses."""

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, values: dict[str, Any]):
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
        hints = typing.get_type_hints(cls)
        return cls(**{k: _coerce(v, hints[k], k) for k, v in values.items()})  # type: ignore[call-arg]

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None):
        """Read a YAML mapping of field -> value, then apply ``--field value`` overrides."""
        values = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(values, dict):
            raise TypeError(f"{path}: expected a mapping of config fields, got {type(values).__name__}")
        return cls.from_dict(values).with_overrides(overrides or [])

    def with_overrides(self, args: list[str]):
        """Return a copy with ``--field value`` / ``--field=value`` pairs applied."""
        values = self.to_dict()
        hints = typing.get_type_hints(type(self))
        for key, value in parse_overrides(args, self.field_names()).items():
            try:
                values[key] = _coerce(value, hints[key], key)
            except TypeError as exc:
                shape = "; write a YAML mapping, e.g. '{name: 1}'" if typing.get_origin(hints[key]) is dict else ""
                raise TypeError(f"{exc} (given on the command line: --{key}{shape})") from None
        return type(self).from_dict(values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def require(self, low: float, *names: str, strict: bool = False) -> None:
        """A ValueError naming the first field of ``names`` below ``low`` (or at it, with ``strict``)."""
        for name in names:
            value = getattr(self, name)
            if value < low or (strict and value == low):
                raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {value}")

    def to_yaml(self, path: str | Path) -> None:
        """Write the config; values YAML cannot hold (Python objects in ``env_kwargs``) become their repr."""
        Path(path).write_text(yaml.safe_dump(plain_values(self.to_dict()), sort_keys=False))


#: ``report_to`` names: the trackers ``recgym.agents.run_log`` writes to.
REPORT_TARGETS = ("tensorboard", "wandb", "trackio")


def plain_values(value: Any) -> Any:
    """``value`` with anything YAML/JSON cannot hold replaced by its repr."""
    if isinstance(value, dict):
        return {str(k): plain_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_values(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return repr(value)


def changed_fields(cls: type, now: dict[str, Any], saved: dict[str, Any]) -> list[str]:
    """The keys of ``now`` (plain values of dataclass ``cls``'s settings) whose values differ from
    ``saved``; a field ``saved`` lacks (added to recgym later) counts as unchanged at its default."""
    defaults = plain_values({f.name: field_default(f) for f in dataclasses.fields(cls)})
    return sorted(k for k, v in now.items() if _unplaced(saved.get(k, defaults.get(k))) != _unplaced(v))


def _unplaced(value: Any) -> Any:
    """``value`` with the memory addresses in object reprs (``<... object at 0x7f...>``) blanked:
    they differ between processes, not between settings."""
    if isinstance(value, dict):
        return {k: _unplaced(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unplaced(v) for v in value]
    return re.sub(r" at 0x[0-9a-fA-F]+>", " at ...>", value) if isinstance(value, str) else value


def resolve_algorithm(name: str) -> str:
    """``path/to/file.py:Class`` with the file's absolute path, so that a run resumed from another
    folder finds it; a registered name or ``package.module:Class`` as given."""
    where, sep, attr = name.rpartition(":")
    if not sep or not where.endswith(".py"):
        return name
    return f"{Path(where).expanduser().resolve()}:{attr}"


def parse_overrides(args: list[str], names: list[str]) -> dict[str, Any]:
    """``["--max_steps", "3", "--policy=hf"]`` -> ``{"max_steps": 3, "policy": "hf"}`` (YAML-typed)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise ValueError(f"expected --field value, got {arg!r}")
        key, eq, value = arg[2:].partition("=")
        key = key.replace("-", "_")
        if key not in names:
            raise ValueError(f"unknown config field --{key}; fields: {', '.join(names)}")
        if not eq:
            if i + 1 >= len(args):
                raise ValueError(f"--{key} needs a value")
            value = args[i + 1]
            i += 1
        out[key] = yaml.safe_load(value) if value != "" else ""
        i += 1
    return out


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Check/convert a YAML value to the field's annotated type (int -> float allowed)."""
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, name)
            except (TypeError, ValueError):
                continue
        raise TypeError(f"{name}: {value!r} does not fit {hint}")
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML reads "1e-5" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            raise TypeError(f"{name}: expected float, got {value!r}") from None
    if hint is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if hint is str and isinstance(value, str):
        return value
    if hint in (int, bool) and type(value) is hint:
        return value
    if origin is list and isinstance(value, list | tuple):
        return list(value)
    if origin is list and isinstance(value, str):  # "--report_to tensorboard"
        return [value]
    if origin is dict and isinstance(value, dict):
        return dict(value)
    if hint is Any:
        return value
    raise TypeError(f"{name}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


@dataclass
class GRPOConfig(ConfigMixin):
    """Everything a GRPO-family training run needs. Defaults fit a small CPU run on the synthetic world."""

    # ---- environment ----
    env_id: str = "RecRating-Synthetic-v0"
    """A registered RecRating environment id."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments for ``gym.make`` (both splits), e.g. ``{num_users: 60, template: rate_only}``."""
    train_split: str = "train"
    eval_split: str = "valid"
    """The split evaluated every ``eval_interval`` steps (greedy decoding)."""

    # ---- model and policy ----
    model: str = "smollm2-135m-instruct"
    """A recgym model name, a Hugging Face id, or a local checkpoint path (e.g. an SFT output)."""
    policy: str = "hf"
    """Generation backend: ``hf`` (shares the learner's weights) or ``vllm`` (weights pushed each step)."""
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the policy (e.g. vLLM's ``gpu_memory_utilization``)."""
    dtype: str = "float32"
    """Compute dtype of the learner: float32, or bfloat16 / float16 as mixed precision (trainable
    weights and optimizer state stay float32; forward and backward run under autocast). float16
    needs a CUDA GPU (loss scaling)."""
    gradient_checkpointing: bool = False
    keep_freed_memory: bool = True
    """A learner on CPU keeps the memory it frees for the next step instead of handing it back to
    the kernel and faulting it in again (glibc; ``recgym.agents.learner.host_memory``): the demo's
    learning pass 0.7-1.8 s shorter on a 2-core CPU; the process's resident memory stays at its peak."""
    shared_prompt: bool = True
    """Compute each group's prompt once per micro-batch and reuse it for its completions (same
    logprobs and gradients as running every row on its own, fewer FLOPs); False runs every row."""
    gpu_memory_gib: float | None = None
    """Memory of one GPU the run is planned for; ``--estimate-memory`` checks the config against it,
    and the trainer refuses on a GPU a config whose estimate exceeds it. None: the device's own."""

    # ---- algorithm ----
    algorithm: str = "grpo"
    """A registered algorithm name (``recgym algorithms`` lists them), or your own class as
    ``path/to/file.py:Class`` (kept with the file's absolute path) or ``package.module:Class``."""
    algorithm_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra constructor arguments for algorithms beyond the named ones below (which are set as
    fields, not here)."""
    group_size: int = 4
    """G: completions sampled per prompt; advantages are relative within a group."""
    prompts_per_step: int = 4
    """Prompts per training step; a step's batch holds ``prompts_per_step * group_size`` completions."""
    clip_epsilon: float = 0.2
    """PPO ratio clipping."""
    beta: float = 0.0
    """KL penalty weight to the reference (initial) model; 0 disables it and the reference model."""
    kl_estimator: str = "k3"
    """KL estimator: k2 or k3 (GRPO's); k1 only with ``beta: 0`` (as a loss its expected gradient is zero)."""
    loss_aggregation: str | None = None
    """None: the algorithm's own (its paper's); ``sequence``: mean of each completion's token mean
    (GRPO); ``token``: mean over all tokens of the batch; ``sequence_sum``: each completion's token
    sum, averaged over completions (RLOO, REINFORCE)."""
    scale_rewards: bool = True
    """GRPO divides group-centered rewards by the group's std."""
    advantage_epsilon: float = 1e-4

    # ---- sampling ----
    prompt_sampling: str = "shuffle"
    """Which training prompts a step draws: ``shuffle``, a shuffled pass over the split;
    ``stratified``, the same pass ordered so that each step's prompts come one from each of
    ``prompts_per_step`` equal bands of the target ratings (a step's mean target then stays near the
    split's, where a few prompts drawn at random push every prediction toward theirs). Rating
    environments only."""
    max_steps: int = 20
    max_new_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 1.0
    eval_max_new_tokens: int | None = None
    """Generation cap for evaluation; None uses ``max_new_tokens``."""

    # ---- optimization ----
    learning_rate: float = 1e-6
    lr_scheduler_type: str = "constant"
    """Any ``transformers.get_scheduler`` name: constant, linear, cosine, constant_with_warmup, ..."""
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    adam_epsilon: float = 1e-8
    """AdamW's epsilon. At 1e-8 every weight with any gradient moves by about the learning rate in
    the first steps, whatever its gradient's size; near the gradients' typical size (median 1e-5,
    99th percentile 2e-4 for SmolLM2-135M under GRPO) small gradients move their weights less."""
    num_inner_epochs: int = 1
    """Passes over each rollout batch (>1 makes later passes off-policy: the ratio clipping matters)."""
    micro_batch_size: int = 4
    """Completions per forward/backward pass."""
    gradient_accumulation_steps: int = 0
    """Micro-batches per optimizer update; 0 means one update per pass over the whole rollout batch."""
    max_grad_norm: float = 1.0
    """Gradient-norm clipping; 0 disables it."""
    trainable_layers: int = 0
    """0: every weight trains. N > 0: only the top N transformer blocks and the final norm; the
    embeddings (and an output head tied to them) and the lower blocks are frozen, so the backward
    pass stops at the lowest trainable block (``make demo``'s learner: a third less learning time for
    10 of SmolLM2-135M's 30 blocks, ``docs/benchmarks.md``). Not with ``use_lora``."""

    # ---- LoRA (peft) ----
    use_lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )

    # ---- evaluation, checkpoints, logging ----
    eval_on_start: bool = True
    """Evaluate before the first step (off when the starting checkpoint's evaluation is known)."""
    eval_interval: int = 10
    """Evaluate every this many steps (and always before the first and after the last); 0: only those."""
    eval_size: int = 32
    """Validation samples per evaluation (the same first ``eval_size`` every time)."""
    eval_batch_size: int = 64
    """Prompts per policy call during evaluation (vLLM is fastest with many at once)."""
    process_group_timeout_minutes: float = 180.0
    """Several processes: how long a process waits for the others in a collective before the run
    fails (torch's process-group timeout; its default is 30 minutes with gloo, 10 with NCCL). The
    other processes wait this long while the main one evaluates, so it must exceed an evaluation."""
    collapse_action: str = "warn"
    """What an evaluation showing a collapse does (``recgym/agents/collapse_guard.py``): ``warn``
    (log it and go on), ``stop`` (checkpoint and end the run there), ``restore`` (load the weights of
    the last evaluation that showed none, checkpoint them and end), or ``off``. Decided from the
    greedy format rate and the prediction spread only, never from the error."""
    collapse_format_drop: float = 0.25
    """A collapse: the greedy format rate this far (or more) below the run's best earlier evaluation."""
    collapse_min_prediction_std: float = 0.05
    """A collapse: the spread of the greedy predictions (fallbacks included) below this."""
    save_interval: int = 10
    """Checkpoint every this many steps (and at the end); 0: only at the end."""
    save_total_limit: int = 2
    """Checkpoints kept on disk (the newest); 0 keeps every one."""
    output_dir: str = "runs/grpo"
    report_to: list[str] = field(default_factory=list)
    """Extra trackers: ``tensorboard``, ``wandb``, ``trackio`` (metrics.jsonl is always written)."""
    log_completions: int = 2
    """Completions written per evaluation to ``completions.jsonl`` (the greedy answers to its first
    samples, with their targets); they are not printed."""
    live_display: bool = True
    """A rich live table when stdout is a terminal; elsewhere (a pipe, a log file), or when off, one
    line per step and evaluation."""
    plot: bool = True
    """Write ``curves.png`` at the end (needs matplotlib)."""
    seed: int = 0

    def __post_init__(self) -> None:
        self.algorithm = resolve_algorithm(self.algorithm)
        if clash := [k for k in self.algorithm_kwargs if k in self.field_names()]:
            key, value = clash[0], self.algorithm_kwargs[clash[0]]
            raise ValueError(f"algorithm_kwargs: {key} is a config field: set it as the field ({key}: {value!r}, "
                             f"--{key} {value!r}), not in algorithm_kwargs")
        self.require(1, "group_size", "prompts_per_step", "max_new_tokens", "micro_batch_size", "num_inner_epochs",
                     "eval_size", "eval_batch_size")
        self.require(0, "max_steps", "eval_interval", "save_interval", "gradient_accumulation_steps", "warmup_steps",
                     "save_total_limit", "log_completions")
        self.require(0, "learning_rate", "weight_decay", "max_grad_norm", "beta", "advantage_epsilon")
        self.require(0, "adam_epsilon", "clip_epsilon", "process_group_timeout_minutes", strict=True)
        for name in ("adam_beta1", "adam_beta2", "lora_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}: GRPO learns from the differences "
                             "between a group's samples, and greedy decoding gives none")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_p < 1:
            raise ValueError(f"top_p must be 1 for training, got {self.top_p}: the learner scores the full softmax, "
                             "not the top-p-truncated distribution the policy would sample from")
        if self.use_lora and self.lora_r < 1:
            raise ValueError(f"lora_r must be >= 1 with use_lora, got {self.lora_r}")
        if unknown := [name for name in self.report_to if name not in REPORT_TARGETS]:
            raise ValueError(f"report_to: unknown target(s) {unknown}; choose from {', '.join(REPORT_TARGETS)}")
        if self.collapse_action not in ("off", "warn", "stop", "restore"):
            raise ValueError(f"collapse_action must be off, warn, stop or restore, got {self.collapse_action!r}")
        check_trainable_layers(self.trainable_layers, self.use_lora)
        if self.prompt_sampling not in ("shuffle", "stratified"):
            raise ValueError(f"prompt_sampling must be shuffle or stratified, got {self.prompt_sampling!r}")
        if self.policy not in ("hf", "vllm"):
            raise ValueError(f"policy must be 'hf' or 'vllm', got {self.policy!r}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if self.kl_estimator not in ("k1", "k2", "k3"):
            raise ValueError(f"kl_estimator must be k1, k2 or k3, got {self.kl_estimator!r}")
        if self.loss_aggregation not in (None, "sequence", "token", "sequence_sum"):
            raise ValueError(
                f"loss_aggregation must be null, sequence, token or sequence_sum, got {self.loss_aggregation!r}")
        if self.dtype == "float16":
            raise ValueError("dtype float16 is refused for training: it needs loss scaling, which recgym does "
                             "not do; use bfloat16 (same memory, float32's range) or float32")
        if self.train_split == self.eval_split:
            warnings.warn(f"train_split and eval_split are both {self.eval_split!r}: the validation figures then score "
                          "the training samples (fine for debugging or choosing settings; do not report them)")
