#!/usr/bin/env bash
# R-Zero, iteration by iteration (arXiv 2508.05004). One iteration k:
#   1. train the Challenger (GRPO) against the frozen Solver of k-1:
#      reward = max(0, uncertainty 1-2|p-1/2| - repetition penalty)
#   2. the Challenger writes N candidate questions
#   3. the Solver of k-1 answers each one m times: majority = pseudo-label y, agreement = p
#   4. keep the questions with |p - 1/2| <= delta
#   5. train the Solver (GRPO) on them: reward 1 when its answer matches y
#   6. evaluate the new Solver; write the run's report
# Each stage skips itself when its output is complete, so rerunning this script after an
# interruption picks up at the first incomplete stage.
#
# Default: the micro-world demo on a CPU (builds the tiny base once, ~7 min; then 3 iterations in
# a few minutes). Real model on one GPU:  BASE_MODEL=Qwen/Qwen3-4B-Base RUN=q4b bash run_iteration.sh
# Controls:  CHALLENGER=base (untrained Challenger, the paper's "Base Challenger" baseline)
#            LABEL_SOURCE=truth (micro-world only: true labels instead of the vote, the upper bound)
# Several GPUs:  DISTRIBUTED=ddp|zero3|fsdp2 NUM_PROCESSES=8 runs both training stages under
#   `accelerate launch` (stages/accelerate/); QUANTIZATION=4bit trains on a QLoRA base; TRL_VLLM=server
#   serves TRL's generation with `trl vllm-serve` on TRL_VLLM_GPUS while the trainers use TRAIN_GPUS;
#   DATA_PARALLEL=8 generates and labels the questions in 8 shards, one process and engine per GPU.
# The Hub as the artifact bus:  HUB_NAMESPACE=me bash run_iteration.sh
#   every stage reads its inputs from the Hub and pushes its output there, into private repos
#   me/<run>-challenger and me/<run>-solver (a branch per iteration) and me/<run>-questions (a config per
#   iteration and artifact). The same command on another machine resumes from the Hub alone; share a
#   run by those repo names. HUB_ONLY=1 keeps no artifacts here. Token: HF_TOKEN or `hf auth login`.
set -euo pipefail
cd "$(dirname "$0")"

