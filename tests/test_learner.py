"""The learner's mechanics on the paths a GPU run takes, tested on CPU with tiny models: LoRA
weights reaching a policy, bfloat16 mixed precision, off-policy updates, float16 refused, and a
given model's weights pushed to a separate policy before the first rollout."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tiny_lm
import torch
from tiny_lm import tiny_model, tiny_tokenizer

from recgym.agents.config import GRPOConfig
from recgym.agents.learner.loading import add_lora
from recgym.agents.learner.weight_export import policy_weights
from recgym.agents.policies.hf import HFPolicy
from recgym.agents.trainer import GRPOTrainer

TESTS = Path(__file__).parent


def tiny_config(tmp_path, **overrides) -> GRPOConfig:
    return tiny_lm.tiny_config(tmp_path, **{"max_steps": 1, "eval_size": 1, "eval_max_new_tokens": 2, **overrides})


def lora_model(dtype=torch.float32):
    model = add_lora(tiny_model().to(dtype), GRPOConfig(use_lora=True, lora_r=4))
    with torch.no_grad():  # a trained adapter: B is zero at init, which would hide a missing delta
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    return model


def test_lora_policy_weights_carry_the_adapter_and_leave_the_base_bit_identical():
    model = lora_model()
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    pushed = list(policy_weights(model))  # exhausted before use, as a policy's update_weights may do
    expected = copy.deepcopy(model).merge_and_unload().state_dict()
    assert {name for name, _ in pushed} == set(expected)
    moved = 0
    for name, tensor in pushed:
        torch.testing.assert_close(tensor, expected[name], rtol=0, atol=1e-6)
        original = base.get("base_model.model." + name.replace("proj.weight", "proj.base_layer.weight"))
        moved += original is not None and not torch.equal(tensor, original)
    assert moved > 0, "the adapter's delta must reach the pushed weights"
    for n, p in model.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, base[n]), n


def test_bfloat16_lora_base_does_not_drift_over_many_weight_exports():
    model = lora_model(torch.bfloat16)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "lora_" in n)
    for _ in range(5):
        for _ in policy_weights(model):
            pass
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if "lora_" not in n)


def untied_tiny_model(seed: int = 0):
    from transformers import LlamaForCausalLM

    config = tiny_model().config
    config.tie_word_embeddings = False
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("tied", [False, True])
def test_lora_export_gives_the_learners_logits_embedding_adapters_included(tied):
    """Loaded into a fresh model as vLLM loads it (a tied model: without ``lm_head.weight``), the
    merged export computes the learner's logits; adapters on the embeddings count too."""
    targets = ["q_proj", "v_proj"] + ([] if tied else ["embed_tokens", "lm_head"])
    model = add_lora(tiny_model() if tied else untied_tiny_model(), GRPOConfig(use_lora=True, lora_r=4,
                                                                                lora_target_modules=targets))
    with torch.no_grad():  # trained adapters (peft starts one factor of each at 0)
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(std=0.1)
    ids = torch.randint(5, 1000, (2, 10))
    with torch.no_grad():
        expected = model(ids).logits
    engine = tiny_model(seed=7) if tied else untied_tiny_model(seed=7)
    exported = {k: v for k, v in policy_weights(model) if not (tied and k == "lm_head.weight")}
    assert not engine.load_state_dict(exported, strict=False).unexpected_keys
    with torch.no_grad():
        torch.testing.assert_close(engine(ids).logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("target", ["embed_tokens", "lm_head"])
def test_lora_on_tied_embeddings_is_refused_saying_why(target):
    with pytest.raises(ValueError, match=f"{target} cannot be adapted on a model with tied embeddings"):
        add_lora(tiny_model(), GRPOConfig(use_lora=True, lora_target_modules=["q_proj", target]))
    add_lora(untied_tiny_model(), GRPOConfig(use_lora=True, lora_target_modules=["q_proj", target]))
    from recgym.agents.learner.memory import ModelShape  # the estimate refuses it too

    with pytest.raises(ValueError, match=f"{target} cannot be adapted on a model with tied embeddings"):
        ModelShape.from_config(tiny_model().config.to_dict()).lora_parameters(4, ["q_proj", target])


def test_lora_all_linear_adapts_what_the_estimate_counts_and_a_misspelled_target_is_refused():
    from recgym.agents.learner.memory import ModelShape

    model = add_lora(tiny_model(), GRPOConfig(use_lora=True, lora_r=4, lora_target_modules=["all-linear"]))
    adapted = {n.split(".")[-1] for n, m in model.named_modules() if hasattr(m, "lora_A") and m.lora_A}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}  # not lm_head
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == ModelShape.from_config(tiny_model().config.to_dict()).lora_parameters(4, ["all-linear"])
    with pytest.raises(ValueError, match=r"q_prj not in the model: name some of its linear modules \(down_proj, "
                                         r"gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj\)"):
        add_lora(tiny_model(), GRPOConfig(use_lora=True, lora_target_modules=["q_prj", "v_proj"]))


