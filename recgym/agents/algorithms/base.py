"""The :class:`Algorithm` base class and the name -> class registry.

An algorithm has two jobs:

1. ``advantages(batch)``: per-completion (shape ``[B]``) or per-token (``[B, C]``) advantages
   from the rollout's rewards and group ids, in numpy, computed once per rollout batch.
2. ``loss(inputs)``: the learner's loss for one micro-batch, in torch, given the new logprobs of
   the completion tokens, the logprobs at rollout time and optionally a reference model's.

``loss`` must return the micro-batch's *contribution* to the loss of its optimizer update: the
trainer sums the contributions of the update's micro-batches (gradient accumulation) and the result
equals the update's loss computed at once. :class:`LossInputs` therefore carries the update-wide
totals (``total_sequences``, ``total_tokens``) needed to normalize. A rollout batch feeds one update
or several (``num_inner_epochs``, ``gradient_accumulation_steps``); each is normalized by its own
rows and tokens, as verl does.
"""

from __future__ import annotations

import inspect
import re
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch

from recgym.agents.types import RolloutBatch

KLEstimator = Literal["k1", "k2", "k3"]
LossAggregation = Literal["sequence", "token", "sequence_sum"]
LOSS_AGGREGATIONS = ("sequence", "token", "sequence_sum")


@dataclass
class LossInputs:
    """What an algorithm's ``loss`` sees for one micro-batch (all tensors ``[b, C]`` unless noted)."""

    logprobs: torch.Tensor
    """The learner's logprobs of the completion tokens, with gradient."""
    old_logprobs: torch.Tensor
    """Logprobs under the policy that sampled the tokens (no gradient)."""
    mask: torch.Tensor
    """1.0 on real completion tokens, 0.0 on padding."""
    advantages: torch.Tensor
    """``[b]`` or ``[b, C]``, from :meth:`Algorithm.advantages`."""
    total_sequences: int
    """Completions in this optimizer update (all its micro-batches), on this process."""
    total_tokens: float
    """Real completion tokens in this optimizer update (all its micro-batches). In a multi-process
    run, the mean over processes of each one's count, so that averaging the processes' gradients
    gives the mean over every token of the update."""
    ref_logprobs: torch.Tensor | None = None
    """Reference model's logprobs, when the algorithm uses a KL penalty."""
    max_completion_length: int | None = None
    """The sampling cap ``max_new_tokens`` (Dr. GRPO's constant normalizer)."""
    group_ids: torch.Tensor | None = None
    """``[b]`` int64: rows with equal id share a prompt (whole groups when :attr:`Algorithm.whole_groups`)."""
    prompt_ids: torch.Tensor | None = None
    """``[b, P]`` left-padded prompt tokens, for an algorithm that runs a model of its own (a critic)."""
    prompt_mask: torch.Tensor | None = None
    completion_ids: torch.Tensor | None = None
    """``[b, C]`` right-padded completion tokens (``mask`` marks the real ones)."""


_REGISTRY: dict[str, type[Algorithm]] = {}
A = TypeVar("A", bound=type["Algorithm"])


