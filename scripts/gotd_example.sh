#!/usr/bin/env bash
# GOT-D and DSIR on a small mixed-domain pool of real text, against a SciQ target set.
# Prints the per-domain composition of GOT-D's, DSIR's and a random selection of the same size.
#
#   bash scripts/gotd_example.sh [WORKDIR] [PER_DOMAIN] [TARGET_ROWS] [KEEP]
set -euo pipefail
WORK=${1:-data/gotd-example}
PER=${2:-250}
TARGET=${3:-200}
KEEP=${4:-250}
DELT=${DELT:-delt}
HERE=$(cd "$(dirname "$0")/.." && pwd)

mkdir -p "$WORK"
PYTHONPATH="$HERE/tests:${PYTHONPATH:-}" python -c "
import sys; from pathlib import Path; from gotd_corpus import write_pool
write_pool(Path(sys.argv[1]), int(sys.argv[2]), shards=4, target=int(sys.argv[3]), limit=1000)" "$WORK" "$PER" "$TARGET"
$DELT embed "$WORK/pool" -o "$WORK/pool-emb" --overwrite
$DELT embed "$WORK/target" -o "$WORK/target-emb" --overwrite
$DELT score "$WORK/pool-emb" -o "$WORK/gotd" --method gotd --target "$WORK/target-emb" --overwrite
$DELT score "$WORK/pool-emb" -o "$WORK/dsir" --method dsir --target "$WORK/target" --overwrite
$DELT select "$WORK/gotd" -o "$WORK/sel-gotd" --by gotd --lowest --top-k "$KEEP" --overwrite
$DELT select "$WORK/dsir" -o "$WORK/sel-dsir" --by dsir_gumbel --top-k "$KEEP" --overwrite
$DELT select "$WORK/gotd" -o "$WORK/sel-random" --random-r "$(python -c "print($KEEP / (4 * $PER))")" --seed 1 --overwrite
for sel in gotd dsir random; do
  echo "== $sel"
  $DELT stats "$WORK/sel-$sel" --group-by domain --json "$WORK/stats-$sel.json" >/dev/null 2>&1
  python -c "import json,sys; g=json.load(open(sys.argv[1]))['group_mix']; print(dict(zip(g['groups'], g['counts'])))" "$WORK/stats-$sel.json"
done