def test_checkpoint_rng_state_carries_every_gpus_stream_mock_cuda(monkeypatch, tmp_path):
    """With CUDA (mocked here) a checkpoint's RNG state holds each GPU's stream and resume puts them
    back; an older checkpoint without them still loads."""
    import random

    from recgym.agents import checkpoints

    streams, restored = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3], dtype=torch.uint8)], []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [s.clone() for s in streams])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", restored.append)
    torch.save(checkpoints.rng_state(), tmp_path / "rng_state_0.pt")
    state = torch.load(tmp_path / "rng_state_0.pt", weights_only=False)  # as read_checkpoint reads it
    expected = random.random(), torch.rand(1)
    checkpoints.set_rng_state(state)
    assert len(restored) == 1 and all(torch.equal(a, b) for a, b in zip(restored[0], streams, strict=True))
    assert (random.random(), torch.rand(1)) == expected
    checkpoints.set_rng_state({k: v for k, v in state.items() if k != "cuda"})  # written before GPU streams were kept
    assert len(restored) == 1


def test_float16_is_refused_with_what_to_use_instead(tmp_path):
    with pytest.raises(ValueError, match="bfloat16"):
        GRPOTrainer(tiny_config(tmp_path, dtype="float16"), model=tiny_model(), tokenizer=tiny_tokenizer())


def _fraction_changed(tmp_path, dtype: str) -> float:
    model_dir = tmp_path / "model"
    if not model_dir.exists():
        tiny_model().save_pretrained(model_dir)
        tiny_tokenizer().save_pretrained(model_dir)
    cfg = tiny_config(tmp_path / dtype, model=str(model_dir), dtype=dtype, max_steps=3, learning_rate=1e-6,
                      max_grad_norm=0.0)
    trainer = GRPOTrainer(cfg)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()
    changed = sum(int((p.detach() != b).sum()) for p, b in zip(trainer.model.parameters(), before))
    return changed / sum(b.numel() for b in before)


def test_bfloat16_keeps_float32_master_weights_so_small_updates_count(tmp_path):
    """10 AdamW steps at lr 1e-6 changed ~2% of pure-bfloat16 weights and ~100% of float32 ones."""
    f32 = _fraction_changed(tmp_path, "float32")
    bf16 = _fraction_changed(tmp_path, "bfloat16")
    assert f32 > 0.5, f32
    assert bf16 > 0.9 * f32, (bf16, f32)


def test_trainable_layers_moves_only_the_top_blocks_whose_gradients_are_a_full_fine_tunes(tmp_path):
    """trainable_layers 1 of 3: a step moves the top block and the final norm only (the embeddings,
    tied to the output head, and the lower blocks stay bit-identical), and the top block's gradient
    is the one a full fine-tune computes (freezing cuts the backward pass, not the loss)."""
    cfg = tiny_config(tmp_path, trainable_layers=1, learning_rate=1e-2, max_grad_norm=0.0)
    trainer = GRPOTrainer(cfg, model=tiny_model(layers=3), tokenizer=tiny_tokenizer())
    names = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert names and all(n.startswith(("model.layers.2.", "model.norm.")) for n in names), names
    assert sum(p.numel() for p in trainer.trainable) == sum(p.numel() for n, p in trainer.model.named_parameters() if n in names)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    for n, p in trainer.model.named_parameters():
        assert torch.equal(p, before[n]) != (n in names), n

    from recgym.agents.learner.loading import train_top_layers

    ids = tiny_tokenizer()("How will user 3 rate the item? <rate>4</rate>", return_tensors="pt")["input_ids"]
    full, frozen = tiny_model(layers=3).train(), tiny_model(layers=3).train()
    train_top_layers(frozen, 1)
    for model in (full, frozen):
        model(ids, labels=ids).loss.backward()
    assert frozen.model.embed_tokens.weight.grad is None and frozen.model.layers[1].mlp.up_proj.weight.grad is None
    for (n, a), (_, b) in zip(full.named_parameters(), frozen.named_parameters()):
        if b.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=n)


