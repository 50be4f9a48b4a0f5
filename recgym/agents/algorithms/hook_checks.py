"""What the trainer checks of an algorithm's hooks' results (``advantages``, ``keep_groups``,
``shape_rewards``, ``loss``, ``after_update``): a result of the wrong shape or kind would broadcast,
be sliced or stop the run's log after the optimizer stepped, so it stops the run at once with one
line instead."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recgym.agents.algorithms.base import Algorithm, LossInputs
from recgym.agents.types import RolloutBatch


class PluginError(ValueError, TypeError):
    """An algorithm's hook returned what the trainer cannot use: the plug-in's code, not recgym's (the
    CLI reports it in one line)."""


LOSS_RULE = "loss() must return (a scalar tensor with grad, a dict of floats)"

#: The keys of the trainer's step record that it writes itself (besides the algorithm's stats),
#: and its namespaces (:data:`TRAINER_PREFIXES`): a stat of such a name is refused, as it would
#: overwrite the trainer's figure or be overwritten by it. tests/test_algorithm_plugins.py checks
#: them against a real step record.
TRAINER_STATS = frozenset({
    "step", "reward", "reward_std", "nonfinite_rewards", "format_rate", "zero_std_group_frac", "groups_dropped",
    "refill_rounds", "entropy", "advantage_abs", "completion_tokens", "truncated_rate", "grad_norm",
    "skipped_updates", "nonfinite_grad_updates", "tokens_per_second", "learning_rate", "prompts", "sample_indices",
    "data_position", "turns_mean", "tool_calls_mean", "invalid_turns_mean", "observation_tokens_mean",
})
TRAINER_PREFIXES = ("reward/", "time/", "eval/", "guard/")


def checked_advantages(algorithm: Algorithm, batch: RolloutBatch) -> np.ndarray:
    """``algorithm.advantages(batch)``, refused unless numbers of shape ``[B]`` or ``[B, C]`` (or
    ``[B, 1]``): another shape would broadcast or be sliced into wrong numbers without an error.
    Per-token values are 0 where the completion mask is (padding takes no part: NaN * 0 is NaN)."""
    advantages = algorithm.advantages(batch)
    b, c = batch.completion_mask.shape
    where = f"{type(algorithm).__name__}.advantages"
    expected = f"expected a numpy array of shape (B,)=({b},) or (B, C)=({b}, {c})"
    if isinstance(advantages, torch.Tensor):
        raise PluginError(f"{where} returned a torch tensor; {expected} (tensor.numpy())")
    if not isinstance(advantages, np.ndarray | list | tuple):
        raise PluginError(f"{where} returned {type(advantages).__name__}; {expected}")
    array = np.asarray(advantages)
    if array.shape not in ((b,), (b, 1), (b, c)):
        raise PluginError(f"{where} returned shape {array.shape}; {expected}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise PluginError(f"{where} returned {array.dtype} values; {expected} of numbers")
    if array.shape == (b, c):
        array = np.where(batch.completion_mask > 0, array, 0).astype(array.dtype)
    return array


def checked_keep_groups(algorithm: Algorithm, batch: RolloutBatch) -> np.ndarray:
    """``algorithm.keep_groups(batch)``, refused unless one verdict per group."""
    keep = np.asarray(algorithm.keep_groups(batch))
    groups = len(np.unique(batch.group_ids))
    if keep.shape != (groups,):
        raise PluginError(f"{type(algorithm).__name__}.keep_groups returned shape {keep.shape}; expected one bool "
                         f"per group, in group-id order: shape ({groups},)")
    return keep.astype(bool)


def checked_shape_rewards(algorithm: Algorithm, batch: RolloutBatch, max_new_tokens: int) -> RolloutBatch:
    """``algorithm.shape_rewards(batch, max_new_tokens)``, refused unless a RolloutBatch of the same rows."""
    shaped = algorithm.shape_rewards(batch, max_new_tokens)
    if not isinstance(shaped, RolloutBatch) or len(shaped) != len(batch):
        what = f"a RolloutBatch of {len(shaped)} rows" if isinstance(shaped, RolloutBatch) else _kind(shaped)
        raise PluginError(f"{type(algorithm).__name__}.shape_rewards returned {what}; expected a RolloutBatch of its "
                        f"{len(batch)} rows (dataclasses.replace(batch, rewards=...))")
    return shaped


def checked_loss(algorithm: Algorithm, inputs: LossInputs) -> tuple[torch.Tensor, dict[str, float]]:
    """``algorithm.loss(inputs)``, refused unless :data:`LOSS_RULE` holds; the stats as floats."""
    result = algorithm.loss(inputs)
    where = f"{type(algorithm).__name__}.loss"
    if not (isinstance(result, tuple | list) and len(result) == 2):
        raise PluginError(f"{where} returned {_kind(result)}; {LOSS_RULE}")
    loss, stats = result
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        what = f"shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else _kind(loss)
        raise PluginError(f"{where} returned a loss of {what}; {LOSS_RULE} (reduce it to this micro-batch's share, "
                        "e.g. with aggregate())")
    if not loss.requires_grad:
        raise PluginError(f"{where} returned a loss without grad (detached, or not computed from inputs.logprobs); "
                         f"{LOSS_RULE}")
    return loss.reshape(()), checked_stats(where, stats)


def checked_after_update(algorithm: Algorithm) -> dict[str, float]:
    """``algorithm.after_update()``'s stats as floats (see :func:`checked_stats`)."""
    return checked_stats(f"{type(algorithm).__name__}.after_update", algorithm.after_update())


def checked_stats(where: str, stats: Any) -> dict[str, float]:
    """``stats`` as ``{name: float}``: 0-d tensors and numpy scalars converted, anything else refused
    (the run's log would stop at it, after the optimizer stepped), and so is a name the trainer logs
    itself (:func:`is_trainer_stat`)."""
    if not isinstance(stats, dict):
        raise PluginError(f"{where} returned stats of {_kind(stats)}; {LOSS_RULE} ({{}} for none)")
    out = {}
    for key, value in stats.items():
        if is_trainer_stat(str(key)):
            raise PluginError(f"{where} returned stats[{key!r}], a name the trainer logs itself (its figure would be "
                             "overwritten): rename it")
        number = _as_float(value)
        if number is None:
            raise PluginError(f"{where} returned stats[{key!r}] of {_kind(value)}; {LOSS_RULE}")
        out[str(key)] = number
    return out


def is_trainer_stat(key: str) -> bool:
    """Whether the trainer's step record writes ``key`` itself (:data:`TRAINER_STATS`, :data:`TRAINER_PREFIXES`)."""
    return key in TRAINER_STATS or key.startswith(TRAINER_PREFIXES)


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool | int | float | np.bool_ | np.integer | np.floating):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        return float(value.detach())
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "biuf":
        return float(value.item())
    return None


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor | np.ndarray):
        return f"a {type(value).__name__} of shape {tuple(value.shape)}"
    return "None" if value is None else f"{type(value).__name__} {value!r:.60}"
