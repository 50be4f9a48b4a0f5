"""GPU memory estimate: the arithmetic on a made-up shape, known models, the CLI, and no weight loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recgym.agents.config import GRPOConfig
from recgym.agents.learner.memory import (
    CUDA_OVERHEAD_GB,
    GIB,
    KNOWN_MODELS,
    ModelShape,
    check_memory,
    estimate_memory,
    resolve_model_config,
)
from recgym.cli import main

ROOT = Path(__file__).resolve().parents[1]
GPU_CONFIGS = ["reczero_yelp", "reczero_amazon", "reczero_imdb"]

# h=64, I=128, 2 layers, 4 heads of 16, 2 kv heads, vocab 1000, untied
SHAPE = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": False,
         "max_position_embeddings": 512}
# per layer: q 64*64 + k 64*32 + v 64*32 + o 64*64 + mlp 3*64*128 + norms 2*64 = 36,992
PARAMS = 2 * 1000 * 64 + 2 * 36_992 + 64  # embeddings + lm_head + layers + final norm = 202,048
PER_TOKEN_LAYER_16BIT = 20 * 64 + 4 * 2 * 16 + 8 * 128  # 2,432 bytes


def config(**changes) -> GRPOConfig:
    base = {"policy": "hf", "policy_kwargs": {"max_context": 100}, "micro_batch_size": 2, "max_new_tokens": 10,
            "gpu_memory_gib": 10.0}
    return GRPOConfig(**{**base, **changes})


def test_parameter_counts_match_transformers_and_peft():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    assert ModelShape.from_config(SHAPE).num_parameters == PARAMS
    qwen = {**SHAPE, "model_type": "qwen2", "tie_word_embeddings": True}  # q/k/v biases, tied lm_head
    for shape in (SHAPE, qwen):
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**shape))
        assert ModelShape.from_config(shape).num_parameters == model.num_parameters(), shape["model_type"]
    # LoRA r=8 on q and v: 2 layers x 8 x ((64 + 64) + (64 + 32)) = 3,584
    assert ModelShape.from_config(SHAPE).lora_parameters(8, ["q_proj", "v_proj"]) == 3_584
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**SHAPE))
    lora = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    assert ModelShape.from_config(SHAPE).lora_parameters(8, ["q_proj", "v_proj", "down_proj"]) == \
        lora.get_nb_trainable_parameters()[0]
    with pytest.raises(ValueError, match="unknown module"):
        ModelShape.from_config(SHAPE).lora_parameters(8, ["qkv"])


def test_trainable_layers_count_what_train_top_layers_leaves_trainable():
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from recgym.agents.learner.loading import train_top_layers

    qwen = {**SHAPE, "model_type": "qwen2", "tie_word_embeddings": True}
    for shape in (SHAPE, qwen):  # untied: the output head trains; tied: it is the frozen embedding
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**shape))
        train_top_layers(model, 1)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert ModelShape.from_config(shape).top_layers_parameters(1) == trainable, shape["model_type"]
    rows = {r.name: r.gb for r in estimate_memory(config(trainable_layers=1), model_config=SHAPE).rows}
    assert rows["AdamW state"] == pytest.approx((36_992 + 64 + 1000 * 64) * 8 / 1e9)
    with pytest.raises(ValueError, match="more than the model's"):  # what the trainer would refuse
        estimate_memory(config(trainable_layers=SHAPE["num_hidden_layers"] + 1), model_config=SHAPE)


def test_known_models_have_their_published_sizes():
    counts = {name: ModelShape.from_config(shape).num_parameters for name, shape in KNOWN_MODELS.items()}
    assert counts["Qwen/Qwen2.5-7B-Instruct"] == 7_615_616_512  # "7.62B" on its model card
    assert counts["meta-llama/Llama-3.1-8B-Instruct"] == 8_030_261_248
    assert counts["HuggingFaceTB/SmolLM2-135M-Instruct"] == 134_515_008
    assert resolve_model_config("smollm2-135m-instruct")["hidden_size"] == 576
    assert resolve_model_config("qwen/qwen2.5-7b")["vocab_size"] == 152064  # the base model's shape too
    with pytest.raises(ValueError, match="no shape known"):
        resolve_model_config("nobody/unknown-model")


def test_full_fine_tune_rows_float32():
    est = estimate_memory(config(), SHAPE)
    rows = {row.name: row for row in est.rows}
    assert rows["learner weights"].gb == pytest.approx(PARAMS * 4 / 1e9)
    assert rows["gradients"].gb == pytest.approx(PARAMS * 4 / 1e9)
    assert rows["AdamW state"].gb == pytest.approx(PARAMS * 8 / 1e9)
    assert "autocast weight copies" not in rows and "reference model" not in rows
    # 2 x 100 tokens x 2 layers x 2,432 x (4 / 2) bytes + logits 2 x 10 x 1000 x 8 bytes
    activations = 2 * 100 * 2 * PER_TOKEN_LAYER_16BIT * 2 + 2 * 10 * 1000 * 8
    assert rows["activations"].gb == pytest.approx(activations / 1e9)
    # HF generation: 16 rows x (100 tokens x (2 x 2 layers x 2 kv x 16 x 4 B) + 10 x 1000 x 4 B scores);
    # smaller than the activations: not counted
    assert rows["HF generation"].gb == pytest.approx(16 * (100 * 512 + 10 * 1000 * 4) / 1e9)
    assert not rows["HF generation"].counted
    assert est.total_gb == pytest.approx((PARAMS * 16 + activations) / 1e9 + CUDA_OVERHEAD_GB)
    assert est.available_gb == pytest.approx(10 * GIB / 1e9)  # GiB declared, GB reported
    assert est.fits and est.advice() == []


def test_gradient_checkpointing_bfloat16_reference_and_lora():
    est = estimate_memory(config(dtype="bfloat16", gradient_checkpointing=True, beta=0.1), SHAPE)
    rows = {row.name: row.gb for row in est.rows}
    # 200 tokens: every layer's input (64 x 2 B) + one layer's 2,432 B/token; + logits
    assert rows["activations"] == pytest.approx((200 * 64 * 2 * 2 + 200 * PER_TOKEN_LAYER_16BIT + 2 * 10 * 1000 * 8) / 1e9)
    assert rows["autocast weight copies"] == pytest.approx(PARAMS * 2 / 1e9)
    assert rows["reference model"] == pytest.approx(PARAMS * 2 / 1e9)
    lora = estimate_memory(config(dtype="bfloat16", beta=0.1, use_lora=True, lora_r=8,
                                  lora_target_modules=["q_proj", "v_proj"]), SHAPE)
    rows = {row.name: row.gb for row in lora.rows}
    assert lora.trainable_parameters == 3_584
    assert rows["learner weights"] == pytest.approx((PARAMS * 2 + 3_584 * 4) / 1e9)
    assert rows["gradients"] == pytest.approx(3_584 * 4 / 1e9)
    assert rows["AdamW state"] == pytest.approx(3_584 * 8 / 1e9)
    assert "reference model" not in rows and "autocast weight copies" not in rows  # adapters off = reference


def test_vllm_share():
    est = estimate_memory(config(policy="vllm", policy_kwargs={"gpu_memory_utilization": 0.3, "max_model_len": 100}), SHAPE)
    assert est.row("vLLM (colocated)").gb == pytest.approx(0.3 * 10 * GIB / 1e9)
    assert "HF generation" not in {row.name for row in est.rows}
    default = estimate_memory(config(policy="vllm", policy_kwargs={}), SHAPE)
    assert default.row("vLLM (colocated)").gb == pytest.approx(0.85 * 10 * GIB / 1e9)  # VLLMPolicy's GPU default
    assert default.row("activations").gb > est.row("activations").gb  # 4096-token default context


def test_does_not_fit_gives_advice_and_check_memory_raises():
    big = config(policy="vllm", policy_kwargs={"gpu_memory_utilization": 0.35, "max_model_len": 4096},
                 model="Qwen/Qwen2.5-7B-Instruct", dtype="bfloat16", max_new_tokens=1024, gpu_memory_gib=80.0)
    est = estimate_memory(big)
    assert not est.fits and est.total_gb > 80 * GIB / 1e9
    advice = " ".join(est.advice())
    assert "use_lora: true" in advice and "gradient_checkpointing: true" in advice and "micro_batch_size" in advice
    with pytest.raises(ValueError, match=r"does NOT fit.*use_lora"):
        check_memory(big)
    fitting = check_memory(config(gpu_memory_gib=None), SHAPE, gpu_memory_gib=4.0)  # the device's own memory
    assert fitting.fits and fitting.gpu_memory_gib == 4.0
    with pytest.raises(ValueError, match="needs gpu_memory_gib"):
        estimate_memory(config(gpu_memory_gib=None), SHAPE)


def test_hf_generation_counts_float32_kv_the_scores_and_whole_groups():
    """HFPolicy samples without autocast (a full fine-tune's KV cache is float32 under dtype bfloat16),
    keeps every step's float32 scores (output_scores), and takes whole groups per generate call:
    8 rows where batch_size is 4 and group_size 8."""
    kv32, kv16 = 2 * 2 * 2 * 16 * 4, 2 * 2 * 2 * 16 * 2  # B/token: 2 (k, v) x 2 layers x 2 kv heads x 16
    hf = {"max_context": 100, "batch_size": 4}
    for lora, kv in ((False, kv32), (True, kv16)):
        est = estimate_memory(config(dtype="bfloat16", use_lora=lora, lora_target_modules=["q_proj"], group_size=8,
                                     max_new_tokens=50, eval_max_new_tokens=60, policy_kwargs=hf), SHAPE)
        assert est.row("HF generation").gb == pytest.approx(8 * (100 * kv + 60 * 1000 * 4) / 1e9), lora
    full = estimate_memory(config(dtype="bfloat16", group_size=8, max_new_tokens=50, policy_kwargs=hf), SHAPE)
    generation, activations = full.row("HF generation"), full.row("activations")
    assert generation.gb > activations.gb and generation.counted and not activations.counted
    assert estimate_memory(config(group_size=2, policy_kwargs=hf), SHAPE).row("HF generation").gb == \
        pytest.approx(4 * (100 * kv32 + 10 * 1000 * 4) / 1e9)  # two groups of 2 per call


def test_vllm_configs_keep_their_documented_totals():
    est = estimate_memory(GRPOConfig.from_yaml(ROOT / "examples/configs/reczero_yelp.yaml"))
    assert round(est.total_gb, 1) == 65.2  # docs/training.md


def test_cli_trainable_layers_config_that_does_not_fit_gets_advice_not_a_traceback(tmp_path, capsys):
    path = tmp_path / "top4.yaml"
    path.write_text("model: Qwen/Qwen2.5-7B-Instruct\ntrainable_layers: 4\ngpu_memory_gib: 40\npolicy: vllm\n"
                    "dtype: bfloat16\n")
    assert main(["train", "grpo", "--config", str(path), "--estimate-memory"]) == 2
    err = capsys.readouterr().err
    assert "does NOT fit" in err and "use_lora: true and trainable_layers: 0" in err, err
    assert "gradient_checkpointing: true" in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3
    with pytest.raises(ValueError, match=r"does NOT fit.*Change: use_lora: true and trainable_layers: 0"):
        check_memory(GRPOConfig.from_yaml(path))


def test_table_lists_every_row():
    est = estimate_memory(config(), SHAPE)
    table = est.table()
    assert table.row_count == len(est.rows) + 1  # + total
    assert "GiB" in str(table.caption) and "10^9" in str(table.caption)


@pytest.mark.parametrize("name", GPU_CONFIGS)
def test_cli_shipped_gpu_configs_fit(name, capsys):
    assert main(["train", "grpo", "--config", str(ROOT / "examples/configs" / f"{name}.yaml"), "--estimate-memory"]) == 0
    assert "fits" in capsys.readouterr().out


def test_cli_full_fine_tune_7b_does_not_fit(tmp_path, capsys):
    path = tmp_path / "full.yaml"
    path.write_text("model: Qwen/Qwen2.5-7B-Instruct\npolicy: vllm\ndtype: bfloat16\ngradient_checkpointing: true\n"
                    "policy_kwargs: {gpu_memory_utilization: 0.35, max_model_len: 4096}\nmax_new_tokens: 1024\n"
                    "gpu_memory_gib: 80\n")
    assert main(["train", "grpo", "--config", str(path), "--estimate-memory"]) == 2
    err = capsys.readouterr().err
    assert "does NOT fit" in err and "use_lora: true" in err and len(err.strip().splitlines()) <= 3
    # without a declared GPU memory: one line saying so
    assert main(["train", "grpo", "--config", str(path), "--estimate-memory", "--gpu_memory_gib", "null"]) == 2
    err = capsys.readouterr().err
    assert "gpu_memory_gib" in err and len(err.strip().splitlines()) == 1


def test_cli_reads_only_config_json(tmp_path, capsys):
    """A checkpoint directory holding nothing but config.json: any weight loading would fail."""
    (tmp_path / "config.json").write_text(json.dumps(SHAPE))
    rc = main(["train", "grpo", "--model", str(tmp_path), "--estimate-memory", "--gpu_memory_gib", "2",
               "--policy_kwargs", "{max_context: 100}"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "0.00B params" in out.out and "fits" in out.out


@pytest.mark.parametrize(("algorithm", "copies"), [
    ("grpo", []), ("online_dpo", ["reference model"]), ("ppo", ["critic body"]),
])
def test_frozen_copies_the_algorithm_keeps_are_counted(algorithm, copies):
    """online_dpo always needs the reference and PPO's critic reads a frozen copy of the initial
    model: without LoRA each is a full copy in the compute dtype, with LoRA none is."""
    est = estimate_memory(config(dtype="bfloat16", algorithm=algorithm), SHAPE)
    rows = {row.name: row.gb for row in est.rows}
    for name in copies:
        assert rows[name] == pytest.approx(PARAMS * 2 / 1e9)
    assert not {"reference model", "critic body"} - set(copies) & set(rows)
    lora = estimate_memory(config(dtype="bfloat16", algorithm=algorithm, use_lora=True, lora_r=8,
                                  lora_target_modules=["q_proj"]), SHAPE)
    assert not {"reference model", "critic body"} & {row.name for row in lora.rows}


def test_learner_memory_bench_runs_the_trainers_learner_and_export_without_a_gpu(tmp_path):
    """bench/learner_memory.py (a GPU measurement) still drives GRPOTrainer.learn and the LoRA weight
    export on a CPU: one made-up shape, LoRA, two learner calls; no memory is read without a GPU."""
    import importlib.util

    import torch

    checkpoint = tmp_path / "shape"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps(SHAPE))
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({
        "model": str(checkpoint), "policy": "hf", "policy_kwargs": {"max_context": 40}, "use_lora": True,
        "lora_r": 4, "gradient_checkpointing": True, "group_size": 2, "prompts_per_step": 1,
        "max_new_tokens": 8, "micro_batch_size": 2, "gpu_memory_gib": 1,
    }))
    spec = importlib.util.spec_from_file_location("learner_memory", ROOT / "bench" / "learner_memory.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "result.json"
    assert bench.main(["--config", str(config), "--steps", "2", "--groups", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["sequence_length"] == 40 and len(result["learn_seconds"]) == 2
    # the merged export: every base tensor under its base name (2 layers x 9 + embeddings, norm, lm_head)
    assert result["export"] == {**result["export"], "tensors": 2 * 9 + 3, "lora_names_left": 0}
    if not torch.cuda.is_available():
        assert result["peak_allocated_gb"] is None
