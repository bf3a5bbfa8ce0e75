#!/usr/bin/env bash
# DGPO on Qwen2.5-0.5B-Instruct with GSM8K, one node (needs a GPU and `pip install -e ".[gpu]"`).
#   python examples/dgpo_trainer/prepare_gsm8k.py --out ~/data/gsm8k
#   bash examples/dgpo_trainer/run_qwen2_5_0_5b_gsm8k_dgpo.sh [hydra overrides ...]
set -euo pipefail
DATA_DIR=${DATA_DIR:-$HOME/data/gsm8k}
MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-0.5B-Instruct}
GPUS_PER_NODE=${GPUS_PER_NODE:-1}
exec python -m verl_dgpo.main \
  algorithm.policy_loss=dgpo algorithm.dgpo.n=1 algorithm.dgpo.m=2 \
  data.train_files="$DATA_DIR/train.parquet" data.val_files="$DATA_DIR/test.parquet" \
  data.train_batch_size=256 data.max_prompt_length=512 data.max_response_length=512 \
  actor_rollout_ref.model.path="$MODEL_PATH" \
  actor_rollout_ref.actor.optim.lr=1e-6 \
  actor_rollout_ref.actor.ppo_mini_batch_size=64 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16 \
  actor_rollout_ref.actor.use_kl_loss=false \
  actor_rollout_ref.rollout.name=vllm actor_rollout_ref.rollout.n=5 \
  actor_rollout_ref.rollout.tensor_model_parallel_size=1 \
  actor_rollout_ref.rollout.gpu_memory_utilization=0.6 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=32 \
  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=32 \
  trainer.n_gpus_per_node="$GPUS_PER_NODE" trainer.nnodes=1 \
  trainer.project_name=verl-dgpo-examples trainer.experiment_name=qwen2.5-0.5b-gsm8k-dgpo \
  trainer.logger="['console']" trainer.total_epochs=15 trainer.save_freq=-1 trainer.test_freq=10 \
  "$@"
