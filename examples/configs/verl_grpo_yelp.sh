#!/usr/bin/env bash
# RecZero GRPO on Yelp with verl (examples/configs/verl_grpo_yelp.yaml), one or two 8-GPU nodes.
# Not run on GPUs yet (docs/verl.md). Run from the recgym checkout:
#   bash examples/configs/verl_grpo_yelp.sh                 # one node, 8 GPUs
#   NNODES=2 bash examples/configs/verl_grpo_yelp.sh        # on the head node, after the Ray cluster is up:
#     head:   ray start --head --port=6379 --num-gpus=8
#     worker: ray start --address=<head-ip>:6379 --num-gpus=8
#   CONFIG=verl_grpo_tools_yelp bash examples/configs/verl_grpo_yelp.sh   # the tool environment
# Variables:
#   NNODES  nodes of 8 GPUs (default 1)
#   CONFIG  verl_grpo_yelp (default) or verl_grpo_tools_yelp, a config in examples/configs
#   DATA    the `recgym export verl --out` folder with train.parquet and validation.parquet
#           (default $HOME/data/verl/yelp; for verl_grpo_tools_yelp $HOME/data/verl/yelp_tools),
#           exported with --max-prompt-tokens at the config's max_prompt_length (3072; tools 1024)
#           and --tokenizer Qwen/Qwen2.5-7B-Instruct: verl 0.4.1 drops no over-long prompt itself
#           (the script refuses, in one line, an export made otherwise)
# Extra arguments are passed on as Hydra overrides (e.g. trainer.logger=[console,wandb]).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NNODES=${NNODES:-1}
CONFIG=${CONFIG:-verl_grpo_yelp}
REWARD=$(python -c 'import recgym.integrations.verl as m; print(m.__file__)')

if [ "$NNODES" -gt 1 ]; then
  # Two nodes: twice the prompts per step at the same per-GPU micro-batches.
  SCALE=(data.train_batch_size=64 actor_rollout_ref.actor.ppo_mini_batch_size=64)
else
  SCALE=()
fi

if [ "$CONFIG" = verl_grpo_tools_yelp ]; then
  DATA=${DATA:-$HOME/data/verl/yelp_tools}
  TOOLS=(actor_rollout_ref.rollout.multi_turn.interaction_config_path="$ROOT/examples/configs/verl_interaction_config.yaml")
else
  DATA=${DATA:-$HOME/data/verl/yelp}
  TOOLS=()
fi

python -m recgym.commands.export "$DATA" "$ROOT/examples/configs/$CONFIG.yaml" "$@"
python -m verl.trainer.main_ppo \
  --config-path="$ROOT/examples/configs" --config-name="$CONFIG" \
  data.train_files="$DATA/train.parquet" \
  data.val_files="$DATA/validation.parquet" \
  custom_reward_function.path="$REWARD" \
  custom_reward_function.name=compute_score \
  trainer.nnodes="$NNODES" \
  trainer.n_gpus_per_node=8 \
  "${SCALE[@]}" "${TOOLS[@]}" "$@"
