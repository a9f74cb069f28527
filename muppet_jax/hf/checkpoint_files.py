"""Reading and writing Hugging Face checkpoint directories without transformers' model classes.

transformers 5 has no Flax models, so tensors are read and written directly (safetensors, or a
PyTorch pickle when that is all a checkpoint has) under their PyTorch names.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import pickle
import shutil
import tempfile
from typing import Any, Callable, Mapping

import numpy as np
import safetensors
import safetensors.numpy
from etils import epath

from muppet_jax.errors import UserError

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PYTORCH_FILE = "pytorch_model.bin"
PYTORCH_INDEX = "pytorch_model.bin.index.json"
# Tokenizer files of the model families we support; copied through conversion and export.
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.json", "merges.txt", "vocab.txt", "sentencepiece.bpe.model", "spiece.model",
)


@dataclasses.dataclass
class HFCheckpoint:
  """A Hugging Face checkpoint in memory: config.json, tensors by PyTorch name, tokenizer files."""

  config: dict[str, Any]
  tensors: dict[str, np.ndarray]
  tokenizer_files: dict[str, bytes]
  source: str


def _looks_local(path_or_name: str) -> bool:
  """Whether a name that is no directory is meant as a local path rather than a hub name."""
  return (pathlib.Path(path_or_name).expanduser().exists()
          or path_or_name.startswith((".", "/", "~")) or path_or_name.count("/") > 1)


def _not_a_directory(path_or_name: str) -> UserError:
  missing = "" if os.path.exists(os.path.expanduser(path_or_name)) else " (it does not exist)"
  return UserError(f"{path_or_name} is not a directory{missing}; pass a Hugging Face checkpoint "
                   "directory (with config.json and model.safetensors) or a hub model name")


def _local_dir(path_or_name: str) -> pathlib.Path:
  """The checkpoint's local directory, downloading a hub model's files if needed."""
  path = pathlib.Path(path_or_name).expanduser()
  if path.is_dir():
    return path
  if _looks_local(path_or_name):
    raise _not_a_directory(path_or_name)
  import huggingface_hub  # Only the hub path needs it.

  try:
    local = pathlib.Path(huggingface_hub.snapshot_download(
        path_or_name,
        allow_patterns=[CONFIG_FILE, "*.safetensors", SAFETENSORS_INDEX, *TOKENIZER_FILES]))
    if not any(local.glob("*.safetensors")):  # Older repos only have PyTorch pickles.
      local = pathlib.Path(huggingface_hub.snapshot_download(
          path_or_name, allow_patterns=["pytorch_model*.bin", PYTORCH_INDEX]))
    return local
  except Exception as e:  # The hub raises many types (offline, 404, auth, ...): report them alike.
    reason = " ".join(f"{type(e).__name__}: {e}".split())
    raise UserError(f"{path_or_name!r} is neither a local directory nor a Hugging Face hub model "
                    f"that could be downloaded ({reason})") from e


# Raised by a truncated or corrupt weights file (torch's pickles raise several kinds).
_DAMAGED = (safetensors.SafetensorError, RuntimeError, EOFError, pickle.UnpicklingError)


def _damaged(path: pathlib.Path, e: Exception) -> UserError:
  reason = " ".join(str(e).split())[:200]
  return UserError(f"{path} is truncated or corrupt ({reason}); download or save the checkpoint "
                   "again")


def _read_safetensors(path: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    return safetensors.numpy.load_file(path)
  except safetensors.SafetensorError as e:
    raise _damaged(path, e) from e


def _read_torch_file(path: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    import torch
  except ImportError as e:
    raise UserError(f"{path} is a PyTorch pickle; reading it needs `pip install torch` (or convert "
                    "the checkpoint to safetensors)") from e
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except _DAMAGED as e:
    raise _damaged(path, e) from e
  # numpy has no bfloat16 cast from torch; go through float32, then the ml_dtypes bfloat16.
  out = {}
  for name, t in state.items():
    if t.dtype == torch.bfloat16:
      out[name] = t.float().numpy().astype("bfloat16")
    else:
      out[name] = t.numpy()
  return out


def _weight_files(directory: pathlib.Path
                  ) -> tuple[list[pathlib.Path], Callable[[pathlib.Path], dict[str, np.ndarray]]]:
  """The checkpoint's weight files (every shard of an index), and their reader."""
  for index_name, reader in ((SAFETENSORS_INDEX, _read_safetensors),
                             (PYTORCH_INDEX, _read_torch_file)):
    index = directory / index_name
    if index.exists():
      try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
      except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise _damaged(index, e) from e
      missing = [s for s in shards if not (directory / s).exists()]
      if missing:
        raise UserError(f"{index} names missing shards {missing}; download or save the "
                        "checkpoint again")
      return [directory / s for s in shards], reader
  for name, reader in ((SAFETENSORS_FILE, _read_safetensors), (PYTORCH_FILE, _read_torch_file)):
    if (directory / name).exists():
      return [directory / name], reader
  raise UserError(f"{directory} is not a supported checkpoint: it has no {SAFETENSORS_FILE}, "
                  f"{SAFETENSORS_INDEX} or {PYTORCH_FILE}")


