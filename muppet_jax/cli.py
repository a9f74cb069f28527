"""Shared plumbing of the command-line entry points: user mistakes as one-line errors (with a
traceback under `--debug` or MUPPET_DEBUG=1), and the checks of `--config=FILE[:PRESET]` and
`--config.KEY=VALUE` flags before absl parses them."""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
from typing import Any, Callable, Iterator, NoReturn

import ml_collections
from absl import flags, logging
from ml_collections import config_flags

from muppet_jax.errors import UserError


# Accepted by every command line (the argparse ones through `run`, which takes it out).
DEBUG = flags.DEFINE_bool("debug", False, "show the traceback of a user error too (or set "
                          "MUPPET_DEBUG=1)")
_debug_requested = False  # By `run`'s --debug.


def debug() -> bool:
  """Whether user errors show their traceback: `--debug` or MUPPET_DEBUG set (not 0)."""
  if os.environ.get("MUPPET_DEBUG", "0") not in ("", "0") or _debug_requested:
    return True
  if flags.FLAGS.is_parsed():
    return DEBUG.value
  # Before absl parses the flags (the config checks): the last of its spellings wins.
  spellings = {"--debug": True, "--debug=true": True, "--debug=1": True, "--nodebug": False,
               "--debug=false": False, "--debug=0": False}
  said = [spellings[a.lower()] for a in sys.argv[1:] if a.lower() in spellings]
  return bool(said and said[-1])


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
  """Turns a UserError raised inside into `error: ...` on stderr and exit status 2; with
  `debug()`, re-raises it (its traceback). Other exceptions are bugs: they pass through."""
  try:
    yield
  except UserError as e:
    if debug():
      raise
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose usage mistakes are one UserError line (not usage text, then the error), and
  whose --help lists --debug (which `run` acts on)."""

  def __init__(self, *args: Any, **kwargs: Any):
    super().__init__(*args, **kwargs)
    self.add_argument("--debug", action="store_true",
                      help="show the traceback of a user error too (or set MUPPET_DEBUG=1)")

  def error(self, message: str) -> NoReturn:
    raise UserError(f"{message}; see {self.prog} --help")


def run(main: Callable[[list[str]], int], argv: list[str] | None = None) -> None:
  """Runs `main` on the command line's arguments (less `--debug`), user errors as one line."""
  global _debug_requested
  argv = sys.argv[1:] if argv is None else argv
  _debug_requested = "--debug" in argv
  with user_errors():
    sys.exit(main([a for a in argv if a != "--debug"]))


def absl_log_at_warning() -> None:
  """absl's Python log (orbax's lines on every save, at INFO) from WARNING up, unless the
  command line sets --verbosity."""
  if not flags.FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def parse_flags(argv: list[str], flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """absl's flag parsing (`app.run(main, flags_parser=parse_flags)`), a bad flag as one line."""
  try:
    return flag_values(argv)
  except flags.Error as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


def load_config(spec: str) -> ml_collections.ConfigDict:
  """The config of `FILE[:PRESET]`: FILE's `get_config(PRESET)` (or `get_config()`)."""
  path, _, preset = spec.partition(":")
  if not os.path.isfile(path):
    raise UserError(f"config file {path} does not exist")
  module_spec = importlib.util.spec_from_file_location("muppet_config", path)
  module = importlib.util.module_from_spec(module_spec)
  try:
    module_spec.loader.exec_module(module)
  except SyntaxError as e:
    raise UserError(f"config file {path} does not parse: {e.msg} (line {e.lineno})") from e
  if not callable(getattr(module, "get_config", None)):
    raise UserError(f"config file {path} has no get_config(); a config file defines "
                    "get_config(preset) returning an ml_collections.ConfigDict")
  return module.get_config(preset) if preset else module.get_config()


def _config_spec(argv: list[str], name: str) -> str | None:
  """The value of the last `--NAME=SPEC` or `--NAME SPEC` (the one absl keeps)."""
  spec = None
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      spec = arg.split("=", 1)[1]
    elif arg == f"--{name}" and i + 1 < len(argv):
      spec = argv[i + 1]
  return spec


def _lookup(config: ml_collections.ConfigDict, key: str, path: str):
  """The value of the dotted `key`, or an error naming the keys there are."""
  node = config
  for depth, part in enumerate(key.split(".")):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      where = ".".join(key.split(".")[:depth]) or path
      choices = (", ".join(sorted(node.keys())) if isinstance(node, ml_collections.ConfigDict)
                 else f"no keys: it is a {type(node).__name__}")
      raise UserError(f"unknown config key {key!r}; {where} has {choices}")
    node = node[part]
  return node


def check_config_flags(argv: list[str], name: str = "config") -> None:
  """One line, instead of a stack trace or absl's fatal parse error, for a config file that
  doesn't exist or load, an unknown preset, an unknown `--config.KEY`, or a value that doesn't
  parse as its key's type. Nothing to check without a `--config` flag."""
  spec = _config_spec(argv, name)
  if spec is None:
    return
  config = load_config(spec)
  for arg in argv:
    if not arg.startswith(f"--{name}."):
      continue
    key = arg[len(f"--{name}."):].split("=", 1)[0]
    value = _lookup(config, key, spec.partition(":")[0])
    # The value, parsed exactly as the real flags will parse it.
    sandbox, args = flags.FlagValues(), ["prog", f"--{name}={spec}", arg]
    config_flags.DEFINE_config_file(name, flag_values=sandbox, lock_config=True, sys_argv=args)
    try:
      sandbox(args)
    except flags.Error as e:
      shown = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
      parent, _, name = key.rpartition(".")
      # An unset key (a placeholder, None) still has a type.
      kind = (_lookup(config, parent, "") if parent else config).get_ref(name).get_type()
      raise UserError(f"{e}; {key} must be of type {kind.__name__} (it is {shown!r} in "
                      f"{spec})") from e