@pytest.mark.parametrize("kwargs, message", [({"trainable_layers": -1}, ">= 0"),
                                             ({"trainable_layers": 2, "use_lora": True}, "choose one")])
def test_trainable_layers_refuses_bad_values_in_both_configs(kwargs, message):
    from recgym.agents.sft import SFTTrainConfig

    for config in (GRPOConfig, SFTTrainConfig):
        with pytest.raises(ValueError, match=message):
            config(**kwargs)


def test_trainable_layers_beyond_the_model_says_how_many_blocks_it_has(tmp_path):
    with pytest.raises(ValueError, match="more than the model's 2 blocks"):
        GRPOTrainer(tiny_config(tmp_path, trainable_layers=3), model=tiny_model(), tokenizer=tiny_tokenizer())


def test_every_update_after_the_first_sees_its_own_old_logprobs(tmp_path):
    """Two updates per rollout batch (gradient_accumulation_steps 1, two micro-batches): the second
    is off-policy, so its ratio differs from 1 and clipping can act."""
    cfg = tiny_config(tmp_path, micro_batch_size=4, gradient_accumulation_steps=1, learning_rate=5e-2)
    trainer = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    assert trainer.updates_per_step == 2
    seen = []
    loss = trainer.algorithm.loss

    def spy(inputs):
        out = loss(inputs)
        seen.append((inputs.logprobs.detach(), inputs.old_logprobs, inputs.mask, out[1]["clip_fraction"]))
        return out

    trainer.algorithm.loss = spy
    trainer.train()
    (new1, old1, mask1, _), (new2, old2, mask2, clip2) = seen
    torch.testing.assert_close(new1 * mask1, old1 * mask1, atol=1e-5, rtol=0)  # the first update is on-policy
    ratio = torch.exp(new2 - old2)[mask2 > 0]
    assert (ratio - 1).abs().max() > 1e-3, "the second update must see the weights moved by the first"
    assert clip2 > 0


class WeightReceivingHFPolicy(HFPolicy):
    """Stand-in for the vLLM engine (which holds its own copy of the weights): an HF policy over a
    separate module that takes weights through ``update_weights`` like VLLMPolicy."""

    def update_weights(self, named_tensors) -> None:
        self.model.load_state_dict(dict(named_tensors), strict=False)


def test_a_given_model_reaches_a_separate_policy_before_the_first_rollout_stand_in_for_vllm(tmp_path):
    model = tiny_model(seed=1)
    policy = WeightReceivingHFPolicy(tiny_model(seed=2), tiny_tokenizer())
    GRPOTrainer(tiny_config(tmp_path), model=model, tokenizer=tiny_tokenizer(), policy=policy)
    for (name, a), b in zip(model.state_dict().items(), policy.model.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu()), name


VLLM_LORA_SCRIPT = """
import sys
sys.path.insert(0, {tests!r})
import torch
from tiny_lm import SHORT_PROMPTS, SpaceReward, tiny_model, tiny_tokenizer
from recgym.agents.config import GRPOConfig
from recgym.agents.learner.logprobs import completion_logprobs
from recgym.agents.trainer import GRPOTrainer
from recgym.agents.types import SamplingParams

if __name__ == "__main__":
    model_dir = sys.argv[1]
    tiny_model(hidden_size=64).save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    cfg = GRPOConfig(model=model_dir, policy="vllm", policy_kwargs={{"max_model_len": 512, "kv_cache_gib": 0.5}},
                     use_lora=True, lora_r=4, env_kwargs={{"reward": SpaceReward(), **SHORT_PROMPTS}}, max_steps=1,
                     group_size=4, prompts_per_step=2, max_new_tokens=8, eval_size=1, eval_max_new_tokens=2,
                     eval_interval=0, save_interval=0, live_display=False, plot=False, output_dir=sys.argv[2],
                     learning_rate=5e-2)
    trainer = GRPOTrainer(cfg)
    base = {{n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" not in n}}
    trainer.train()
    prompt = [[{{"role": "user", "content": "Rate this item, please."}}]]
    c = trainer.policy.generate(prompt, n=1, sampling=SamplingParams(temperature=0.0, max_new_tokens=6))[0][0]
    ids = lambda xs: torch.tensor([xs])
    with torch.no_grad():
        learner = completion_logprobs(trainer.model, ids(c.prompt_token_ids), torch.ones(1, len(c.prompt_token_ids)),
                                      ids(c.completion_token_ids), torch.ones(1, len(c.completion_token_ids)))[0]
        with trainer.model.disable_adapter():
            base_lp = completion_logprobs(trainer.model, ids(c.prompt_token_ids), torch.ones(1, len(c.prompt_token_ids)),
                                          ids(c.completion_token_ids), torch.ones(1, len(c.completion_token_ids)))[0]
    same = all(torch.equal(p, base[n]) for n, p in trainer.model.named_parameters() if "lora_" not in n)
    print("RESULT", {{"vllm": c.logprobs, "learner": learner.tolist(), "base": base_lp.tolist(), "base_same": same}})
"""