def _read_tensors(directory: pathlib.Path) -> dict[str, np.ndarray]:
  files, reader = _weight_files(directory)
  tensors: dict[str, np.ndarray] = {}
  for path in files:
    tensors.update(reader(path))
  return tensors


def _read_config(directory: pathlib.Path) -> dict[str, Any]:
  config_path = directory / CONFIG_FILE
  if not config_path.exists():
    raise UserError(f"{directory} is not a Hugging Face checkpoint: it has no {CONFIG_FILE}")
  try:
    return json.loads(config_path.read_text())
  except json.JSONDecodeError as e:
    raise UserError(f"{config_path} is not valid JSON: {e}") from e


def read_checkpoint(path_or_name: str) -> HFCheckpoint:
  """Reads a local Hugging Face checkpoint directory, or a hub model when the network allows."""
  directory = _local_dir(path_or_name)
  return HFCheckpoint(
      config=_read_config(directory),
      tensors=_read_tensors(directory),
      tokenizer_files={name: (directory / name).read_bytes()
                       for name in TOKENIZER_FILES if (directory / name).exists()},
      source=str(path_or_name),
  )


def check_checkpoint(path_or_name: str) -> None:
  """What `read_checkpoint` would refuse in a local directory, found without reading the
  tensors: no or bad config.json, no weights, a missing shard, a truncated safetensors file (its
  header against its size). A hub name is left to the download."""
  path = pathlib.Path(path_or_name).expanduser()
  if not path.is_dir():
    if _looks_local(path_or_name):
      raise _not_a_directory(path_or_name)
    return
  _read_config(path)
  files, reader = _weight_files(path)
  if reader is _read_safetensors:
    for file in files:
      try:
        with safetensors.safe_open(file, "numpy"):  # Checks the header against the size.
          pass
      except safetensors.SafetensorError as e:
        raise _damaged(file, e) from e


def check_output_dir(path: str | os.PathLike) -> epath.Path:
  """Refuses an output directory that already has content: nothing a user saved is overwritten.

  Local paths and gs:// alike.
  """
  path = epath.Path(path).expanduser()
  if path.exists() and (not path.is_dir() or any(path.iterdir())):
    raise UserError(f"{path} already exists and is not empty; choose a new output directory or "
                    "remove it first")
  return path


def write_checkpoint(out_dir: str | os.PathLike, config: Mapping[str, Any],
                     tensors: Mapping[str, np.ndarray],
                     tokenizer_files: Mapping[str, bytes]) -> pathlib.Path:
  """Writes config.json, model.safetensors and tokenizer files into a local directory; all or
  nothing.

  Files are written to a temporary sibling directory that is renamed into place at the end, so a
  failure leaves no half-written checkpoint behind.
  """
  out = pathlib.Path(check_output_dir(out_dir))
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
  try:
    (tmp / CONFIG_FILE).write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n")
    safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                                tmp / SAFETENSORS_FILE, metadata={"format": "pt"})
    for name, data in tokenizer_files.items():
      (tmp / name).write_bytes(data)
    if out.exists():
      out.rmdir()  # Empty, checked above.
    tmp.rename(out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out