# --- Knobs (environment overrides every one) -------------------------------------------------------
# Knobs renamed in this release after the stage flags they set: the old names still work, with a notice.
for pair in LABELS:LABEL_SOURCE MICRO_BATCH:MICRO_BATCH_SIZE CHALLENGER_PROMPTS:CHALLENGER_PROMPTS_PER_STEP \
            SOLVER_PROMPTS:SOLVER_PROMPTS_PER_STEP; do
  old=${pair%%:*} new=${pair#*:}
  if [[ -n "${!old:-}" ]]; then
    echo "warning: $old is renamed $new; the old name goes away in the next release" >&2
    [[ -n "${!new:-}" ]] || printf -v "$new" '%s' "${!old}"
  fi
done
: "${BASE_MODEL:=micro}"      # base model folder or Hub id; "micro" = build or find the micro-world base
: "${WORLD:=default}"         # micro-world: default | ladder | steep (build_base --world; ladder and steep add a validation split)
: "${DTYPE:=auto}"            # micro-world base precision on the CPU: auto | fp32 | bf16 (build_base --dtype)
: "${RUN:=demo}"              # run name: artifacts in $RUNS_DIR/$RUN/iterNN/<stage>
: "${RUNS_DIR:=runs}"         # where runs live
: "${ITERATIONS:=3}"          # K: iterations to run (the paper reports 3)
: "${FIRST_ITERATION:=1}"     # start here (earlier iterations must be complete)
: "${CHALLENGER:=trained}"    # trained | base: skip step 1 and generate with the untrained base (control)
: "${LABEL_SOURCE:=vote}"     # --label-source: vote | truth: true labels from the safe evaluator (micro-world upper bound)
: "${EVAL_TASKS:=}"           # lm-eval tasks for step 6 (default below: rzero_micro or rzero_all)
: "${PYTHON:=python}"         # interpreter with requirements.txt installed
: "${HUB_NAMESPACE:=}"        # Hub user or org: stages read from and push to <ns>/<run>-*; empty = local only
: "${HUB_ONLY:=0}"            # 1: the Hub is the only storage (stages write to a temporary folder, removed at exit)

if [[ "$BASE_MODEL" == micro ]]; then
  # The paper's constants scaled to a 1.7M-parameter model on 2 CPU cores, each with its reason.
  : "${N:=192}"                 # about 110 kept questions a Solver step can cycle through (paper: 8000)
  : "${CHALLENGER_STEPS:=2}"    # the Challenger only needs to drift toward harder questions (paper: 5)
  : "${CHALLENGER_PROMPTS_PER_STEP:=16}" # x group size 4 = 64 questions per reward batch (paper: 512 x 4)
  : "${SOLVER_STEPS:=10}"       # enough updates to move a tiny model (paper: 15 of 512 prompts)
  : "${SOLVER_PROMPTS_PER_STEP:=16}"     # questions per Solver step (paper: 512)
  : "${LR:=1e-3}"               # a tiny model with LoRA needs a large step (paper: 1e-6, full fine-tuning)
  : "${LORA_RANK:=32}"          # a sizeable share of a hidden size of 192
  : "${MAX_NEW_TOKENS:=64}"     # the longest worked micro-world solution is 59 tokens + EOS (paper: 4096)
  : "${MICRO_BATCH_SIZE:=16}"   # divides both 16 x 4 and 16 x 5 completions per step
  : "${EVAL_MAX_NEW_TOKENS:=80}"  # the longest worked solution (59 tokens + EOS) fits; the task default is 256
fi
: "${N:=8000}"                  # N: Challenger samples per iteration (paper)
: "${M:=10}"                    # m: Solver answers per question (paper)
: "${DELTA:=0.25}"              # delta: keep |p - 1/2| <= delta (paper)
: "${TAU:=0.5}"                 # tau: repetition-penalty clustering cut on 1 - BLEU (paper)
: "${CHALLENGER_STEPS:=5}"      # Challenger optimizer steps (paper)
: "${CHALLENGER_PROMPTS_PER_STEP:=64}" # Challenger prompts per step, x 4 completions (paper: 512 on 8 GPUs)
: "${SOLVER_STEPS:=15}"         # Solver optimizer steps (paper)
: "${SOLVER_PROMPTS_PER_STEP:=128}"    # Solver questions per step, x 5 completions (paper: 512 on 8 GPUs)
: "${LR:=1e-5}"                 # LoRA learning rate (paper: 1e-6 for full fine-tuning)
: "${LORA_RANK:=64}"            # LoRA rank for both roles
: "${MAX_NEW_TOKENS:=4096}"     # max tokens per completion, both roles (paper)
: "${CHALLENGER_MAX_NEW_TOKENS:=$MAX_NEW_TOKENS}"  # the Challenger's own cap: a longer question is cut, parses as
                                # none and earns 0, so it also caps question length (ladder: 12 = 4 operations)
: "${MICRO_BATCH_SIZE:=8}"      # completions per forward/backward pass on one GPU
: "${EVAL_MAX_NEW_TOKENS:=0}"   # 0 = each task's own (4096 math, 8192 general, as the paper)
: "${SOLVER_SERVER:=0}"         # 1: serve the frozen Solver with `vllm serve` for step 1 (GPU box)
: "${SOLVER_PORT:=8011}"        # port of that server
: "${SEED:=0}"
: "${DISTRIBUTED:=none}"        # none | ddp | zero3 | fsdp2: the training stages under accelerate (stages/accelerate/)
: "${NUM_PROCESSES:=1}"         # training processes (GPUs) for DISTRIBUTED; with TRAIN_GPUS: one per listed GPU
: "${TRAIN_GPUS:=}"             # CUDA_VISIBLE_DEVICES of the training stages (e.g. 0,1,2,3,4,5,6); empty = all
: "${QUANTIZATION:=none}"       # none | 4bit: QLoRA base for both training stages (NF4, double quantization)
: "${TRL_VLLM:=colocate}"       # colocate | server: TRL's generation in each trainer, or `trl vllm-serve`
: "${TRL_VLLM_GPUS:=}"          # CUDA_VISIBLE_DEVICES of `trl vllm-serve` (e.g. 7), GPUs the trainers do not use
: "${TRL_VLLM_PORT:=8000}"      # port of that server
: "${DATA_PARALLEL:=1}"         # --data-parallel of steps 2-3: shards, one process and engine per visible GPU
: "${MITIGATION:=none}"         # none | adpo | restrain: label-decay mitigation of the Solver (train_solver --help)
: "${RESTRAIN_KAPPA:=0.5}"      # restrain: questions whose label has vote share p below this are penalized
: "${RESTRAIN_PENALTY:=0.5}"    # restrain: the negative advantage of each of their completions
: "${PROBE:=}"                  # gold probe sets of step 3, space-separated (openai/gsm8k:main:train ...); empty = off
: "${PROBE_SIZE:=200}"          # rows per probe set, the same fixed-seed sample in every iteration

case "$DISTRIBUTED" in none | ddp | zero3 | fsdp2) ;; *) echo "DISTRIBUTED=$DISTRIBUTED: use none, ddp, zero3 or fsdp2" >&2; exit 2 ;; esac
case "$MITIGATION" in none | adpo | restrain) ;; *) echo "MITIGATION=$MITIGATION: use none, adpo or restrain" >&2; exit 2 ;; esac
case "$TRL_VLLM" in colocate | server) ;; *) echo "TRL_VLLM=$TRL_VLLM: use colocate or server" >&2; exit 2 ;; esac

