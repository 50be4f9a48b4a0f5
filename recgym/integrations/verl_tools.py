"""A ``RecRatingTools-*`` environment inside verl's multi-turn rollout (SGLang,
``actor_rollout_ref.rollout.multi_turn``), in either of verl's two ways:

- ``RecRatingInteraction`` (``multi_turn.interaction_config_path``): the environment's own text
  protocol. Each assistant turn goes to ``env.step``; a ``<call>`` turn's result (or error) comes
  back as the next user message, a final answer ends the rollout. The prompt the environment
  writes (tools listed, ``<call>`` format) is used as is.
- ``RecRatingTool`` (``multi_turn.tool_config_path``, one entry per tool): native function
  calling. SGLang parses the model's ``<tool_call>`` JSON, ``execute`` runs it as the
  environment's call and returns the environment's result text as the ``tool`` message.

Either way verl appends the environment's messages with ``loss_mask`` 0
(``AsyncRolloutRequest.add_user_message`` / ``add_tool_response_messages``) and the assistant
turns with 1, and the reward comes from :func:`recgym.integrations.verl.compute_score`, which
replays the decoded response through the same environment (same tools, same ``tool_cost``).
Both replay a request's turns from a fresh reset on each call, so concurrent requests share one
environment safely.
"""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import uuid4

from verl.interactions.base import BaseInteraction
from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema

from recgym.envs.tools import TOOLS, call_text
from recgym.integrations.verl import make_env

_TOOL_SPECS = {t.name: t for t in TOOLS}


def _replay(create_kwargs: dict[str, Any]):
    from recgym_verifiers import _Replay

    env = make_env(create_kwargs["env_id"], create_kwargs.get("split", "train"), create_kwargs.get("env_kwargs", "{}"))
    core = env.unwrapped
    if not hasattr(core, "_verl_replay"):
        core._verl_replay = _Replay(core)
    return core._verl_replay


def _observation(info: dict[str, Any], ended: bool, reward: float) -> str:
    if ended:
        return f"The episode has ended (reward {reward:g}): answer now, with no call."
    return info["messages"][0]["content"]


class RecRatingTool(BaseTool):
    """One environment tool (``config: {name: similar_items}``, or the schema's name) for verl.
    ``create`` takes the row's ``create_kwargs`` (env id, split, env kwargs, index); calls of all
    tools of one request (they share its ``request_id``) are the episode's turns."""

    #: request_id -> {"kwargs": create_kwargs, "turns": [call texts]}; shared by every tool.
    episodes: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, config: dict, tool_schema: OpenAIFunctionToolSchema | None = None) -> None:
        name = (config or {}).get("name") or (tool_schema.function.name if tool_schema else None)
        if name not in _TOOL_SPECS:
            raise ValueError(f"unknown recgym tool {name!r}; one of {sorted(_TOOL_SPECS)}")
        schema = tool_schema or OpenAIFunctionToolSchema.model_validate(_TOOL_SPECS[name].openai_schema())
        super().__init__(config or {}, schema)

    async def create(self, instance_id: str | None = None, **create_kwargs: Any) -> str:
        instance_id = instance_id or str(uuid4())
        self.episodes.setdefault(instance_id, {"kwargs": create_kwargs, "turns": []})
        return instance_id

    async def execute(self, instance_id: str, parameters: dict[str, Any], **kwargs: Any) -> tuple[str, float, dict]:
        episode = self.episodes[instance_id]
        episode["turns"].append(call_text(self.name, parameters))
        reward, info, ended = _replay(episode["kwargs"])(int(episode["kwargs"]["index"]), episode["turns"])
        call = (info.get("calls") or [{}])[-1]
        return _observation(info, ended, reward), 0.0, {"error": call.get("error"), "tokens": call.get("tokens", 0)}

    async def calc_reward(self, instance_id: str, **kwargs: Any) -> float:
        """The tool costs so far (≤ 0); verl keeps it in ``reward_scores``, the reward function
        counts the same costs from the response."""
        episode = self.episodes.get(instance_id)
        if episode is None:
            return 0.0
        core = make_env(episode["kwargs"]["env_id"], episode["kwargs"].get("split", "train"),
                        episode["kwargs"].get("env_kwargs", "{}")).unwrapped
        return -core.tool_cost * len(episode["turns"])

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        self.episodes.pop(instance_id, None)


def tool_config() -> dict[str, Any]:
    """verl's ``tool_config_path`` content for every environment tool."""
    return {"tools": [{"class_name": f"{__name__}.RecRatingTool", "config": {"name": t.name, "type": "native"},
                       "tool_schema": t.openai_schema()} for t in TOOLS]}


class RecRatingInteraction(BaseInteraction):
    """The environment as verl's interaction: ``generate_response`` steps the episode with the
    rollout's assistant turns; returns ``(ended, environment message, reward, info)``, the reward
    being the environment's total once the episode ends."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        super().__init__(config or {"name": "recgym"})

    async def start_interaction(self, instance_id: str | None = None, **interaction_kwargs: Any) -> str:
        """Nothing to set up: verl passes the row's ``interaction_kwargs`` on every response."""
        return instance_id or str(uuid4())

    async def generate_response(self, instance_id: str, messages: list[dict[str, Any]],
                                **interaction_kwargs: Any) -> tuple[bool, str, float, dict[str, Any]]:
        turns = [str(m["content"]) for m in messages if m["role"] == "assistant"]
        reward, info, ended = _replay(interaction_kwargs)(int(interaction_kwargs["index"]), turns)
        if ended:
            return True, "", float(reward), {"reward_breakdown": info["reward_breakdown"]}
        return False, info["messages"][0]["content"], 0.0, {"num_calls": info["num_calls"]}

    async def calculate_score(self) -> float:
        return 0.0

    async def finalize_interaction(self, *args: Any, **kwargs: Any) -> None:
        pass


def interaction_config() -> dict[str, Any]:
    """verl's ``interaction_config_path`` content."""
    return {"interaction": [{"class_name": f"{__name__}.RecRatingInteraction", "config": {"name": "recgym"}}]}
