#!/bin/bash
# Fit once, transform in a job array, finish: three Slurm jobs chained by dependencies.
#
#   scripts/slurm/submit.sh IN OUT FIT RANKS METHOD [method options...]
#   scripts/slurm/submit.sh /data/pool-emb /data/scored /data/gotd-fit 64 gotd --target /data/target-emb
#
# Paths must be on a filesystem every node sees. RUN_ARGS (environment) goes to each rank,
# SBATCH_EXTRA to every sbatch call (e.g. "--partition=gpu --account=me").
set -euo pipefail
if [ $# -lt 5 ]; then
    sed -n '2,9p' "$0" >&2
    exit 2
fi
IN=$1 OUT=$2 FIT=$3 RANKS=$4 METHOD=$5
shift 5
HERE=$(cd "$(dirname "$0")" && pwd)
export IN OUT FIT METHOD ARGS="$*" RUN_ARGS="${RUN_ARGS:-}"
# shellcheck disable=SC2086
fit=$(sbatch --parsable --export=ALL ${SBATCH_EXTRA:-} "$HERE/fit.sbatch")
# shellcheck disable=SC2086
array=$(sbatch --parsable --export=ALL ${SBATCH_EXTRA:-} --dependency="afterok:$fit" --array="0-$((RANKS - 1))" "$HERE/transform.sbatch")
# shellcheck disable=SC2086
finish=$(sbatch --parsable --export=ALL ${SBATCH_EXTRA:-} --dependency="afterok:$array" "$HERE/finish.sbatch")
echo "fit $fit -> array $array ($RANKS ranks) -> finish $finish" >&2
echo "$OUT"
