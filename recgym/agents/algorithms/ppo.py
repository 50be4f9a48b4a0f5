"""PPO (Schulman et al. 2017) with a learned value function and GAE (Schulman et al. 2016), as in
RLHF (Ouyang et al. 2022), with the environment's reward at a completion's last token.

Each completion token ``t`` is an action taken in the state ``s_t = (prompt, y_<t)``. The reward is
``r_t = R`` at the last token ``T - 1`` and 0 before it; a critic estimates ``V(s_t)``, and the
advantage is the generalized advantage estimate

    delta_t = r_t + gamma V(s_t+1) - V(s_t)        (V(s_T) = 0: the completion has ended)
    A_t     = sum_l (gamma lambda)^l delta_t+l     (gamma = ``gamma``, lambda = ``gae_lambda``)

whitened over the batch's tokens by default (``whiten_advantages``: ``(A - mean) / (std + eps)``
with the population std, ddof 0, and ``eps = advantage_epsilon`` outside the square root; verl
divides by ``sqrt(var + 1e-8)`` with the unbiased variance, a difference of ``1 / (2n)`` relative
for ``n`` tokens; in a multi-process run each process whitens its own batch, where verl whitens the
global one). ``gamma`` and ``gae_lambda``
are 1 by default, so ``A_t = R - V(s_t)``, the return less the critic's baseline: with the reward
at the end only and a critic that starts at 0, ``lambda < 1`` (InstructGPT's 0.95) credits the
last tokens more than the first whatever the reward, which stalled learning on the tiny-model test.

The policy loss is the PPO-clip surrogate per token, ``-min(r A_t, clip(r, 1 - eps, 1 + eps) A_t)``,
averaged over the batch's tokens (``loss_aggregation="token"``), plus ``beta * KL`` per token when
``beta > 0``. The critic regresses the returns ``G_t = A_t + V(s_t)`` (before whitening),
``L_V = 1/2 mean_t (V(s_t) - G_t)^2`` (the mean over every process's tokens in a multi-process run),
with its own Adam optimizer (``critic_learning_rate``), ``critic_updates`` steps after every update
of the policy.

The critic is a value head (a parameter-free layer norm, then a linear layer initialized to 0)
on the last hidden states of a *frozen* copy of the initial policy's transformer body: with LoRA,
the policy's own base model with the adapter switched off (no copy). This is the simplest critic
that reads the tokens as well as the policy does: the body runs once per rollout batch (no
gradient), its features are kept for the step, and the critic's updates cost almost nothing.
The head and its optimizer state go into every checkpoint; the frozen body is rebuilt from the
initial model. (A fully trained critic body, as in InstructGPT, would double the learner's
memory and compute.)

A completion whose reward is NaN or inf gets advantage 0 on every token and takes no part in the
whitening nor in the critic's regression.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, ClassVar

import numpy as np
import torch

from recgym.agents.algorithms.base import Algorithm, LossAggregation, register_algorithm
from recgym.agents.learner.data_parallel import average_gradients
from recgym.agents.learner.loading import autocast, is_peft, reference_model
from recgym.agents.learner.logprobs import micro_batches
from recgym.agents.types import RolloutBatch


def gae(rewards: np.ndarray, values: np.ndarray, mask: np.ndarray, gamma: float, lam: float
        ) -> tuple[np.ndarray, np.ndarray]:
    """``(advantages, returns)``, both ``[B, C]`` (0 where ``mask`` is 0), for completions whose
    reward ``rewards[i]`` comes at their last token and whose values are ``values`` (``[B, C]``).

    The recursion runs over each row's own tokens (``mask`` 1) in order: what the model did not
    write (padding; a multi-turn episode's tool results) is skipped, so the state after a model
    token is the model's next token, and the reward lands on the model's last token."""
    advantages = np.zeros(values.shape, dtype=np.float64)
    returns = np.zeros(values.shape, dtype=np.float64)
    for i in range(len(values)):
        own = np.flatnonzero(np.asarray(mask[i]) > 0)
        if not len(own):
            continue
        v = values[i, own].astype(np.float64)
        token_rewards = np.zeros_like(v)
        token_rewards[-1] = rewards[i]
        deltas = token_rewards + gamma * np.append(v[1:], 0.0) - v  # V = 0 after the last token
        running = 0.0
        for t in reversed(range(len(v))):
            running = deltas[t] + gamma * lam * running
            advantages[i, own[t]] = running
        returns[i, own] = advantages[i, own] + v
    return advantages.astype(np.float32), returns.astype(np.float32)


class ValueHead(torch.nn.Module):
    """``V = w . layer_norm(h) + b``, 0 at initialization (layer norm: the learning rate does not
    depend on the scale of the body's features)."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(hidden_size, elementwise_affine=False)
        self.linear = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.linear.weight)
        torch.nn.init.zeros_(self.linear.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.norm(features.float())).squeeze(-1)


@register_algorithm("ppo")
class PPO(Algorithm):
    """PPO-clip with per-token GAE advantages from a learned critic (a value head on the frozen initial model)."""

    default_loss_aggregation: ClassVar[LossAggregation] = "token"

    def __init__(
        self,
        *,
        gamma: float = 1.0,
        gae_lambda: float = 1.0,
        critic_learning_rate: float = 1e-3,
        critic_updates: int = 4,
        whiten_advantages: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if not (0 <= gamma <= 1 and 0 <= gae_lambda <= 1):
            raise ValueError(f"gamma and gae_lambda must be in [0, 1], got {gamma}, {gae_lambda}")
        if critic_updates < 0:
            raise ValueError(f"critic_updates must be >= 0, got {critic_updates}")
        self.gamma, self.gae_lambda = gamma, gae_lambda
        self.critic_learning_rate, self.critic_updates = critic_learning_rate, critic_updates
        self.whiten_advantages = whiten_advantages
        self.head: ValueHead | None = None
        self._cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # features, returns, mask

    @property
    def frozen_model_copies(self) -> dict[str, str]:
        return {**super().frozen_model_copies, "critic body": "the frozen initial model the value head reads"}

    # ---- the critic ----
    def setup(self, model: torch.nn.Module, config: Any) -> None:
        self.dtype, self.micro_batch_size = config.dtype, config.micro_batch_size
        self.device = next(model.parameters()).device
        # with LoRA the base weights are frozen already: they are the initial model
        lora = is_peft(model)
        self.body = (model.get_base_model() if lora else reference_model(model, config.dtype)).base_model
        self.frozen: Callable[[], AbstractContextManager] = model.disable_adapter if lora else contextlib.nullcontext
        self.head = ValueHead(self.body.config.hidden_size).to(self.device)
        self.critic_optimizer = torch.optim.Adam(self.head.parameters(), lr=self.critic_learning_rate)

    @torch.no_grad()
    def features(self, batch: RolloutBatch) -> torch.Tensor:
        """``[B, C, H]``: the frozen body's last hidden state at each completion token's state
        (the position that predicts the token)."""
        if self.head is None:
            raise RuntimeError("ppo: setup(model, config) builds the critic; call it first")
        prompt_len = batch.prompt_ids.shape[1]
        out = []
        for sl in micro_batches(len(batch), self.micro_batch_size):
            ids = torch.as_tensor(np.concatenate([batch.prompt_ids[sl], batch.completion_ids[sl]], 1), device=self.device)
            attention = torch.as_tensor(np.concatenate([batch.prompt_mask[sl], batch.completion_mask[sl]], 1),
                                        device=self.device).long()
            positions = (attention.cumsum(-1) - 1).clamp(min=0)
            with self.frozen(), autocast(self.dtype, self.device):
                hidden = self.body(input_ids=ids, attention_mask=attention, position_ids=positions).last_hidden_state
            out.append(hidden[:, prompt_len - 1 : -1])
        return torch.cat(out)

    # ---- advantages ----
    def advantages(self, batch: RolloutBatch) -> np.ndarray:
        features = self.features(batch)
        rewards = np.asarray(batch.rewards, dtype=np.float64)
        finite = np.isfinite(rewards)
        mask = np.asarray(batch.completion_mask, dtype=np.float32) * finite[:, None]
        with torch.no_grad():
            values = self.head(features).cpu().numpy()
        advantages, returns = gae(np.where(finite, rewards, 0.0), values, mask, self.gamma, self.gae_lambda)
        self._cache = (features, torch.as_tensor(returns, device=self.device), torch.as_tensor(mask, device=self.device))
        if self.whiten_advantages and mask.sum() > 1:
            real = advantages[mask > 0]
            advantages = (advantages - real.mean()) / (real.std() + self.advantage_epsilon) * mask
        return advantages.astype(np.float32)

    # ---- the critic's updates ----
    @property
    def learns_only_from_advantages(self) -> bool:
        return False  # the critic learns from the returns whatever the advantages

    def after_update(self) -> dict[str, float]:
        if self._cache is None or self.critic_updates == 0:
            return {}
        features, returns, mask = self._cache
        dist = torch.distributed
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        tokens = mask.sum()
        if world_size > 1:  # the mean of the processes' token counts, as the policy's token loss divides by:
            dist.all_reduce(tokens)  # the averaged gradients are then the mean over every process's tokens
            tokens /= world_size
        losses = []
        for _ in range(self.critic_updates):
            loss = 0.5 * (((self.head(features) - returns) ** 2) * mask).sum() / tokens.clamp(min=1.0)
            self.critic_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            average_gradients(list(self.head.parameters()), world_size)
            self.critic_optimizer.step()
            losses.append(float(loss.detach()))
        return {"value_loss": losses[0]}  # before this update

    def state_dict(self) -> dict[str, Any]:
        return {"value_head": self.head.state_dict(), "optimizer": self.critic_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head.load_state_dict(state["value_head"])
        self.critic_optimizer.load_state_dict(state["optimizer"])
