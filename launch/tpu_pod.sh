#!/usr/bin/env bash
# Pre-finetunes on a TPU VM pod slice: the same command on every host (JAX finds its peers by
# itself; each host reads its own shard of the data), started detached so that it outlives the
# ssh session, each host's log copied to WORKDIR/logs/HOST.log every minute.
#
# Usage: bash launch/tpu_pod.sh [--dry-run] COMMAND TPU ZONE [ARGS]
#   create TPU ZONE TYPE [--spot|--reserved]   ask for the slice as a queued resource
#   start  TPU ZONE WORKDIR [--config.KEY=VALUE ...]   install on every host, start the job
#   run    TPU ZONE TYPE WORKDIR [--spot|--reserved] [--config.KEY=VALUE ...]
#          create (if needed) and start, then watch: when the slice is preempted, delete it,
#          create it again and start again (the job resumes from its last checkpoint), until
#          the job has finished
#   status TPU ZONE          the slice's state and whether the job runs on each host
#   logs   TPU ZONE          the end of every host's log
#   stop   TPU ZONE          SIGTERM to the job on every host (it saves a checkpoint and exits)
#   delete TPU ZONE          delete the slice and its queued resource
#   e.g. bash launch/tpu_pod.sh run my-v4-64 us-central2-b v4-64 gs://my-bucket/muppet_large --spot
# Needs: gcloud; MUPPET_REPO (a git URL of this repository the hosts can clone), TFDS_DATA_DIR (a
# bucket with the prepared TFDS data, e.g. gs://my-bucket/tensorflow_datasets) or a token cache
# (--config.data.cache_dir=gs://...). MUPPET_CONFIG picks the config (default
# configs/prefinetune.py); TPU_RUNTIME the software version (default tpu-ubuntu2204-base).
# --dry-run prints the gcloud commands instead of running them.
set -euo pipefail
cd "$(dirname "$0")/.."
source launch/common.sh
[ $# -ge 3 ] || usage
command="$1"; tpu="$2"; zone="$3"; shift 3
runtime="${TPU_RUNTIME:-tpu-ubuntu2204-base}"
LOGS='$HOME/muppet_logs'  # On each host.
# On a host: whether the process in pid file $1 runs (a zombie, exited but not reaped, doesn't).
ALIVE='alive() { ps -o stat= -p "$(cat "$1" 2>/dev/null)" 2>/dev/null | grep -q "^[^Z]"; }'

on_all_hosts() {
  run gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="$1"
}

create() {  # TYPE [--spot|--reserved]
  local type="$1"; shift
  run gcloud compute tpus queued-resources create "$tpu" --node-id="$tpu" --zone="$zone" \
    --accelerator-type="$type" --runtime-version="$runtime" "$@"
}

state() {
  run gcloud compute tpus queued-resources describe "$tpu" --zone="$zone" \
    --format='value(state.state)' 2>/dev/null || echo MISSING
}

start() {  # WORKDIR [overrides]
  local workdir="$1"; shift
  local repo="${MUPPET_REPO:?set MUPPET_REPO to a git URL of muppet_jax}"
  local train
  train=$(printf '%q ' env TFDS_DATA_DIR="${TFDS_DATA_DIR:-}" .venv/bin/python -u -m \
    muppet_jax.train --multihost --config="$config" --workdir="$workdir" "$@")
  # setsid + nohup: the job and its log copier outlive the ssh session; `exec` makes the pid
  # in train.pid the trainer's own, for `status` and `stop`.
  on_all_hosts "set -e
[ -d muppet_jax ] || git clone $(printf '%q' "$repo") muppet_jax
cd muppet_jax
[ -x .venv/bin/python ] || { bash launch/setup.sh && .venv/bin/pip install --quiet 'jax[tpu]==0.10.2'; }
mkdir -p $LOGS
$ALIVE
if alive $LOGS/train.pid; then echo \"\$(hostname): already running\"; exit 0; fi
setsid nohup bash -c $(printf '%q' "exec $train >> $LOGS/train.log 2>&1") > /dev/null 2>&1 &
echo \$! > $LOGS/train.pid
alive $LOGS/copier.pid ||
  { setsid nohup bash -c $(printf '%q' "while sleep 60; do gcloud storage cp $LOGS/train.log $(printf '%q' "$workdir")/logs/\$(hostname).log -q; done") > /dev/null 2>&1 & echo \$! > $LOGS/copier.pid; }"
}

finished() {  # WORKDIR: host 0's log says the run ended.
  gcloud storage cat "$1/logs/*.log" 2>/dev/null | grep -q "^done at step"
}

case "$command" in
  create) [ $# -ge 1 ] || usage; create "$@" ;;
  start) [ $# -ge 1 ] || usage; start "$@" ;;
  run)
    [ $# -ge 2 ] || usage
    type="$1"; workdir="$2"; shift 2
    capacity=()
    case "${1:-}" in --spot|--reserved) capacity=("$1"); shift ;; esac
    if [ "$DRY_RUN" = 1 ]; then  # One pass of the loop below.
      create "$type" "${capacity[@]}"
      start "$workdir" "$@"
      exit 0
    fi
    until finished "$workdir"; do
      case "$(state)" in
        ACTIVE) start "$workdir" "$@"
                while [ "$(state)" = ACTIVE ] && ! finished "$workdir"; do sleep 300; done ;;
        MISSING) create "$type" "${capacity[@]}" ;;
        SUSPENDED|FAILED) echo "slice $tpu was preempted: creating it again" >&2
                run gcloud compute tpus queued-resources delete "$tpu" --zone="$zone" --force --quiet
                create "$type" "${capacity[@]}" ;;
        *) sleep 60 ;;  # Provisioning, or waiting for capacity.
      esac
    done ;;
  status)
    state
    on_all_hosts "$ALIVE; alive $LOGS/train.pid && echo \"\$(hostname): running\" || echo \"\$(hostname): not running\"" ;;
  logs) on_all_hosts "echo \"== \$(hostname)\"; tail -n 20 $LOGS/train.log" ;;
  stop) on_all_hosts "kill -TERM \$(cat $LOGS/train.pid 2>/dev/null) 2>/dev/null || true" ;;
  delete) run gcloud compute tpus queued-resources delete "$tpu" --zone="$zone" --force --quiet ;;
  *) usage ;;
esac
