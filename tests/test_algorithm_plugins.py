"""The algorithms that use the trainer's extension points (dapo, gspo, ppo, online_dpo), end to end
with tiny models: group filtering and refills, resume with the algorithm's own state, the CLI,
and (slow) learning beyond noise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file
from tiny_lm import SHORT_PROMPTS, tiny_config, tiny_model, tiny_tokenizer

from recgym.agents.checkpoints import check_output_dir, list_checkpoints
from recgym.agents.config import GRPOConfig
from recgym.agents.rollout import single_turn as rollout_module
from recgym.agents.rollout.batch import take_groups
from recgym.agents.trainer import GRPOTrainer
from recgym.agents.types import RolloutBatch

PLUGINS = ("dapo", "gspo", "ppo", "online_dpo")
REPO = Path(__file__).resolve().parents[1]


def train_rows(output_dir) -> list[dict]:
    lines = (Path(output_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "reward" in r]


# ---- take_groups and the refill mechanism ----


def batch_of(prompts: list[list[int]], completions: list[list[int]], rewards: list[float], group_size: int,
             ) -> RolloutBatch:
    from recgym.agents.rollout.batch import pad

    prompt_ids, prompt_mask = pad(prompts, 0, np.int64, left=True)
    completion_ids, completion_mask = pad(completions, 0, np.int64)
    n = len(rewards)
    old = -np.arange(n, dtype=np.float32)[:, None] * completion_mask  # row i's tokens: -i
    return RolloutBatch(
        prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
        completion_mask=completion_mask, old_logprobs=old,
        rewards=np.asarray(rewards, dtype=np.float32),
        group_ids=np.repeat(np.arange(n // group_size), group_size), truncated=np.zeros(n, dtype=bool),
        reward_components={"accuracy": np.asarray(rewards, dtype=np.float32)},
        texts=[f"t{r}" for r in rewards], infos=[{"r": r} for r in rewards],
    )


def test_take_groups_repads_and_renumbers():
    a = batch_of([[1, 2], [1, 2], [3], [3]], [[5], [6, 7], [8], [9]], [0.0, 1.0, 2.0, 3.0], group_size=2)
    b = batch_of([[4, 4, 4], [4, 4, 4]], [[10, 11, 12], [13]], [4.0, 5.0], group_size=2)
    out = take_groups([(a, [1]), (b, [0]), (a, [0])], pad_token_id=0)
    assert out.group_ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert out.rewards.tolist() == [2.0, 3.0, 4.0, 5.0, 0.0, 1.0]
    assert out.prompt_ids.tolist() == [[0, 0, 3], [0, 0, 3], [4, 4, 4], [4, 4, 4], [0, 1, 2], [0, 1, 2]]
    assert out.prompt_mask.sum(1).tolist() == [1, 1, 3, 3, 2, 2]
    assert out.completion_ids.tolist() == [[8, 0, 0], [9, 0, 0], [10, 11, 12], [13, 0, 0], [5, 0, 0], [6, 7, 0]]
    assert out.completion_mask.sum(1).tolist() == [1, 1, 3, 1, 1, 2]
    assert out.old_logprobs[:, 0].tolist() == [-2.0, -3.0, -0.0, -1.0, -0.0, -1.0]
    assert out.texts == ["t2.0", "t3.0", "t4.0", "t5.0", "t0.0", "t1.0"]
    assert out.reward_components["accuracy"].tolist() == out.rewards.tolist()
    with pytest.raises(ValueError, match="different sizes"):
        take_groups([(a, [0]), (batch_of([[1]] * 3, [[1]] * 3, [0.0] * 3, 3), [0])])


def test_dapo_drops_zero_variance_groups_refills_and_keeps_the_batch_size(tmp_path):
    """A random tiny model never writes the rating format: every reward is -0.5, every group is
    dropped, each step draws 1 + max_refills rounds of prompts and learns from a full batch."""
    cfg = tiny_config(tmp_path, env_kwargs=SHORT_PROMPTS, algorithm="dapo", algorithm_kwargs={"max_refills": 2})
    trainer = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    batch, stats = trainer.rollout()
    assert len(batch) == trainer.batch_size and batch.group_ids.tolist() == [0] * 4 + [1] * 4
    assert (stats["groups_dropped"], stats["refill_rounds"]) == (2 * 3, 2)
    assert trainer.sampler.position == 2 * 3
    trainer.train()
    rows = train_rows(cfg.output_dir)
    assert [(r["groups_dropped"], r["refill_rounds"], r["data_position"]) for r in rows] == [(6, 2, 12), (6, 2, 18)]


def test_refill_replaces_dropped_groups_by_fresh_prompts_in_order(tmp_path, monkeypatch):
    """Round 0 keeps its group 1 only, round 1 its group 0: the batch is those two groups, in that
    order, exactly as they were collected."""
    cfg = tiny_config(tmp_path, algorithm="dapo")
    trainer = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    rounds: list[tuple[RolloutBatch, list[int]]] = []
    collect = rollout_module.collect

    def recording_collect(env, policy, **kwargs):
        batch, stats = collect(env, policy, **kwargs)
        rounds.append((batch, list(kwargs["indices"])))
        return batch, stats

    monkeypatch.setattr(rollout_module, "collect", recording_collect)
    verdicts = iter([np.array([False, True]), np.array([True, False])])
    monkeypatch.setattr(trainer.algorithm, "keep_groups", lambda batch: next(verdicts))
    batch, stats = trainer.rollout()
    assert len(rounds) == 2 and (stats["groups_dropped"], stats["refill_rounds"]) == (2, 1)
    assert stats["indices"] == [rounds[0][1][1], rounds[1][1][0]]
    expected = take_groups([(rounds[0][0], [1]), (rounds[1][0], [0])], tiny_tokenizer().pad_token_id)
    assert len(batch) == trainer.batch_size
    for field in ("prompt_ids", "completion_ids", "completion_mask", "old_logprobs", "rewards", "group_ids"):
        np.testing.assert_array_equal(getattr(batch, field), getattr(expected, field), err_msg=field)
    assert batch.texts[:4] == rounds[0][0].texts[4:] and batch.texts[4:] == rounds[1][0].texts[:4]


def test_algorithms_without_filters_take_one_round(tmp_path):
    trainer = GRPOTrainer(tiny_config(tmp_path, env_kwargs=SHORT_PROMPTS, algorithm="gspo"), model=tiny_model(),
                          tokenizer=tiny_tokenizer())
    _, stats = trainer.rollout()
    assert (stats["groups_dropped"], stats["refill_rounds"], trainer.sampler.position) == (0, 0, 2)


def test_online_dpo_micro_batches_hold_whole_groups(tmp_path):
    trainer = GRPOTrainer(tiny_config(tmp_path, algorithm="online_dpo", group_size=4, micro_batch_size=3),
                          model=tiny_model(), tokenizer=tiny_tokenizer())
    assert trainer.micro_batch_size == 4 and trainer.ref_model is not None


# ---- checkpoints carry the algorithm's state; resume is exact ----


def run_with_crash(cfg: GRPOConfig, crash_in_step: int) -> None:
    """Train; raise inside step ``crash_in_step`` after its update (nothing of it saved)."""
    trainer = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    learn = trainer.learn

    def learn_then_crash(batch, advantages):
        out = learn(batch, advantages)
        if trainer.step + 1 == crash_in_step:
            raise KeyboardInterrupt("killed mid-step")
        return out

    trainer.learn = learn_then_crash
    with pytest.raises(KeyboardInterrupt):
        trainer.train()


@pytest.fixture
def one_thread():
    """Identical float reductions in both runs (multi-threaded CPU embedding backward is not)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("algorithm", PLUGINS)
