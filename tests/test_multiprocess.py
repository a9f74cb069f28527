"""Training on a local CPU cluster: two JAX processes of two devices each (jax.distributed with a
localhost coordinator, gloo collectives), each running `tests/multiprocess_worker.py`.

They train like one 4-device process fed the same global batches (their local batches' rows in
process order), each from its own shard of the data; evaluation counts every validation example
once; a cluster's checkpoint resumes in one process and exports; SIGTERM to one process makes
both save the same step and exit cleanly. Run alone with `pytest -m multiprocess`.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from muppet_jax import export, pretrained

pytestmark = [pytest.mark.multiprocess, pytest.mark.slow]
ROOT = pathlib.Path(__file__).parent.parent
VALIDATION = {"demo_choice": 200, "demo_entailment": 300, "demo_sentiment": 200,
              "demo_similarity": 200, "demo_span": 200, "demo_topic": 200}


def _port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _worker(workdir, *args, process=0):
  command = [sys.executable, "-m", "tests.multiprocess_worker", f"--workdir={workdir}", *args]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  return subprocess.Popen(command, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT)


def _finish(processes, timeout=400) -> list[str]:
  logs = [p.communicate(timeout=timeout)[0] for p in processes]
  assert [p.returncode for p in processes] == [0] * len(processes), [g[-3000:] for g in logs]
  return logs


def _cluster(workdir, *args, wait=True):
  port = _port()
  processes = [_worker(workdir, "--devices=2", f"--process={i}", "--processes=2",
                       f"--port={port}", *args) for i in range(2)]
  return _finish(processes) if wait else processes


def _params(workdir, step=None):
  _, model = pretrained.from_checkpoint(pathlib.Path(workdir) / "checkpoints", step=step)
  return jax.tree.leaves(jax.device_get(model.params))


def _result(workdir, process=0):
  return json.loads((pathlib.Path(workdir) / f"worker_{process}.json").read_text())


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """One process of four devices, fed what the two processes of the cluster read."""
  workdir = tmp_path_factory.mktemp("reference")
  _finish([_worker(workdir, "--devices=4", "--mesh=data=2,fsdp=2", "--reference=2")])
  return workdir


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("cluster")
  _cluster(workdir, "--mesh=data=2,fsdp=2")
  return workdir


def _shards(workdir, process=0) -> dict[str, np.ndarray]:
  with np.load(pathlib.Path(workdir) / f"params_{process}.npz") as f:
    return dict(f)


def _index(key: str) -> tuple[slice, ...]:
  return tuple(slice(*map(int, s.split(":"))) for s in key.split("@")[1].split(",") if s)


def _assembled(shards: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Whole parameters from all of their shards."""
  shapes = {}
  for key in shards:
    stops = [s.stop for s in _index(key)]
    shapes[key.split("@")[0]] = np.maximum(shapes.get(key.split("@")[0], stops), stops)
  full = {path: np.zeros(shape.astype(int)) for path, shape in shapes.items()}
  for key, shard in shards.items():
    full[key.split("@")[0]][_index(key)] = shard
  return full


