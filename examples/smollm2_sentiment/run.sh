#!/usr/bin/env bash
# SmolLM2-135M-Instruct, offline: sample an offline dataset, score it, train a_lol (LoRA) and nll, evaluate.
# Usage: bash examples/smollm2_sentiment/run.sh [OUT_DIR]   (needs `make smollm2` once)
set -euo pipefail
cd "$(dirname "$0")/../.."
E=examples/smollm2_sentiment
OUT=${1:-smollm2-example}
L=.venv/bin/lolkit
mkdir -p "$OUT"
t0=$(date +%s)
# 1. four sampled answers per training prompt from the untouched model
[ -f "$OUT/samples.jsonl" ] || $L generate --model smollm2 --data $E/prompts_train.jsonl --output "$OUT/samples.jsonl" \
   --num-samples 4 --max-new-tokens 48 --temperature 1.0 --seed 0 -q
# 2. score them offline (VADER sentiment + length target)
$L reward --config $E/reward.yaml --input "$OUT/samples.jsonl" --output "$OUT/scored.jsonl" -q
common=(--model smollm2 --lora --data "$OUT/scored.jsonl" --val-data $E/prompts_val.jsonl --reward $E/reward.yaml
        --max-steps 32 --batch-size 8 --lr 1e-3 --seed 0 --save-every 0 --quiet
        --set data.max_prompt_len=64 --set data.max_response_len=64 --set eval.max_new_tokens=48
        --set eval.batch_size=16 --set eval_prompts=8)
# 3. train a_lol and nll on the same data (LoRA r=16 over the frozen base)
for algo in a_lol nll; do
  [ -d "$OUT/runs/$algo/final" ] || $L train --algo $algo --output-dir "$OUT/runs/$algo" --overwrite "${common[@]}"
done
# 4. evaluate both and the untouched model on held-out prompts (greedy)
for run in a_lol nll; do
  $L eval --model "$OUT/runs/$run" --data $E/prompts_test.jsonl --reward $E/reward.yaml --max-new-tokens 48 -q --overwrite
done
$L eval --model smollm2 --data $E/prompts_test.jsonl --reward $E/reward.yaml --max-new-tokens 48 \
   --output-dir "$OUT/runs/base/eval" -q --overwrite
$L aggregate "$OUT/runs" --output-dir "$OUT"
echo "total $(( $(date +%s) - t0 )) s"