def register_algorithm(name: str) -> Callable[[A], A]:
    """Class decorator: make ``cls`` available as ``get_algorithm(name)``."""
    _check_algorithm_name(name)

    def decorator(cls: A) -> A:
        _check_algorithm_class(cls)
        known = _REGISTRY.get(name)
        if known is not None and known is not cls and not _same_definition(known, cls):
            raise ValueError(f"algorithm {name!r} is already registered ({known.__module__}.{known.__qualname__}): "
                             f"choose another name for {cls.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def _check_algorithm_name(name: Any) -> None:
    if isinstance(name, type):
        raise TypeError(f"register_algorithm needs a name: write @register_algorithm(\"my_name\") above class "
                        f"{name.__qualname__}, not @register_algorithm")
    if not isinstance(name, str):
        raise TypeError(f"algorithm name {name!r} must be a str: write @register_algorithm(\"my_name\")")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", name):
        raise ValueError(f"algorithm name {name!r} must be a non-empty str of letters, digits, _ and -, starting "
                         "with a letter or _ (a config names it as `algorithm: my_name`)")


#: The arguments the trainer (and the base class's ``loss``) call each overridable method with.
HOOK_ARGUMENTS = {
    "setup": ("model", "config"), "keep_groups": ("batch",), "shape_rewards": ("batch", "max_new_tokens"),
    "after_update": (), "state_dict": (), "load_state_dict": ("state",), "advantages": ("batch",),
    "loss": ("inputs",), "per_token_loss": ("inputs",), "importance_ratio": ("inputs",), "clip_range": (),
    "aggregate": ("per_token", "inputs"), "clipped": ("inputs",), "clip_fraction": ("inputs",),
}


def _check_algorithm_class(cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise TypeError(f"{cls!r} is not an Algorithm subclass")
    if cls.advantages is Algorithm.advantages:  # training would stop at its first step
        raise TypeError(f"{cls.__name__} does not define advantages(batch), which every algorithm needs")
    for name, args in HOOK_ARGUMENTS.items():  # or a TypeError traceback once the model has loaded
        hook = inspect.getattr_static(cls, name)
        if hook is vars(Algorithm)[name] or not inspect.isfunction(hook):  # a staticmethod, ...: not checked
            continue
        signature = inspect.signature(hook)
        signature = signature.replace(parameters=[p.replace(annotation=p.empty) for p in signature.parameters.values()],
                                      return_annotation=signature.empty)
        try:
            signature.bind("self", *args)
        except TypeError:
            wanted = ", ".join(("self", *args))
            raise TypeError(f"{cls.__name__}.{name}{signature} cannot be called as {name}({', '.join(args)}): "
                            f"define it as def {name}({wanted})") from None


def _same_definition(a: type, b: type) -> bool:
    """One class defined again (a notebook cell run twice, a file imported under another name)."""
    def source(cls: type) -> str | None:  # from its methods' code: the module may be in no registry
        return next((f.__code__.co_filename for f in vars(cls).values() if inspect.isfunction(f)), None)

    return a.__qualname__ == b.__qualname__ and (a.__module__ == b.__module__ or source(a) == source(b) is not None)


def get_algorithm(name: str) -> type[Algorithm]:
    """The class registered as ``name``, or, for ``"path/to/file.py:Class"`` or ``"package.module:Class"``,
    that class (importing the file or module registers what it decorates): how a config or the
    command line names an algorithm of your own."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        return _import_algorithm(name)
    known = ", ".join(sorted(_REGISTRY)) or "none"
    raise KeyError(f"unknown algorithm {name!r}; registered: {known}; your own: 'path/to/file.py:Class' "
                   "or 'package.module:Class'")


def _import_algorithm(target: str) -> type[Algorithm]:
    import importlib

    where, _, attr = target.rpartition(":")
    try:
        if where.endswith(".py"):
            path = Path(where).expanduser().resolve()
            if not path.is_file():
                raise KeyError(f"algorithm {target!r}: {path} does not exist")
            module = _import_file(path)
        else:
            module = importlib.import_module(where)
    except ImportError as exc:
        raise KeyError(f"algorithm {target!r}: cannot import {where!r} ({exc}){_sibling_hint(where, exc)}") from exc
    except (ValueError, TypeError, SyntaxError) as exc:  # register_algorithm refused a name or a class
        raise KeyError(f"algorithm {target!r}: importing {where} failed: {type(exc).__name__}: {exc}") from exc
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
        raise KeyError(f"algorithm {target!r}: {where} has no Algorithm subclass named {attr!r}")
    try:
        _check_algorithm_class(cls)
    except TypeError as exc:
        raise KeyError(f"algorithm {target!r}: {exc}") from None
    return cls


def _import_file(path: Path) -> types.ModuleType:
    """The module of plug-in file ``path`` (absolute), run once per process. Its name holds a hash of
    the path, so that two files of one name in different folders are two modules."""
    import hashlib
    import importlib.util
    import sys

    module_name = f"recgym_algorithm_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    module = sys.modules.get(module_name)
    if module is not None and getattr(module, "__file__", None) == str(path):
        return module
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look classes up there
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]  # or the next call would take the half-run module for a loaded one
        raise
    return module


def _sibling_hint(where: str, exc: ImportError) -> str:
    """Advice for a plug-in file that imports a module next to it: its folder is not on ``sys.path``."""
    if not where.endswith(".py") or not exc.name:
        return ""
    folder = Path(where).expanduser().resolve().parent
    if not (folder / f"{exc.name.partition('.')[0]}.py").exists():
        return ""
    return f"; {folder} is not on the Python path: add it to PYTHONPATH"


def list_algorithms() -> dict[str, str]:
    """Registered names -> the first line of each class's docstring."""
    return {
        name: (inspect.getdoc(cls) or "").splitlines()[0] if inspect.getdoc(cls) else ""
        for name, cls in sorted(_REGISTRY.items())
    }


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from sampled tokens (Schulman's k1/k2/k3).

    k1 = log r, k2 = (log r)^2 / 2, k3 = exp(-log r) - 1 + log r, with log r = logp - ref_logp.
    k3 (the GRPO paper's) is unbiased and always >= 0.

    k1 is fine as a logged statistic but not as a loss term: its gradient is the score function
    ``grad log pi``, whose expectation under the sampling policy is zero, so ``beta * k1`` adds
    noise and no pull towards the reference. :class:`Algorithm` refuses it when ``beta > 0``.
    """
    log_ratio = logprobs - ref_logprobs
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.exp(-log_ratio) - 1 + log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r} (k1, k2, k3)")


def per_group(batch: RolloutBatch, fn: Callable[[np.ndarray], np.ndarray],
              group_ids: np.ndarray | None = None) -> np.ndarray:
    """Apply ``fn(finite rewards of one group [g]) -> values [g]`` to every group (of ``group_ids``,
    by default the batch's); result in batch order.

    A non-finite reward (NaN or inf: a reward function's bug) takes no part in its group's values
    and gets 0, as in TRL, so it cannot spoil the advantages of the rest of its group. The trainer
    counts such rewards (``nonfinite_rewards``) and warns."""
    rewards = np.asarray(batch.rewards, dtype=np.float64)
    group_ids = batch.group_ids if group_ids is None else np.asarray(group_ids)
    finite = np.isfinite(rewards)
    out = np.zeros_like(rewards)
    for gid in np.unique(group_ids):
        rows = np.flatnonzero((group_ids == gid) & finite)
        if len(rows):
            out[rows] = fn(rewards[rows])
    return out.astype(np.float32)


def token_advantages(inputs: LossInputs) -> torch.Tensor:
    """The advantages as ``[b, C]`` or ``[b, 1]`` (per completion), to multiply per-token terms."""
    return inputs.advantages if inputs.advantages.dim() == 2 else inputs.advantages.unsqueeze(1)


def sequence_mean(per_token: torch.Tensor, inputs: LossInputs) -> torch.Tensor:
    """This micro-batch's share of ``1/B sum_i mean_t per_token[i, t]`` (``B``: the update's completions)."""
    mask = inputs.mask
    per_seq = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    return per_seq.sum() / inputs.total_sequences


def token_mean(per_token: torch.Tensor, inputs: LossInputs) -> torch.Tensor:
    """This micro-batch's share of the mean of ``per_token`` over the update's real tokens."""
    return (per_token * inputs.mask).sum() / max(inputs.total_tokens, 1)


class Algorithm:
    """Base class. Subclasses override :meth:`advantages` and usually :meth:`per_token_loss`.

    The default :meth:`loss` is the PPO-clip surrogate on :meth:`per_token_loss`, plus an optional
    KL penalty (``beta * k3`` or ``k2``; ``k1`` is refused as a loss term, see :func:`kl_penalty`),
    aggregated over the ``B`` completions of the batch with ``loss_aggregation``:

    - ``"sequence"``: ``1/B sum_i mean_t l[i, t]`` (each completion's token mean; GRPO's);
    - ``"token"``: ``sum_{i,t} l[i, t] / (number of tokens in the update)``;
    - ``"sequence_sum"``: ``1/B sum_i sum_t l[i, t]`` (each completion's token sum; REINFORCE's
      and RLOO's sequence-level estimator, no per-length normalization).

    (``B``: the completions of one optimizer update.) ``loss_aggregation=None`` takes the class's
    :attr:`default_loss_aggregation`. Constructor arguments are the knobs an algorithm reads from
    the training config; :meth:`from_config` picks the ones a class accepts by name.

    The logged ``kl`` and ``clip_fraction`` are plain token means whatever the aggregation (GSPO's
    clip fraction: a share of completions); ``clip_fraction`` counts TRL's way, the tokens whose
    gradient the clip stops (see :meth:`clipped`).
    """

    name: ClassVar[str] = ""
    default_loss_aggregation: ClassVar[LossAggregation] = "sequence"
    """The aggregation used when ``loss_aggregation`` is None (the algorithm's paper's)."""

    def __init__(
        self,
        *,
        clip_epsilon: float = 0.2,
        beta: float = 0.0,
        kl_estimator: KLEstimator = "k3",
        loss_aggregation: LossAggregation | None = None,
        advantage_epsilon: float = 1e-4,
    ) -> None:
        if clip_epsilon < 0:
            raise ValueError(f"clip_epsilon must be >= 0, got {clip_epsilon}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if loss_aggregation is None:
            loss_aggregation = self.default_loss_aggregation
        if loss_aggregation not in LOSS_AGGREGATIONS:
            raise ValueError(f"loss_aggregation must be one of {', '.join(LOSS_AGGREGATIONS)}, got {loss_aggregation!r}")
        if kl_estimator not in ("k1", "k2", "k3"):
            raise ValueError(f"kl_estimator must be k1, k2 or k3, got {kl_estimator!r}")
        if kl_estimator == "k1" and beta > 0:
            raise ValueError(
                "kl_estimator='k1' cannot be a loss term (beta > 0): its gradient is grad log pi, which is "
                "zero in expectation, so the KL penalty would not act; use kl_estimator='k3' (GRPO's) or 'k2'"
            )
        self.clip_epsilon = clip_epsilon
        self.beta = beta
        self.kl_estimator = kl_estimator
        self.loss_aggregation = loss_aggregation
        self.advantage_epsilon = advantage_epsilon

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> Algorithm:
        """Build from any object/dict whose attribute names match constructor arguments, plus
        ``overrides`` (a config's ``algorithm_kwargs``), which must be knobs of the class, of their
        types. A ValueError or TypeError, one line naming the class, where they are not."""
        values = config if isinstance(config, dict) else vars(config)
        from recgym.agents.algorithms.knobs import check_knobs, constructor_knobs

        knobs = constructor_knobs(cls)
        overrides = check_knobs(cls, knobs, values, overrides)
        kwargs = {k: v for k, v in values.items() if k in knobs}
        kwargs.update(overrides)
        algorithm = cls(**kwargs)
        if missing := [k for k in inspect.signature(Algorithm.__init__).parameters if k != "self"
                       and not hasattr(algorithm, k)]:
            raise TypeError(f"{cls.__name__}.__init__ does not call super().__init__(**kwargs) (no {missing[0]}): "
                            "call it in your __init__ with the keyword arguments it does not take itself")
        return algorithm

    @property
    def needs_reference(self) -> bool:
        """Whether the trainer must compute reference-model logprobs for :meth:`loss`."""
        return self.beta > 0

    @property
    def learns_only_from_advantages(self) -> bool:
        """Whether the loss's gradient is exactly 0 where every advantage is 0 (no KL term, no other
        part), so that the trainer may skip the learner's pass on such a batch."""
        return not self.needs_reference

    @property
    def frozen_model_copies(self) -> dict[str, str]:
        """The frozen copies of the initial model this algorithm keeps without LoRA (with LoRA the
        base model with the adapter off serves instead), name -> purpose, for the memory estimate."""
        return {"reference model": "for the KL term or the loss (needs_reference)"} if self.needs_reference else {}

    # ---- extension points: each default does nothing, the trainer calls them all ----
    uses_importance_ratio: ClassVar[bool] = True
    """False: the loss has no importance ratio (nor clip, nor ``clip_fraction``), so the updates
    after a batch's first learn off-policy with nothing to correct it (the trainer warns)."""
    whole_groups: ClassVar[bool] = False
    """True: every micro-batch holds whole groups (a loss that compares a group's completions)."""
    max_refills: ClassVar[int] = 0
    """Extra rollout rounds per step to replace the groups :meth:`keep_groups` drops."""

    def setup(self, model: torch.nn.Module, config: Any) -> None:
        """Called once the learner is loaded: build modules the algorithm owns (a critic) and their
        optimizer. Their state goes through :meth:`state_dict` into every checkpoint."""

    def keep_groups(self, batch: RolloutBatch) -> np.ndarray:
        """``[num_groups]`` bool, in group-id order: the groups worth learning from. The trainer
        rolls out fresh prompts (up to :attr:`max_refills` rounds) to replace the dropped ones, and
        fills any shortfall with dropped groups, so a step's batch keeps its size."""
        return np.ones(len(np.unique(batch.group_ids)), dtype=bool)

    def shape_rewards(self, batch: RolloutBatch, max_new_tokens: int) -> RolloutBatch:
        """The rewards the advantages are computed from (e.g. a penalty for overlong completions)."""
        return batch

    def after_update(self) -> dict[str, float]:
        """Called after each optimizer update of the learner: step the algorithm's own optimizer."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (checkpoint resume)."""

    # ---- advantages (numpy, once per rollout batch) ----
    def advantages(self, batch: RolloutBatch) -> np.ndarray:
        raise NotImplementedError

    # ---- loss (torch, once per micro-batch) ----
    def importance_ratio(self, inputs: LossInputs) -> torch.Tensor:
        """``[b, C]`` ratio ``pi / pi_old`` that the surrogate clips: per token (GSPO: per sequence)."""
        return torch.exp(inputs.logprobs - inputs.old_logprobs)

    def clip_range(self) -> tuple[float, float]:
        """``(low, high)``: the ratio is clipped to ``[1 - low, 1 + high]`` (DAPO: clip-higher)."""
        return self.clip_epsilon, self.clip_epsilon

    def per_token_loss(self, inputs: LossInputs) -> torch.Tensor:
        """PPO-clip surrogate per token: ``-min(r A, clip(r, 1-eps_low, 1+eps_high) A)``."""
        adv = token_advantages(inputs)
        ratio = self.importance_ratio(inputs)
        low, high = self.clip_range()
        clipped = torch.clamp(ratio, 1 - low, 1 + high)
        return -torch.min(ratio * adv, clipped * adv)

    def aggregate(self, per_token: torch.Tensor, inputs: LossInputs) -> torch.Tensor:
        """Reduce ``[b, C]`` to this micro-batch's share of the update's loss."""
        if self.loss_aggregation == "sequence":
            return sequence_mean(per_token, inputs)
        if self.loss_aggregation == "sequence_sum":
            return (per_token * inputs.mask).sum() / inputs.total_sequences
        return token_mean(per_token, inputs)

    @torch.no_grad()
    def clipped(self, inputs: LossInputs) -> torch.Tensor:
        """``[b, C]`` bool: where the clip stops the gradient (TRL's count), a ratio above ``1 + eps_high``
        with a positive advantage or below ``1 - eps_low`` with a negative one. Out of range the
        other way, the min takes the unclipped term and the gradient flows."""
        adv = token_advantages(inputs)
        ratio = self.importance_ratio(inputs)
        low, high = self.clip_range()
        return ((ratio > 1 + high) & (adv > 0)) | ((ratio < 1 - low) & (adv < 0))

    def clip_fraction(self, inputs: LossInputs) -> float:
        """This micro-batch's share of the fraction of the update's tokens that :meth:`clipped` marks."""
        return float(token_mean(self.clipped(inputs).float(), inputs))

    def loss(self, inputs: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
        """Return ``(loss, stats)``: a scalar tensor with grad and a dict of floats, both this
        micro-batch's shares (the trainer sums them over the update's micro-batches)."""
        per_token = self.per_token_loss(inputs)
        stats: dict[str, float] = {}
        if self.beta > 0:
            if inputs.ref_logprobs is None:
                raise ValueError(f"{self.name}: beta > 0 needs ref_logprobs")
            kl = kl_penalty(inputs.logprobs, inputs.ref_logprobs, self.kl_estimator)
            stats["kl"] = float(token_mean(kl.detach(), inputs))
            per_token = per_token + self.beta * kl
        if self.uses_importance_ratio:
            stats["clip_fraction"] = self.clip_fraction(inputs)
        loss = self.aggregate(per_token, inputs)
        stats["loss"] = float(loss.detach())
        return loss, stats