def _assert_trained_like(workdir, reference):
  for a, b in zip(_params(reference), _params(workdir), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # Every process holds these parameters, not only the replicas that the checkpoint took.
  full = _assembled(_shards(reference))
  for process in range(2):
    for key, shard in _shards(workdir, process).items():
      np.testing.assert_allclose(shard, full[key.split("@")[0]][_index(key)], rtol=1e-5,
                                 atol=1e-6, err_msg=f"process {process}: {key}")
  expected, metrics = _result(reference)["metrics"], _result(workdir)["metrics"]
  assert metrics.keys() == expected.keys()
  for key in expected:
    assert metrics[key] == pytest.approx(expected[key], abs=1e-5), key
  # Every validation example counted once, not once per process.
  assert {k.split("/")[1]: v for k, v in metrics.items() if k.endswith("/examples")} == VALIDATION


def test_two_processes_train_like_one_on_the_same_global_batches(cluster, reference):
  _assert_trained_like(cluster, reference)
  seen = [_result(cluster, i)["seen"] for i in range(2)]
  assert seen[0] and seen[1] and seen[0] != seen[1]  # Each process fed its own shard.


def test_an_fsdp_mesh_across_both_processes_trains_the_same(tmp_path, reference):
  _cluster(tmp_path, "--mesh=data=1,fsdp=4")
  _assert_trained_like(tmp_path, reference)


def test_a_cluster_checkpoint_resumes_in_one_process_and_exports(cluster, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(cluster, workdir)
  log = _finish([_worker(workdir, "--devices=4", "--mesh=data=2,fsdp=2", "--steps=12")])[0]
  assert "resumed from" in log and "another number of hosts" in log
  assert (workdir / "checkpoints" / "12").is_dir()
  # The cluster's last step, exported from this (one) process, is the model it trained.
  out = export.export(cluster / "checkpoints", tmp_path / "hf")
  assert (out / "model.safetensors").is_file()
  import safetensors.numpy
  tensors = safetensors.numpy.load_file(out / "model.safetensors")
  embeddings = [t for name, t in tensors.items() if name.endswith("word_embeddings.weight")][0]
  trained = [p for p in _params(cluster) if p.shape == embeddings.shape][0]
  np.testing.assert_array_equal(embeddings, trained)


def test_sigterm_to_one_process_stops_both_at_the_same_saved_step(cluster, tmp_path):
  """...and the restarted cluster ends where the uninterrupted one did, bit for bit."""
  processes = _cluster(tmp_path, "--mesh=data=2,fsdp=2", "--every=2", "--step-delay=0.5",
                       wait=False)
  deadline = time.time() + 300
  while not (tmp_path / "checkpoints" / "2").is_dir():
    assert all(p.poll() is None for p in processes) and time.time() < deadline
    time.sleep(0.1)
  processes[1].send_signal(signal.SIGTERM)
  logs = _finish(processes)
  saved = int(logs[0].split("SIGTERM: saved step ")[1].split(";")[0])
  assert 2 <= saved < 8 and (tmp_path / "checkpoints" / str(saved)).is_dir()
  assert sorted(p.name for p in (tmp_path / "input_state" / str(saved)).iterdir()) == [
      "process_0", "process_1"]
  logs = _cluster(tmp_path, "--mesh=data=2,fsdp=2", "--every=2")
  assert f"resumed from {tmp_path} at step {saved}" in logs[0]
  for a, b in zip(_params(cluster), _params(tmp_path), strict=True):
    np.testing.assert_array_equal(a, b)


def test_the_command_line_on_a_slurm_style_allocation_ends_by_itself(tmp_path):
  """`--multihost` finds its peers in SLURM's environment, as under `srun`; both processes
  train, evaluate, save and exit with status 0."""
  job = str(_port())  # jax derives the coordinator's port from the job id: keep it free.
  processes = []
  for i in range(2):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(SLURM_JOB_ID=job, SLURM_NTASKS="2", SLURM_PROCID=str(i), SLURM_LOCALID=str(i),
               SLURM_STEP_NODELIST="localhost",
               XLA_FLAGS="--xla_force_host_platform_device_count=2")
    processes.append(subprocess.Popen(
        [sys.executable, "-m", "muppet_jax.train", "--multihost",
         "--config=configs/prefinetune.py:demo", f"--workdir={tmp_path}",
         "--config.total_steps=4", "--config.eval.every_steps=4", "--config.eval.max_batches=1",
         "--config.checkpoint.every_steps=4", "--config.log_every_steps=2"],
        cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
  logs = _finish(processes, timeout=300)
  assert "done at step 4." in logs[0]
  for i, log in enumerate(logs):  # Each host's log says which host it is.
    assert f"process {i} of 2: 2 local of 4 devices (cpu)" in log
  assert (tmp_path / "checkpoints" / "4").is_dir()