def test_resume_after_a_crash_reaches_the_uninterrupted_state(tmp_path, algorithm, one_thread):
    kwargs = {"algorithm_kwargs": {"clip_epsilon_low": 0.2, "clip_epsilon_high": 0.2}} if algorithm == "gspo" else {}
    common = dict(algorithm=algorithm, max_steps=3, save_interval=1, num_inner_epochs=2, micro_batch_size=4,
                  lr_scheduler_type="linear", **kwargs)
    full_cfg = tiny_config(tmp_path / "full", **common)
    GRPOTrainer(full_cfg, model=tiny_model(), tokenizer=tiny_tokenizer()).train()
    cfg = tiny_config(tmp_path / "crashed", **common)
    run_with_crash(cfg, crash_in_step=3)
    assert [p.name for p in list_checkpoints(cfg.output_dir)][-1] == "step-000002"
    # the same initial model: the reference (online_dpo) and the critic's frozen body are copies of it
    resumed = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    resumed.train(resume=True)

    drop = ("time/", "tokens_per_second")
    full_rows, resumed_rows = train_rows(full_cfg.output_dir), train_rows(cfg.output_dir)
    assert [r["step"] for r in resumed_rows] == [1, 2, 3]
    for a, b in zip(full_rows, resumed_rows):
        for key in (k for k in a if not k.startswith(drop)):
            if a[key] is None:  # a reward part no completion produced (NaN, logged as null)
                assert b[key] is None, (a["step"], key)
                continue
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (a["step"], key)
    final = "checkpoints/step-000003"
    w_full = load_file(str(Path(full_cfg.output_dir) / final / "model/model.safetensors"))
    w_res = load_file(str(Path(cfg.output_dir) / final / "model/model.safetensors"))
    for k in w_full:
        torch.testing.assert_close(w_full[k], w_res[k], atol=1e-6, rtol=1e-5)
    s_full = torch.load(Path(full_cfg.output_dir) / final / "training_state.pt", weights_only=False)["algorithm"]
    s_res = torch.load(Path(cfg.output_dir) / final / "training_state.pt", weights_only=False)["algorithm"]
    if algorithm == "ppo":
        assert set(s_full) == {"value_head", "optimizer"} and s_full["optimizer"]["state"]
        for k, v in s_full["value_head"].items():
            torch.testing.assert_close(v, s_res["value_head"][k], atol=1e-6, rtol=1e-5)
        assert any(v.abs().sum() > 0 for v in s_full["value_head"].values())  # the critic learned
        assert all("value_loss" in r for r in full_rows)
    else:
        assert s_full == s_res == {}


