#!/usr/bin/env bash
# The paper's whole pipeline at TOY SCALE on a CPU: the same scripts a GPU user runs, in order.
#   bash examples/dgpo_trainer/run_paper_pipeline_cpu.sh OUT_DIR
#
#   1. scripts/prepare_data.py   the six benchmarks + a training set, from the small local copies in
#                                tests/fixtures/data (no network), in the paper's format
#   2. python -m verl_dgpo.main  the local CPU preset's tiny random model (~100k parameters), trained
#                                with dgpo, then with grpo, a few steps each, on those math prompts;
#                                validation on the six benchmarks logs Avg@k and Pass@k per benchmark
#   3. python -m verl_dgpo.eval  both final checkpoints, Hugging Face backend, k samples per problem
#   4. scripts/make_tables.py    OUT_DIR/tables.md: our numbers beside the published ones
#
# The tiny model cannot solve math: its numbers are ~0 and say nothing about DGPO. The point is that
# the chain runs end to end. Wall time on 2 cores: see docs/evaluation.md ("Toy reproduction").
# Extra arguments are hydra overrides for both trainings (e.g. trainer.total_training_steps=3).
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: bash $0 OUT_DIR [hydra overrides for both trainings]" >&2
    exit 2
fi
OUT=$(mkdir -p "$1" && cd "$1" && pwd)
shift
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FIX=$REPO/tests/fixtures/data
STEPS=${PIPELINE_STEPS:-2}   # training steps per method
VAL_N=${PIPELINE_VAL_N:-4}   # samples per problem in validation and evaluation (the paper: 32)
START=$(date +%s)
step() { echo "[pipeline $(( $(date +%s) - START ))s] $*"; }

step "1/4 prepare data -> $OUT/data"
python "$REPO/scripts/prepare_data.py" --out "$OUT/data" \
    --source train="$FIX/deepscaler.jsonl" \
    --source aime24="$FIX/aime24.jsonl" \
    --source aime25="$FIX/aime25.jsonl" \
    --source amc23="$FIX/amc23_rows.json" \
    --source math500="$FIX/math500.jsonl" \
    --source minerva="$FIX/minerva.json" \
    --source olympiadbench="$FIX/olympiadbench.json" >"$OUT/prepare_data.log"

train() {  # train METHOD: the local preset on the prepared math data, validating at the last step
    local method=$1
    shift
    step "2/4 train $method for $STEPS steps -> $OUT/runs/$method"
    python -m verl_dgpo.main --config-name local_cpu \
        algorithm.policy_loss="$method" \
        local_cpu.output_dir="$OUT/runs/$method" \
        data.train_files="$OUT/data/train.parquet" \
        data.val_files="$OUT/data/benchmarks.parquet" \
        data.validation_shuffle=false \
        data.train_batch_size=4 data.max_prompt_length=384 data.max_response_length=16 \
        actor_rollout_ref.actor.ppo_mini_batch_size=2 actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=8 \
        actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=16 \
        actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=16 \
        actor_rollout_ref.rollout.n=4 \
        actor_rollout_ref.rollout.val_kwargs.n="$VAL_N" \
        actor_rollout_ref.rollout.val_kwargs.do_sample=true \
        actor_rollout_ref.rollout.val_kwargs.temperature=1.0 \
        'actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]' \
        reward.custom_reward_function.path=pkg://verl_dgpo.reward \
        reward.custom_reward_function.name=compute_score \
        trainer.total_training_steps="$STEPS" trainer.save_freq="$STEPS" trainer.test_freq="$STEPS" \
        trainer.validation_data_dir="$OUT/runs/$method/validation" \
        trainer.experiment_name="toy_pipeline_$method" \
        "$@" >"$OUT/runs/$method.log" 2>&1 || {
        echo "[pipeline] training $method failed; the last lines of $OUT/runs/$method.log:" >&2
        tail -n 30 "$OUT/runs/$method.log" >&2
        exit 1
    }
}

evaluate() {  # evaluate METHOD: its final checkpoint's Hugging Face weights on the six benchmarks
    local method=$1
    local model
    model=$(printf "%s\n" "$OUT/runs/$method/checkpoints/$method"/global_step_*/actor/huggingface | sort -V | tail -n 1)
    step "3/4 evaluate $model -> $OUT/eval/$method"
    python -m verl_dgpo.eval --model "$model" --data "$OUT/data/benchmarks.parquet" --backend hf \
        --k "$VAL_N" --temperature 1.0 --max-new-tokens 16 --chunk-size 16 --no-progress --overwrite \
        --out "$OUT/eval/$method" >"$OUT/eval_$method.log" 2>&1 || {
        echo "[pipeline] evaluating $method failed; see $OUT/eval_$method.log" >&2
        tail -n 30 "$OUT/eval_$method.log" >&2
        exit 1
    }
}

mkdir -p "$OUT/runs"
train dgpo "$@"
train grpo "$@"
evaluate dgpo
evaluate grpo

step "4/4 tables -> $OUT/tables.md"
python "$REPO/scripts/make_tables.py" \
    --summary DGPO:1.5B="$OUT/eval/dgpo" --summary GRPO:1.5B="$OUT/eval/grpo" \
    --title "TOY SCALE: ours = a tiny random ~100k-parameter model trained $STEPS steps on CPU on a few fixture problems, k=$VAL_N; it shows the pipeline runs, not DGPO's accuracy. Paper = DeepSeek-R1-Distill-Qwen-1.5B, k=32." \
    --out "$OUT" --no-chart >/dev/null
step "done in $(( $(date +%s) - START )) s: $OUT/tables.md"
