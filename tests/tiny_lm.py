"""Tiny randomly-initialized causal LMs for plumbing tests (no download, seconds to build).

The tokenizer is the embedded SmolLM2's (its chat template included); the model is a 2-layer
Llama with a hidden size of 32, built from a config here.
"""

from __future__ import annotations

import functools


@functools.cache
def tiny_tokenizer():
    from recgym.agents.models import load_tokenizer

    return load_tokenizer("smollm2-135m-instruct")


def tiny_model(seed: int = 0, hidden_size: int = 32, layers: int = 2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
        max_position_embeddings=4096, tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


class SpaceReward:
    """Rewards the share of spaces in a completion: a behaviour a tiny random model can learn in a
    few steps (whitespace tokens exist in the vocabulary), unlike the rating format."""

    tags = ("rate",)

    def __call__(self, completion: str, target: float, scale=None):
        from recgym.rewards import RewardBreakdown

        share = completion.count(" ") / max(len(completion), 1)
        return RewardBreakdown(format=0.0, accuracy=share, total=share, parsed_rating=None,
                               abs_error=None, format_ok=False)


#: Short prompts keep tiny-model steps fast.
SHORT_PROMPTS = {"max_user_history": 2, "max_item_history": 1}


def tiny_config(tmp_path, **overrides):
    """A GRPOConfig for a tiny model on short synthetic prompts with the space-share reward."""
    from recgym.agents.config import GRPOConfig

    values = {
        "env_kwargs": {"reward": SpaceReward(), **SHORT_PROMPTS}, "max_steps": 2, "group_size": 4,
        "prompts_per_step": 2, "max_new_tokens": 8, "eval_size": 2, "eval_max_new_tokens": 4, "eval_interval": 0,
        "save_interval": 0, "live_display": False, "plot": False, "output_dir": str(tmp_path / "run"),
        "learning_rate": 1e-2, "seed": 0,
    }
    values.update(overrides)
    return GRPOConfig(**values)