def test_ppo_checkpoint_round_trip_restores_the_critic_and_its_optimizer(tmp_path):
    cfg = tiny_config(tmp_path, algorithm="ppo", max_steps=1)
    trainer = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    trainer.train()
    fresh = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    assert fresh.load_checkpoint()
    for a, b in zip(trainer.algorithm.head.parameters(), fresh.algorithm.head.parameters()):
        assert torch.equal(a, b) and a.abs().sum() > 0
    a_state = trainer.algorithm.critic_optimizer.state_dict()["state"]
    b_state = fresh.algorithm.critic_optimizer.state_dict()["state"]
    assert a_state.keys() == b_state.keys()
    for k in a_state:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(a_state[k][name], b_state[k][name])
    # the next step from each is the same
    a, b = trainer.train_step(), fresh.train_step()
    for key in ("reward", "loss", "value_loss", "grad_norm"):
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-6), key


# ---- the command line ----


def test_recgym_algorithms_lists_the_plugins(capsys):
    from recgym.cli import main

    assert main(["algorithms"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("grpo", "dr_grpo", "rloo", "reinforce", *PLUGINS))


@pytest.mark.slow
def test_cli_trains_the_demo_config_with_each_plugin(tmp_path):
    """``recgym train grpo --config examples/configs/reczero_synthetic.yaml --algorithm X``, with a
    tiny model saved to disk in place of SmolLM2 and short sampling."""
    from recgym.cli import main

    model_dir = tmp_path / "tiny"
    tiny_model().save_pretrained(model_dir)
    tiny_tokenizer().save_pretrained(model_dir)
    for algorithm in PLUGINS:
        out = tmp_path / algorithm
        code = main(["train", "grpo", "--config", str(REPO / "examples/configs/reczero_synthetic.yaml"),
                     "--algorithm", algorithm, "--max_steps", "2", "--model", str(model_dir), "--max_new_tokens", "8",
                     "--eval_size", "2", "--eval_max_new_tokens", "4", "--live_display", "false", "--plot", "false",
                     "--output_dir", str(out)])
        assert code in (0, None), algorithm
        rows = train_rows(out)
        assert [r["step"] for r in rows] == [1, 2], algorithm
        state = torch.load(list_checkpoints(out)[-1] / "training_state.pt", weights_only=False)
        assert "algorithm" in state
    assert rows and "dpo_pairs" in rows[-1]
    assert "value_loss" in train_rows(tmp_path / "ppo")[-1]
    assert train_rows(tmp_path / "dapo")[0]["refill_rounds"] == 3  # a random model: no group has spread


# ---- learning ----


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", PLUGINS)
def test_tiny_model_learns_a_rewarded_behaviour_beyond_noise(tmp_path, algorithm):
    """Each algorithm raises the mean reward of a rewarded behaviour (spaces in the text) well past
    the spread expected from sampling noise alone: test_trainer's GRPO test, per algorithm.

    The mean is the rollout's ``reward/accuracy`` (the environment's reward of the first round:
    DAPO's logged ``reward`` is shaped and drawn from the groups it kept)."""
    cfg = tiny_config(tmp_path, algorithm=algorithm, max_steps=12, group_size=8, prompts_per_step=2,
                      max_new_tokens=12, learning_rate=1e-2, eval_size=1, eval_max_new_tokens=2)
    model = tiny_model()
    with torch.no_grad():
        model.model.norm.weight.mul_(30.0)
    GRPOTrainer(cfg, model=model, tokenizer=tiny_tokenizer()).train()
    rows = train_rows(cfg.output_dir)
    first, last = rows[:2], rows[-4:]
    per_step = cfg.group_size * cfg.prompts_per_step
    std = float(np.mean([r["reward_std"] for r in first]))
    noise = np.hypot(std / np.sqrt(len(first) * per_step), std / np.sqrt(len(last) * per_step))
    gain = np.mean([r["reward/accuracy"] for r in last]) - np.mean([r["reward/accuracy"] for r in first])
    assert std > 0 and gain > 4 * noise, (gain, noise, [round(r["reward/accuracy"], 3) for r in rows])


# ---- a plug-in's mistakes stop the run with one line, before they train on wrong numbers ----

PLUGINS_SOURCE = '''
import dataclasses

import numpy as np
import torch
from recgym.agents.algorithms import Algorithm
from recgym.agents.algorithms.base import per_group


def centered(r):
    return r - r.mean()


class Base(Algorithm):
    def advantages(self, batch):
        return per_group(batch, centered)

    def share(self, inputs):
        return (-(inputs.advantages.unsqueeze(1) * inputs.logprobs) * inputs.mask).sum() / inputs.total_sequences


class AdvOne(Base):
    def advantages(self, batch):
        return np.array([1.0], dtype=np.float32)


class AdvTwice(Base):
    def advantages(self, batch):
        a = per_group(batch, centered)
        return np.concatenate([np.ones_like(a), a])


class AdvPerGroup(Base):
    def advantages(self, batch):
        return np.ones(len(np.unique(batch.group_ids)), dtype=np.float32)


class AdvTorch(Base):
    def advantages(self, batch):
        return torch.as_tensor(per_group(batch, centered))


class BareLoss(Base):
    def loss(self, inputs):
        return self.share(inputs)


class RowLoss(Base):
    def loss(self, inputs):
        return -(inputs.advantages * (inputs.logprobs * inputs.mask).sum(-1)), {}


class DetachedLoss(Base):
    def loss(self, inputs):
        return self.share(inputs).detach(), {}


class NoStats(Base):
    def loss(self, inputs):
        return self.share(inputs), None


class VectorStat(Base):
    def loss(self, inputs):
        return self.share(inputs), {"adv": inputs.advantages.detach()}


class TensorStat(Base):
    def loss(self, inputs):
        loss = self.share(inputs)
        return loss, {"loss": loss.detach(), "rows": np.float32(len(inputs.mask))}


class KeepRows(Base):
    max_refills = 1

    def keep_groups(self, batch):
        return np.ones(len(batch), dtype=bool)


class NoSuper(Base):
    def __init__(self, *, foo: float = 1.0, **kwargs):
        self.foo = foo


class TrainerStat(Base):
    def loss(self, inputs):
        loss, stats = super().loss(inputs)
        return loss, {**stats, "reward": 1.0}


class ForgotReturn(Base):
    def shape_rewards(self, batch, max_new_tokens):
        batch = dataclasses.replace(batch, rewards=batch.rewards - 0.1)


class ShapeNoMax(Base):
    def shape_rewards(self, batch):
        return batch


class SetupNoConfig(Base):
    def setup(self, model):
        pass


class InPlaceShape(Base):
    def shape_rewards(self, batch, max_new_tokens):
        self.sampled = batch.rewards.copy(), {k: v.copy() for k, v in batch.reward_components.items()}
        batch.rewards -= 100.0
        for values in batch.reward_components.values():
            values -= 100.0
        return batch


class EveryBranch(Base):
    """Step 1: a NaN reward and a NaN loss; step 2: every advantage 0 (the skipped update)."""
    steps = 0

    def shape_rewards(self, batch, max_new_tokens):
        self.steps += 1
        rewards = batch.rewards.copy()
        rewards[0] = np.nan
        return dataclasses.replace(batch, rewards=rewards)

    def advantages(self, batch):
        return super().advantages(batch) * (self.steps == 1)

    def loss(self, inputs):
        loss, stats = super().loss(inputs)
        return loss * float("nan"), stats
'''


@pytest.fixture
def plugins(tmp_path) -> str:
    (tmp_path / "plugins.py").write_text(PLUGINS_SOURCE)
    return str(tmp_path / "plugins.py")


B, C = r"\(B,\)=\(8,\)", r"\(B, C\)=\(8, 8\)"
RULE = r"loss\(\) must return \(a scalar tensor with grad, a dict of floats\)"


@pytest.mark.parametrize(("name", "error", "words"), [
    ("AdvOne", ValueError, rf"^AdvOne.advantages returned shape \(1,\); expected a numpy array of shape {B} or {C}$"),
    ("AdvTwice", ValueError, r"AdvTwice.advantages returned shape \(16,\)"),
    ("AdvPerGroup", ValueError, r"AdvPerGroup.advantages returned shape \(2,\)"),
    ("AdvTorch", TypeError, "AdvTorch.advantages returned a torch tensor"),
    ("BareLoss", TypeError, rf"BareLoss.loss returned a Tensor of shape \(\); {RULE}"),
    ("RowLoss", TypeError, r"RowLoss.loss returned a loss of shape \(4,\)"),
    ("DetachedLoss", ValueError, "DetachedLoss.loss returned a loss without grad"),
    ("NoStats", TypeError, "NoStats.loss returned stats of None"),
    ("VectorStat", TypeError, r"VectorStat.loss returned stats\['adv'\] of a Tensor of shape \(4,\)"),
    ("KeepRows", ValueError, r"KeepRows.keep_groups returned shape \(8,\); expected one bool per group, .*\(2,\)"),
    ("TrainerStat", ValueError, r"^TrainerStat.loss returned stats\['reward'\], a name the trainer logs .*: rename it$"),
    ("ForgotReturn", TypeError, r"^ForgotReturn.shape_rewards returned None; expected a RolloutBatch of its 8 rows"),
])
def test_a_hook_result_of_the_wrong_shape_or_kind_stops_the_step_with_one_line(tmp_path, plugins, name, error, words):
    """Advantages of shape [1] or [2B] used to train on wrong numbers without an error (broadcast to
    every row; each micro-batch sliced from the first B); the others failed far from the cause."""
    cfg = tiny_config(tmp_path, algorithm=f"{plugins}:{name}", max_steps=1)
    trainer = GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer())
    before = [p.detach().clone() for p in trainer.model.parameters()]
    with pytest.raises(error, match=words) as caught:
        trainer.train_step()
    assert "\n" not in str(caught.value)
    assert all(torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))  # nothing learned