@pytest.mark.slow
def test_lora_step_reaches_the_vllm_engine(tmp_path):
    """After a LoRA step with non-zero advantages, vLLM's greedy logprobs equal the learner's
    (adapter on) and not the base model's; the base weights are bit-identical to before."""
    pytest.importorskip("vllm")
    script = tmp_path / "lora_vllm.py"
    script.write_text(textwrap.dedent(VLLM_LORA_SCRIPT.format(tests=str(TESTS))))
    env = {**os.environ, "OMP_NUM_THREADS": "2", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    run = subprocess.run([sys.executable, str(script), str(tmp_path / "model"), str(tmp_path / "run")],
                         capture_output=True, text=True, timeout=600, env=env, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    result = eval(next(line for line in run.stdout.splitlines() if line.startswith("RESULT"))[7:])
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert next(r for r in rows if "reward" in r)["advantage_abs"] > 0
    assert result["base_same"]
    np.testing.assert_allclose(result["vllm"], result["learner"], atol=1e-4)
    assert np.abs(np.array(result["learner"]) - np.array(result["base"])).max() > 1e-3


FAULTS = """
import resource, sys, torch
sys.path.insert(0, {tests!r})

def faults():  # minor page faults of writing 128 MiB into a fresh tensor, then freeing it
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(32 * 2**20)
    del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

faults()
plain = min(faults() for _ in range(3))
{setup}
faults()
print(plain, min(faults() for _ in range(3)))  # a stray refault of the block is rare, not the rule
"""


def page_faults(setup: str) -> tuple[int, int]:
    """In a fresh process (the setting is process-wide): the page faults of a freed 128 MiB block's
    return before and after running ``setup``."""
    script = FAULTS.format(tests=str(Path(__file__).parent), setup=textwrap.dedent(setup))
    run = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    plain, kept = map(int, run.stdout.split()[-2:])
    assert plain >= 64, run.stdout  # glibc maps such a block anew: a fault per 4 KiB page (2 MiB with THP always)
    return plain, kept


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_lets_the_next_step_reuse_freed_pages():
    """After ``keep_freed_memory`` a freed 128 MiB block comes back without page faults."""
    plain, kept = page_faults("""
        from recgym.agents.learner.host_memory import keep_freed_memory
        assert keep_freed_memory()
    """)
    assert kept < plain // 10


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.parametrize("keep", [True, False])
def test_sft_on_cpu_keeps_freed_memory_as_configured(tmp_path, keep):
    """``build_sft_trainer`` applies ``SFTTrainConfig.keep_freed_memory`` on CPU (the demo's SFT
    step faulted about a million pages in again without it); off, glibc's default stays."""
    data = tmp_path / "d.jsonl"
    row = {"prompt": [{"role": "user", "content": "Rate it."}], "completion": [{"role": "assistant", "content": "3"}]}
    data.write_text(json.dumps(row) + "\n")
    plain, kept = page_faults(f"""
        from tiny_lm import tiny_model, tiny_tokenizer
        from recgym.agents.sft import SFTTrainConfig, build_sft_trainer
        config = SFTTrainConfig(data={str(data)!r}, output_dir={str(tmp_path / "sft")!r}, keep_freed_memory={keep})
        build_sft_trainer(config, tiny_model(), tiny_tokenizer())
    """)
    assert (kept < plain // 10) is keep, (plain, kept)
