#!/usr/bin/env bash
#SBATCH --job-name=muppet
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-task=1
#SBATCH --cpus-per-task=12
#SBATCH --time=24:00:00
#SBATCH --requeue
#SBATCH --signal=TERM@300
#SBATCH --open-mode=append
#SBATCH --output=muppet-%j.out
# Pre-finetunes on a SLURM GPU cluster: one JAX process per GPU (or, with
# `--ntasks-per-node=1 --gpus-per-node=8`, one per node driving all its GPUs);
# `--multihost` makes jax.distributed.initialize() find its peers in SLURM's environment.
# Usage: sbatch [--nodes=N ...] launch/slurm.sh WORKDIR [--config.KEY=VALUE ...]
#        bash launch/slurm.sh --dry-run WORKDIR [...]   (prints the srun command)
#   e.g. MUPPET_CONFIG=configs/prefinetune_bart.py sbatch --nodes=4 launch/slurm.sh /shared/runs/bart
# WORKDIR must be on a file system every node sees (or gs://). Each task logs to
# WORKDIR/logs/JOB-taskT.log. SLURM sends SIGTERM 5 minutes before the time limit, and on
# preemption: every process saves the same step and exits; the job then requeues itself (or
# SLURM requeues it) and the rerun resumes from that checkpoint.
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
source launch/common.sh
[ $# -ge 1 ] || usage
workdir="$1"; shift
job="${SLURM_JOB_ID:-JOB}"
logs=$(logs_of "$workdir")
run mkdir -p "$logs"
run srun --kill-on-bad-exit=1 --output="$logs/$job-task%t.log" \
  .venv/bin/python -u -m muppet_jax.train --multihost --config="$config" --workdir="$workdir" \
  --config.model.attention_impl=dot_product --config.model.attention_dropout=0 "$@"
# Stopped by SIGTERM before the last step (time limit, preemption): run the rest as a new job.
if [ "$DRY_RUN" = 0 ] && grep -qs "SIGTERM: saved step" "$logs/$job-task0.log"; then
  scontrol requeue "$job"
fi