# --- Derived names, in one place -------------------------------------------------------------------
RUN_DIR="$RUNS_DIR/$RUN"      # the run's log, stage times and report (and its artifacts, unless HUB_ONLY=1)
mkdir -p "$RUN_DIR"
LOG="$RUN_DIR/run.log"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$LOG" >&2; }
ARTIFACTS="$RUN_DIR"          # where stages write iterNN/<stage>
HUB_CHALLENGER="" HUB_SOLVER="" HUB_QUESTIONS="" REPORT_RUN="$RUN_DIR"
if [[ -n "$HUB_NAMESPACE" ]]; then
  HUB_CHALLENGER="$HUB_NAMESPACE/$RUN-challenger"  # branch iterNN: the Challenger adapter of iteration NN
  HUB_SOLVER="$HUB_NAMESPACE/$RUN-solver"          # branch iterNN: the Solver adapter, its evaluation in evaluate/
  HUB_QUESTIONS="$HUB_NAMESPACE/$RUN-questions"    # configs iterNN-raw, iterNN-labeled, iterNN-train
  REPORT_RUN="hf://$HUB_NAMESPACE/$RUN"
elif [[ "$HUB_ONLY" == 1 ]]; then
  echo "HUB_ONLY=1 needs HUB_NAMESPACE" >&2; exit 2
fi
PROBE_FLAGS=(); for spec in $PROBE; do PROBE_FLAGS+=(--probe "$spec"); done
iter_dir() { printf '%s/iter%02d' "$ARTIFACTS" "$1"; }
# An input artifact of iteration $2 ($1: challenger | solver | raw | train): its Hub reference when
# HUB_NAMESPACE is set (so every card names its parents by commit), else the local folder.
input_of() {
  local kk; kk=$(printf 'iter%02d' "$2")
  if [[ -z "$HUB_NAMESPACE" ]]; then
    case $1 in raw) echo "$(iter_dir "$2")/questions" ;; train) echo "$(iter_dir "$2")/labeled" ;; *) echo "$(iter_dir "$2")/$1" ;; esac
  else
    case $1 in raw | train) echo "hf://datasets/$HUB_QUESTIONS/$kk-$1" ;; challenger) echo "hf://$HUB_CHALLENGER@$kk" ;; solver) echo "hf://$HUB_SOLVER@$kk" ;; esac
  fi
}
# run one stage; when it did work (its --output was not complete before and is now), record its wall time
stage() {
  local name=$1; shift
  local output="" prev="" t0=$SECONDS
  for arg in "$@"; do [[ "$prev" == --output ]] && output=$arg; prev=$arg; done
  local was_done=0; [[ -f "$output/DONE" ]] && was_done=1
  log "$name"
  "$@"
  (( was_done )) || [[ ! -f "$output/DONE" ]] || printf '%s\t%s\t%s\n' "$k" "$name" "$((SECONDS - t0))" >> "$RUN_DIR/stage_times.tsv"
}
if [[ "$BASE_MODEL" == micro ]]; then
  log "micro-world base: build or find in the cache"
  BASE_MODEL=$($PYTHON stages/build_base.py --world "$WORLD" --dtype "$DTYPE")
  if [[ "$WORLD" != default ]]; then : "${EVAL_TASKS:=rzero_micro,rzero_micro_val}"; fi  # choices: on validation
  : "${EVAL_TASKS:=rzero_micro}"
