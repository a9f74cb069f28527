#!/usr/bin/env bash
# Pre-finetunes on one GPU host: one process drives all its GPUs (the mesh spans them), with
# cuDNN flash attention. The log goes to WORKDIR/logs/host0.log (./logs/ for a gs:// workdir)
# as well as the terminal; rerun the same command to resume from the last checkpoint.
# Usage: bash launch/gpu.sh [--dry-run] WORKDIR [--config.KEY=VALUE ...]
#   e.g. MUPPET_CONFIG=configs/prefinetune_bart.py bash launch/gpu.sh /data/runs/bart
# Needs: `bash launch/setup.sh` and `.venv/bin/pip install "jax[cuda12]==0.10.2"` first.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh
[ $# -ge 1 ] || usage
workdir="$1"; shift
logs=$(logs_of "$workdir")
run mkdir -p "$logs"
# Later --config flags win, so the user's overrides come after the GPU defaults.
command=(.venv/bin/python -u -m muppet_jax.train --config="$config" --workdir="$workdir"
         --config.model.attention_impl=dot_product --config.model.attention_dropout=0 "$@")
if [ "$DRY_RUN" = 1 ]; then
  run "${command[@]}"
else
  "${command[@]}" 2>&1 | tee -a "$logs/host0.log"
fi