def test_0d_tensors_and_numpy_scalars_in_the_stats_are_logged_as_floats(tmp_path, plugins):
    """``{"loss": loss.detach()}`` used to stop the run at its log, after the optimizer stepped."""
    cfg = tiny_config(tmp_path, algorithm=f"{plugins}:TensorStat", max_steps=1)
    GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer()).train()
    (row,) = train_rows(cfg.output_dir)
    assert isinstance(row["loss"], float) and row["rows"] == 8.0  # summed over the update's two micro-batches


def test_a_plugin_without_super_init_stops_before_the_model_loads(tmp_path, plugins, monkeypatch):
    import recgym.agents.trainer as trainer_module

    def never(*args, **kwargs):
        raise AssertionError("the learner must not load")

    monkeypatch.setattr(trainer_module, "load_learner", never)
    with pytest.raises(TypeError, match=r"NoSuper.__init__ does not call super\(\).__init__\(\*\*kwargs\)"):
        GRPOTrainer(tiny_config(tmp_path, algorithm=f"{plugins}:NoSuper"))


def test_a_plugin_named_by_a_relative_path_resumes_from_another_folder(tmp_path, monkeypatch):
    """``--algorithm loo.py:Loo`` typed in the plug-in's folder used to be saved as typed: a resume
    from elsewhere looked for the file there, and the file's absolute path was refused as other
    settings."""
    folder = tmp_path / "algos"
    folder.mkdir()
    (folder / "loo.py").write_text(PLUGINS_SOURCE)
    monkeypatch.chdir(folder)
    cfg = tiny_config(tmp_path, algorithm="loo.py:Base", max_steps=1, save_interval=1)
    assert cfg.algorithm == f"{folder}/loo.py:Base"
    GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer()).train()
    saved = yaml.safe_load((Path(cfg.output_dir) / "config.yaml").read_text())["algorithm"]
    assert saved == f"{folder}/loo.py:Base"
    monkeypatch.chdir(tmp_path)
    for algorithm in (saved, "algos/loo.py:Base"):
        resumed = tiny_config(tmp_path, algorithm=algorithm, max_steps=2, save_interval=1)
        assert check_output_dir(resumed, resume=True).name == "step-000001"
    GRPOTrainer(resumed, model=tiny_model(), tokenizer=tiny_tokenizer()).train(resume=True)
    assert [r["step"] for r in train_rows(cfg.output_dir)] == [1, 2]


