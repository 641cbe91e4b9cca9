#!/usr/bin/env bash
# Placeholder demo (replaced as the pipeline grows): prepare -> score -> select -> order -> stats.
set -euo pipefail
echo "demo: not yet implemented" >&2
