#!/usr/bin/env bash
# Pre-finetunes on every host of a TPU VM pod slice: the same command runs on all hosts, JAX
# finds its peers by itself, and each host reads its own shard of the data.
# Usage: bash launch/tpu_pod.sh TPU_NAME ZONE WORKDIR [--config.KEY=VALUE ...]
#   e.g. bash launch/tpu_pod.sh my-v4-64 us-central2-b gs://my-bucket/muppet_large
# Needs: MUPPET_REPO (a git URL of this repository the TPU hosts can clone) and TFDS_DATA_DIR
# (a bucket with the prepared TFDS data, e.g. gs://my-bucket/tensorflow_datasets). MUPPET_CONFIG
# picks the config (default configs/prefinetune.py; e.g. configs/prefinetune_bart.py).
set -euo pipefail
tpu="$1"; zone="$2"; workdir="$3"; shift 3
repo="${MUPPET_REPO:?set MUPPET_REPO to a git URL of muppet_jax}"
data="${TFDS_DATA_DIR:?set TFDS_DATA_DIR to the bucket with the prepared TFDS data}"
config="${MUPPET_CONFIG:-configs/prefinetune.py}"
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command="
  set -e
  [ -d muppet_jax ] || git clone $repo muppet_jax
  cd muppet_jax && bash launch/setup.sh && .venv/bin/pip install --quiet 'jax[tpu]==0.10.2'
  TFDS_DATA_DIR=$data .venv/bin/python -m muppet_jax.train --multihost \
    --config=$config --workdir=$workdir $*
"
