"""Task modules: Python modules that register seqio tasks and mixtures when imported
(`--config.data.task_modules=pkg.my_tasks,path/to/more_tasks.py`), for what a tasks file can't
say (a formatter of its own, a generated dataset); see `task_info.add_task`."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types

from muppet_jax.errors import UserError


def import_task_module(spec: str) -> types.ModuleType:
  """Imports `spec`, a module name (importable from the Python path) or a .py file's path."""
  try:
    if spec.endswith(".py"):
      if not os.path.isfile(spec):
        raise UserError(f"task module {spec} does not exist")
      name = "muppet_task_module_" + os.path.splitext(os.path.basename(spec))[0]
      if name in sys.modules and getattr(sys.modules[name], "__file__", None) == os.path.abspath(
          spec):
        return sys.modules[name]  # Imported before: its tasks are registered.
      module_spec = importlib.util.spec_from_file_location(name, os.path.abspath(spec))
      module = importlib.util.module_from_spec(module_spec)
      sys.modules[name] = module
      try:
        module_spec.loader.exec_module(module)
      except BaseException:
        del sys.modules[name]
        raise
      return module
    return importlib.import_module(spec)
  except UserError:
    raise
  except ModuleNotFoundError as e:
    if e.name and spec.startswith(e.name):
      raise UserError(f"task module {spec!r} is not importable: {e}; give a module on the "
                      "Python path (PYTHONPATH) or a .py file's path") from None
    raise
  except SyntaxError as e:
    raise UserError(f"task module {spec} does not parse: {e.msg} ({e.filename}, line "
                    f"{e.lineno})") from None


def import_task_modules(specs: str) -> list[types.ModuleType]:
  """Imports each of the comma-separated `specs`."""
  return [import_task_module(s.strip()) for s in specs.split(",") if s.strip()]
