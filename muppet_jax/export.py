"""Exports a muppet_jax checkpoint as a Hugging Face masked-LM directory.

    python -m muppet_jax.export --checkpoint CKPT_DIR --out HF_DIR

HF_DIR then loads with `transformers.AutoModelForMaskedLM.from_pretrained(HF_DIR)`: config.json,
model.safetensors, and the tokenizer files when the source checkpoint had them.
"""

from __future__ import annotations

import argparse
import os
import pathlib

import jax

from muppet_jax import cli, partitioning, pretrained
from muppet_jax.hf import checkpoint_files, encoder_weights
from muppet_jax.models.config import DTYPES


def export(checkpoint: str | os.PathLike, out: str | os.PathLike, step: int | None = None,
           dtype: str | None = None) -> pathlib.Path:
  """Writes step `step` (default: latest) of `checkpoint` to the new directory `out`.

  Tensors keep the checkpoint's parameter dtype unless `dtype` is given.
  """
  out = checkpoint_files.check_output_dir(out)
  # The whole model is written by one process, so restore it onto one device.
  mesh = partitioning.make_mesh({"fsdp": 1}, jax.devices()[:1])
  _, model = pretrained.from_checkpoint(checkpoint, mesh=mesh, step=step)
  dtype = dtype or model.config.param_dtype
  tensors = encoder_weights.export_tensors(jax.device_get(model.params), model.config, dtype)
  hf_config = model.config.to_hf_config(model.hf_config)
  hf_config.pop("torch_dtype", None)  # transformers 5 reads `dtype`; keep one source of truth.
  hf_config.update(architectures=[encoder_weights.hf_architecture(model.config)], dtype=dtype)
  return checkpoint_files.write_checkpoint(out, hf_config, tensors, model.tokenizer_files)


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog="python -m muppet_jax.export", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", required=True, metavar="CKPT_DIR",
                      help="muppet_jax checkpoint root (from convert or training)")
  parser.add_argument("--out", required=True, metavar="HF_DIR",
                      help="new (or empty) directory for the Hugging Face checkpoint")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--dtype", choices=DTYPES, default=None,
                      help="dtype of the written tensors (default: the checkpoint's)")
  args = parser.parse_args(argv)
  out = export(args.checkpoint, args.out, step=args.step, dtype=args.dtype)
  print(f"wrote {out}; load it with transformers.AutoModelForMaskedLM.from_pretrained({str(out)!r})")
  return 0


if __name__ == "__main__":
  cli.run(main)