fi
: "${EVAL_TASKS:=rzero_all}"
log "run $RUN | base $BASE_MODEL | iterations $FIRST_ITERATION..$((FIRST_ITERATION + ITERATIONS - 1)) | challenger $CHALLENGER | labels $LABEL_SOURCE | mitigation $MITIGATION | challenger cap $CHALLENGER_MAX_NEW_TOKENS tokens | training $DISTRIBUTED x $NUM_PROCESSES, $QUANTIZATION, TRL vLLM $TRL_VLLM | generation x $DATA_PARALLEL"

solver_pid=""
stop_solver_server() {
  if [[ -n "$solver_pid" ]]; then
    kill "$solver_pid" 2>/dev/null || true; wait "$solver_pid" 2>/dev/null || true
    log "Solver server: PID $solver_pid stopped"; solver_pid=""
  fi
}
SCRATCH=""
cleanup() { stop_solver_server; stop_trl_server; if [[ -n "$SCRATCH" ]]; then rm -rf "$SCRATCH"; fi; }
trap cleanup EXIT
if [[ "$HUB_ONLY" == 1 ]]; then SCRATCH=$(mktemp -d); ARTIFACTS="$SCRATCH"; fi
wait_healthy() {  # $1 name, $2 PID, $3 health URL, $4 its log in the run folder: exit if it dies or takes 600 s
  local t0=$SECONDS
  until curl -sf "$3" > /dev/null; do
    kill -0 "$2" 2>/dev/null || { log "$1 died; see $RUN_DIR/$4"; exit 1; }
    (( SECONDS - t0 < 600 )) || { log "$1 not healthy after 600 s"; exit 1; }
    sleep 2
  done
}
start_solver_server() {  # $1: Solver adapter of k-1 or empty; sets SOLVER_FLAGS
  local lora=() adapter=$1 t0=$SECONDS
  if [[ "$adapter" == hf://* ]]; then adapter=$($PYTHON stages/hub.py "$adapter"); fi  # vLLM loads a folder
  if [[ -n "$adapter" ]]; then  # vLLM takes max_lora_rank in 1, 8, 16, 32, 64, 128, ...: the adapter's r, rounded up
    local rank; rank=$($PYTHON stages/generation.py max-lora-rank "$adapter")
    lora=(--enable-lora --max-lora-rank "$rank" --lora-modules "adapter=$adapter")
  fi
  # its share of the card and context length: the Challenger stage's memory plan (stages/gpu_memory.py)
  local memory; memory=$($PYTHON stages/gpu_memory.py "$BASE_MODEL" --serve-flags --max-new-tokens "$MAX_NEW_TOKENS" \
    --solver-max-new-tokens "$MAX_NEW_TOKENS" --prompts-per-step "$CHALLENGER_PROMPTS_PER_STEP" \
    --micro-batch-size "$MICRO_BATCH_SIZE" --lora-rank "$LORA_RANK")
  # shellcheck disable=SC2086  # $memory is two flag pairs
  vllm serve "$BASE_MODEL" --port "$SOLVER_PORT" --seed "$SEED" $memory "${lora[@]}" >> "$RUN_DIR/solver_server.log" 2>&1 &
  solver_pid=$!
  wait_healthy "Solver server" "$solver_pid" "http://127.0.0.1:$SOLVER_PORT/health" solver_server.log
  log "Solver server: PID $solver_pid, port $SOLVER_PORT, healthy after $((SECONDS - t0)) s | ${lora[*]:-no adapter (the base)}"
  SOLVER_FLAGS=(--backend server --server-url "http://127.0.0.1:$SOLVER_PORT/v1")
}

if [[ -n "$TRAIN_GPUS" ]]; then IFS=, read -ra gpus <<< "$TRAIN_GPUS"; NUM_PROCESSES=${#gpus[@]}; fi
TRAIN=($PYTHON)  # how the training stages start: alone, or one process per GPU under accelerate
if [[ "$DISTRIBUTED" != none ]]; then
  TRAIN=($PYTHON -m accelerate.commands.launch --config_file "stages/accelerate/$DISTRIBUTED.yaml"
         --num_processes "$NUM_PROCESSES" --main_process_port "${MAIN_PROCESS_PORT:-29500}")
fi
if [[ -n "$TRAIN_GPUS" ]]; then TRAIN=(env CUDA_VISIBLE_DEVICES="$TRAIN_GPUS" "${TRAIN[@]}"); fi
TRAIN_FLAGS=(--quantization "$QUANTIZATION" --vllm-mode "$TRL_VLLM")
if [[ "$TRL_VLLM" == server ]]; then TRAIN_FLAGS+=(--vllm-server-url "http://127.0.0.1:$TRL_VLLM_PORT"); fi
trl_pid=""
stop_trl_server() {
  if [[ -n "$trl_pid" ]]; then
    kill "$trl_pid" 2>/dev/null || true; wait "$trl_pid" 2>/dev/null || true
    log "TRL vLLM server: PID $trl_pid stopped"; trl_pid=""
  fi
}
start_trl_server() {  # TRL's generation server for one training stage; the trainer sends it its weights
  [[ "$TRL_VLLM" == server ]] || return 0
  local t0=$SECONDS
  CUDA_VISIBLE_DEVICES="$TRL_VLLM_GPUS" trl vllm-serve --model "$BASE_MODEL" --port "$TRL_VLLM_PORT" \
    >> "$RUN_DIR/trl_server.log" 2>&1 &
  trl_pid=$!
  wait_healthy "TRL vLLM server" "$trl_pid" "http://127.0.0.1:$TRL_VLLM_PORT/health" trl_server.log
  log "TRL vLLM server: PID $trl_pid, port $TRL_VLLM_PORT, GPUs ${TRL_VLLM_GPUS:-all}, healthy after $((SECONDS - t0)) s"
}

k=0
stage evaluate $PYTHON stages/evaluate.py \
  --base-model "$BASE_MODEL" \
  --tasks "$EVAL_TASKS" \
  --max-new-tokens "$EVAL_MAX_NEW_TOKENS" \
  --output "$(iter_dir 0)/evaluate" \
  --hub-repo "$HUB_SOLVER"

for (( k = FIRST_ITERATION; k < FIRST_ITERATION + ITERATIONS; k++ )); do
  here=$(iter_dir "$k")
  prev_solver=""; prev_challenger=""
  if (( k > 1 )); then prev_solver=$(input_of solver $((k - 1))); prev_challenger=$(input_of challenger $((k - 1))); fi
  log "=== iteration $k ==="

  # 1. Challenger: questions that split the frozen Solver of k-1 evenly
  challenger=""
  if [[ "$CHALLENGER" == trained ]]; then
    SOLVER_FLAGS=()
    if [[ "$SOLVER_SERVER" == 1 && ! -f "$here/challenger/DONE" ]]; then start_solver_server "$prev_solver"; fi
    if [[ ! -f "$here/challenger/DONE" ]]; then start_trl_server; fi
    stage challenger "${TRAIN[@]}" stages/train_challenger.py \
      --base-model "$BASE_MODEL" \
      --iteration "$k" \
      --challenger-adapter "$prev_challenger" \
      --solver-adapter "$prev_solver" \
      --output "$here/challenger" \
      --m "$M" \
      --tau "$TAU" \
      --steps "$CHALLENGER_STEPS" \
      --prompts-per-step "$CHALLENGER_PROMPTS_PER_STEP" \
      --learning-rate "$LR" \
      --lora-rank "$LORA_RANK" \
      --lora-alpha $((2 * LORA_RANK)) \
      --micro-batch-size "$MICRO_BATCH_SIZE" \
      --max-new-tokens "$CHALLENGER_MAX_NEW_TOKENS" \
      --solver-max-new-tokens "$MAX_NEW_TOKENS" \
      --seed "$SEED" \
      --hub-repo "$HUB_CHALLENGER" \
      "${TRAIN_FLAGS[@]}" \
      "${SOLVER_FLAGS[@]}"
    stop_trl_server
    stop_solver_server
    challenger=$(input_of challenger "$k")
  fi

  # 2. N candidate questions from the Challenger of k (or the untrained base: the control)
  stage questions $PYTHON stages/generate_questions.py \
    --base-model "$BASE_MODEL" \
    --iteration "$k" \
    --challenger-adapter "$challenger" \
    --output "$here/questions" \
    --num-samples "$N" \
    --max-new-tokens "$CHALLENGER_MAX_NEW_TOKENS" \
    --seed "$SEED" \
    --data-parallel "$DATA_PARALLEL" \
    --hub-repo "$HUB_QUESTIONS"

  # 3-4. majority-vote pseudo-labels from the Solver of k-1, band filter |p - 1/2| <= delta
  stage labeled $PYTHON stages/label_questions.py \
    --base-model "$BASE_MODEL" \
    --iteration "$k" \
    --questions "$(input_of raw "$k")" \
    --solver-adapter "$prev_solver" \
    --output "$here/labeled" \
    --m "$M" \
    --delta "$DELTA" \
    --label-source "$LABEL_SOURCE" \
    --max-new-tokens "$MAX_NEW_TOKENS" \
    --seed "$SEED" \
    --data-parallel "$DATA_PARALLEL" \
    --probe-size "$PROBE_SIZE" \
    --hub-repo "$HUB_QUESTIONS" \
    "${PROBE_FLAGS[@]}"

  # 5. the Solver of k learns the kept questions' pseudo-labels
  if [[ ! -f "$here/solver/DONE" ]]; then start_trl_server; fi
  stage solver "${TRAIN[@]}" stages/train_solver.py \
    --base-model "$BASE_MODEL" \
    --iteration "$k" \
    --train "$(input_of train "$k")" \
    --solver-adapter "$prev_solver" \
    --output "$here/solver" \
    --steps "$SOLVER_STEPS" \
    --prompts-per-step "$SOLVER_PROMPTS_PER_STEP" \
    --learning-rate "$LR" \
    --lora-rank "$LORA_RANK" \
    --lora-alpha $((2 * LORA_RANK)) \
    --micro-batch-size "$MICRO_BATCH_SIZE" \
    --max-new-tokens "$MAX_NEW_TOKENS" \
    --seed "$SEED" \
    --mitigation "$MITIGATION" \
    --restrain-kappa "$RESTRAIN_KAPPA" \
    --restrain-penalty "$RESTRAIN_PENALTY" \
    --hub-repo "$HUB_SOLVER" \
    "${TRAIN_FLAGS[@]}"
  stop_trl_server

  # 6. evaluate the new Solver; one-screen summary and the run's report
  stage evaluate $PYTHON stages/evaluate.py \
    --base-model "$BASE_MODEL" \
    --solver-adapter "$(input_of solver "$k")" \
    --iteration "$k" \
    --tasks "$EVAL_TASKS" \
    --max-new-tokens "$EVAL_MAX_NEW_TOKENS" \
    --output "$here/evaluate" \
    --hub-repo "$HUB_SOLVER"
  $PYTHON stages/report.py --run "$REPORT_RUN" --output "$RUN_DIR/report" | tee -a "$LOG"
done
log "run $RUN complete: $RUN_DIR/report/report.md"
