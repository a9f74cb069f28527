"""Runs many command lines fast: one process imports the heavy libraries (TensorFlow, jax, seqio,
transformers: ~10 s of CPU per start) once, then forks a child per command line, which runs the
command's module as `__main__` with its argv, exactly as `python -m MODULE ARGS` would, its
stdout and stderr in files.

    python -m tests.cli_zygote CASES.json OUT_DIR

CASES.json: a list of {"id", "module", "args"}. Two children run at a time; each is killed after
TIMEOUT seconds. Prints {id: [exit status, seconds]} as JSON; OUT_DIR/ID.out and ID.err hold the
output. Run it from the repository root (as `python -m` runs from there). The modules that define
absl flags (train, finetune, study, cache) must not be imported here: each child defines them,
as its own `__main__`.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import time
import traceback

import muppet_jax.cli  # noqa: F401  (the imports that every command line pays for)
import muppet_jax.evaluation  # noqa: F401
import muppet_jax.export  # noqa: F401
import muppet_jax.trainer  # noqa: F401
import muppet_jax.validation  # noqa: F401
import tasks  # noqa: F401

TIMEOUT = 120
PARALLEL = 2


def _child(case: dict, out_dir: str) -> None:
  """Runs `case` as `python -m` would, in this (forked) process, and exits with its status."""
  signal.alarm(TIMEOUT)
  for fd, suffix in ((1, "out"), (2, "err")):
    path = os.path.join(out_dir, f"{case['id']}.{suffix}")
    os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
  sys.argv = [case["module"], *case["args"]]
  status = 0
  try:
    runpy.run_module(case["module"], run_name="__main__", alter_sys=True)
  except SystemExit as e:  # As the interpreter treats it.
    if isinstance(e.code, str):
      print(e.code, file=sys.stderr)
    status = e.code if isinstance(e.code, int) else int(e.code is not None)
  except BaseException:  # noqa: BLE001  (an uncaught exception: its traceback, status 1)
    traceback.print_exc()
    status = 1
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)


def run(cases: list[dict], out_dir: str) -> dict[str, tuple[int, float]]:
  """Every case's (exit status, seconds), `PARALLEL` children at a time."""
  todo, running, results = list(cases), {}, {}
  while todo or running:
    while todo and len(running) < PARALLEL:
      case = todo.pop(0)
      pid = os.fork()
      if pid == 0:
        _child(case, out_dir)
      running[pid] = (case["id"], time.perf_counter())
    pid, status = os.wait()
    name, start = running.pop(pid)
    results[name] = (os.waitstatus_to_exitcode(status), time.perf_counter() - start)
  return results


if __name__ == "__main__":
  with open(sys.argv[1]) as f:
    print(json.dumps(run(json.load(f), sys.argv[2])))
