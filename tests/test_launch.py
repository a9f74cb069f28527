"""The launchers: every script parses (`bash -n`), and each one's `--dry-run` prints the commands
it would run; `tpu_pod.sh` is run for real against a fake `gcloud` that runs the hosts' commands
on this machine, so the detached job, its pid file, `status` and `stop` are exercised."""

from __future__ import annotations

import os
import pathlib
import shlex
import signal
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).parent.parent
SCRIPTS = sorted(ROOT.glob("launch/*.sh")) + [ROOT / "tests" / "run.sh", ROOT / ".ci" / "run"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_script_parses(script):
  subprocess.run(["bash", "-n", script], check=True)


def _launch(*args, env=None):
  return subprocess.run(["bash", *args], cwd=ROOT, env={**os.environ, **(env or {})},
                        capture_output=True, text=True, timeout=60)


def test_gpu_dry_run_puts_the_users_overrides_after_the_gpu_defaults():
  done = _launch("launch/gpu.sh", "--dry-run", "/data/run", "--config.total_steps=5",
                 env={"MUPPET_CONFIG": "configs/prefinetune_bart.py"})
  assert done.returncode == 0, done.stderr
  assert done.stdout.splitlines() == [
      "mkdir -p /data/run/logs",
      ".venv/bin/python -u -m muppet_jax.train --config=configs/prefinetune_bart.py "
      "--workdir=/data/run --config.model.attention_impl=dot_product "
      "--config.model.attention_dropout=0 --config.total_steps=5"]


def test_slurm_dry_run_starts_one_multihost_trainer_per_task_with_its_own_log():
  done = _launch("launch/slurm.sh", "--dry-run", "/shared/run", "--config.seed=3",
                 env={"SLURM_JOB_ID": "77"})
  assert done.returncode == 0, done.stderr
  mkdir, srun = done.stdout.splitlines()
  assert mkdir == "mkdir -p /shared/run/logs"
  assert shlex.split(srun) == [
      "srun", "--kill-on-bad-exit=1", "--output=/shared/run/logs/77-task%t.log",
      ".venv/bin/python", "-u", "-m", "muppet_jax.train", "--multihost",
      "--config=configs/prefinetune.py", "--workdir=/shared/run",
      "--config.model.attention_impl=dot_product", "--config.model.attention_dropout=0",
      "--config.seed=3"]


@pytest.mark.parametrize("script", ["launch/gpu.sh", "launch/slurm.sh", "launch/tpu_pod.sh"])
def test_no_arguments_print_the_usage(script):
  done = _launch(script)
  assert done.returncode == 2 and "Usage:" in done.stderr


def test_tpu_dry_run_creates_a_spot_slice_then_starts_every_host():
  done = _launch("launch/tpu_pod.sh", "--dry-run", "run", "pod", "zone-a", "v4-64",
                 "gs://bucket/run", "--spot", "--config.seed=3",
                 env={"MUPPET_REPO": "https://example.com/muppet_jax.git",
                      "TFDS_DATA_DIR": "gs://bucket/tfds"})
  assert done.returncode == 0, done.stderr
  create, ssh = done.stdout.splitlines()
  assert shlex.split(create) == ["gcloud", "compute", "tpus", "queued-resources", "create", "pod",
                    "--node-id=pod", "--zone=zone-a", "--accelerator-type=v4-64",
                    "--runtime-version=tpu-ubuntu2204-base", "--spot"]
  # The hosts' script is one $'...' word (bash's quoting, which shlex doesn't read).
  assert ssh.startswith("gcloud compute tpus tpu-vm ssh pod --zone=zone-a --worker=all $'")
  for part in ("git clone https://example.com/muppet_jax.git", "TFDS_DATA_DIR=gs://bucket/tfds",
               "--multihost", "--workdir=gs://bucket/run", "--config.seed=3"):
    assert part in ssh.replace("\\ ", " "), part


FAKE_GCLOUD = """#!/usr/bin/env bash
# A TPU slice of one host: this machine. Runs the hosts' commands here, in $HOME.
echo "$*" >> "$HOME/gcloud.log"
case "$*" in
  *"queued-resources describe"*) echo ACTIVE ;;
  *"tpu-vm ssh"*) for a in "$@"; do case "$a" in --command=*) c="${a#--command=}" ;; esac; done
                  cd "$HOME" && bash -c "$c" ;;
esac
"""
FAKE_TRAINER = """#!/usr/bin/env bash
echo "trainer: $*"
trap 'echo "SIGTERM: saved step 7; rerun the same command to resume"; exit 0' TERM
while true; do sleep 0.1; done
"""


def _executable(path: pathlib.Path, text: str) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(text)
  path.chmod(0o755)


def test_tpu_job_runs_detached_and_answers_status_and_stop(tmp_path):
  _executable(tmp_path / "bin" / "gcloud", FAKE_GCLOUD)
  _executable(tmp_path / "muppet_jax" / ".venv" / "bin" / "python", FAKE_TRAINER)
  env = {"HOME": str(tmp_path), "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}",
         "MUPPET_REPO": "https://example.com/muppet_jax.git", "TFDS_DATA_DIR": "gs://b/tfds"}
  log, pids = tmp_path / "muppet_logs" / "train.log", tmp_path / "muppet_logs"
  try:
    started = _launch("launch/tpu_pod.sh", "start", "pod", "z", "gs://b/run",
                      "--config.total_steps=5", env=env)
    assert started.returncode == 0, started.stderr
    for _ in range(100):
      if log.exists() and "trainer:" in log.read_text():
        break
      time.sleep(0.1)
    assert log.read_text().splitlines()[0] == (
        "trainer: -u -m muppet_jax.train --multihost --config=configs/prefinetune.py "
        "--workdir=gs://b/run --config.total_steps=5")
    assert "running" in _launch("launch/tpu_pod.sh", "status", "pod", "z", env=env).stdout
    again = _launch("launch/tpu_pod.sh", "start", "pod", "z", "gs://b/run", env=env)
    assert "already running" in again.stdout
    assert _launch("launch/tpu_pod.sh", "stop", "pod", "z", env=env).returncode == 0
    for _ in range(100):
      if "SIGTERM: saved step 7" in log.read_text():
        break
      time.sleep(0.1)
    assert "SIGTERM: saved step 7" in log.read_text()
    time.sleep(0.3)
    assert "not running" in _launch("launch/tpu_pod.sh", "status", "pod", "z", env=env).stdout
  finally:
    for name in ("train.pid", "copier.pid"):
      if (pids / name).exists():
        try:
          os.kill(int((pids / name).read_text()), signal.SIGKILL)
        except ProcessLookupError:
          pass