def test_a_checkpoint_that_saved_a_relative_plugin_path_resumes_from_its_folder(tmp_path, monkeypatch):
    """Checkpoints written before paths were resolved hold the path as typed: it is read from the
    folder of the resume, where it was typed."""
    (tmp_path / "plugins.py").write_text(PLUGINS_SOURCE)
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(tmp_path, algorithm="plugins.py:Base", max_steps=1, save_interval=1)
    GRPOTrainer(cfg, model=tiny_model(), tokenizer=tiny_tokenizer()).train()
    state_file = list_checkpoints(cfg.output_dir)[-1] / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["config"]["algorithm"] = "plugins.py:Base"
    state_file.write_text(json.dumps(state))
    assert check_output_dir(cfg, resume=True).name == "step-000001"


def test_the_cli_reports_a_name_clash_in_a_plugin_file_in_one_line(tmp_path, capsys):
    """It used to end in a 25-line traceback with exit status 1."""
    from recgym.cli import main

    (tmp_path / "clash.py").write_text(
        "from recgym.agents.algorithms import Algorithm, register_algorithm\n"
        "from recgym.agents.algorithms.base import per_group\n\n"
        "@register_algorithm('rloo')\nclass MyRLOO(Algorithm):\n"
        "    def advantages(self, batch):\n        return per_group(batch, lambda r: r - r.mean())\n")
    assert main(["train", "grpo", "--algorithm", f"{tmp_path}/clash.py:MyRLOO"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "'rloo' is already registered" in err and "choose another name for MyRLOO" in err


def test_every_key_of_the_trainers_step_record_is_refused_as_a_plugin_stat(tmp_path, plugins):
    """A plug-in's stat named like the trainer's (``step``, ``reward``, ...) used to overwrite it in
    metrics.jsonl (a ``step`` stat even made --resume delete the run's history). A key the trainer
    starts writing fails here until hook_checks refuses it too."""
    import warnings

    from recgym.agents.algorithms.hook_checks import is_trainer_stat
    from recgym.agents.trainer import MULTI_TURN_METRICS

    trainer = GRPOTrainer(tiny_config(tmp_path, algorithm=f"{plugins}:EveryBranch"), model=tiny_model(),
                          tokenizer=tiny_tokenizer())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the NaN reward's and NaN loss's
        records = [trainer.train_step(), trainer.train_step()]
    keys = set().union(*records) - {"loss", "clip_fraction"}  # the algorithm's own
    assert {"nonfinite_rewards", "nonfinite_grad_updates", "skipped_updates", "reward/total"} <= keys
    assert [k for k in sorted(keys | set(MULTI_TURN_METRICS)) if not is_trainer_stat(k)] == []
    assert not any(map(is_trainer_stat, ("loss", "kl", "clip_fraction", "value_loss", "dpo_margin", "critic/loss")))


def test_rewards_a_hook_edits_in_place_are_logged_as_sampled(tmp_path, plugins):
    """``batch.rewards -= penalty`` in shape_rewards used to change the logged (unshaped) ``reward``."""
    trainer = GRPOTrainer(tiny_config(tmp_path, algorithm=f"{plugins}:InPlaceShape"), model=tiny_model(),
                          tokenizer=tiny_tokenizer())
    record = trainer.train_step()
    rewards, components = trainer.algorithm.sampled
    assert record["reward"] == pytest.approx(float(rewards.mean()))
    for key, values in components.items():
        finite = values[np.isfinite(values)]
        if len(finite):
            assert record[f"reward/{key}"] == pytest.approx(float(finite.mean())), key


@pytest.mark.parametrize(("name", "words"), [
    ("ShapeNoMax", r"ShapeNoMax.shape_rewards\(self, batch\) cannot be called as shape_rewards\(batch, max_new_tok"),
    ("SetupNoConfig", r"SetupNoConfig.setup\(self, model\) cannot be called as setup\(model, config\)"),
])
def test_a_hook_of_the_wrong_signature_stops_before_the_model_loads(tmp_path, plugins, monkeypatch, name, words):
    """It used to be a TypeError traceback once the model had loaded (setup) or after the first rollout."""
    import recgym.agents.trainer as trainer_module

    def never(*args, **kwargs):
        raise AssertionError("the learner must not load")

    monkeypatch.setattr(trainer_module, "load_learner", never)
    with pytest.raises(KeyError, match=words):
        GRPOTrainer(tiny_config(tmp_path, algorithm=f"{plugins}:{name}"))


def test_the_cli_reports_a_hook_of_the_wrong_signature_in_one_line(plugins, capsys):
    from recgym.cli import main

    assert main(["train", "grpo", "--algorithm", f"{plugins}:ShapeNoMax", "--model", "/nowhere/model"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "define it as def shape_rewards(self, batch, max_new_tokens)" in err


def test_the_cli_reports_a_hook_result_refused_mid_run_in_one_line(plugins, tmp_path, tiny_path, capsys):
    """A hook result the trainer refuses during training ended the CLI run with a traceback."""
    from recgym.cli import main

    code = main(["train", "grpo", "--algorithm", f"{plugins}:ForgotReturn", "--model", tiny_path, "--output_dir",
                 str(tmp_path / "run"), "--max_steps", "1", "--group_size", "2", "--prompts_per_step", "1",
                 "--max_new_tokens", "4", "--eval_size", "1", "--eval_max_new_tokens", "2", "--eval_on_start", "false",
                 "--live_display", "false", "--plot", "false", "--env_kwargs", "{max_user_history: 2, max_item_history: 1}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("recgym train: error: ForgotReturn.shape_rewards returned None"), err[-3:]
    assert not any(line.startswith("Traceback") for line in err)


def test_nan_advantages_on_padding_take_no_part_in_the_update(tmp_path, one_thread):
    """Per-token advantages with NaN where the mask is 0 used to make the loss NaN (NaN * 0) and the
    whole update was skipped; now the update equals the one with 0 there."""
    from recgym.agents.algorithms.hook_checks import checked_advantages

    completions = [[5, 6, 7], [5], [6, 7], [7, 7, 7]] * 2
    batch = batch_of([[1, 2]] * 8, completions, [0.0, 1.0, 0.5, 0.2, 1.0, 0.0, 0.3, 0.9], group_size=4)
    per_row = np.array([-1.0, 1.0, 0.5, -0.5, 0.8, -0.2, -0.3, -0.3], dtype=np.float32)
    zero = np.where(batch.completion_mask > 0, per_row[:, None], 0.0).astype(np.float32)
    nan = np.where(batch.completion_mask > 0, per_row[:, None], np.nan).astype(np.float32)
    results = []
    for advantages in (zero, nan):
        trainer = GRPOTrainer(tiny_config(tmp_path, algorithm="grpo"), model=tiny_model(), tokenizer=tiny_tokenizer())
        trainer.algorithm.advantages = lambda batch, advantages=advantages: advantages
        stats = trainer.learn(batch, checked_advantages(trainer.algorithm, batch))  # as train_step does
        results.append((stats, [p.detach().clone() for p in trainer.model.parameters()]))
    (zero_stats, zero_weights), (nan_stats, nan_weights) = results
    assert "nonfinite_grad_updates" not in nan_stats and zero_stats["grad_norm"] > 0
    assert nan_stats == pytest.approx(zero_stats)
    assert all(torch.equal(a, b) for a, b in zip(zero_weights, nan_weights, strict=True))
