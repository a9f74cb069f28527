"""Converts a Hugging Face RoBERTa/BERT (masked-LM or bare encoder) or BART checkpoint into a
muppet_jax orbax checkpoint.

    python -m muppet_jax.convert --from-hf roberta-large --out gs://bucket/ckpt/roberta-large
    python -m muppet_jax.convert --from-hf facebook/bart-large --out gs://bucket/ckpt/bart-large

A TPU pod then restores sharded weights from orbax (each host reading its shards) instead of every
host reading a PyTorch file.
"""

from __future__ import annotations

import argparse
import os

from etils import epath

from muppet_jax import checkpointing, cli, pretrained
from muppet_jax.hf import checkpoint_files


def convert(from_hf: str, out: str | os.PathLike) -> epath.Path:
  """Writes the checkpoint `from_hf` (directory or hub name) as step 0 of a new orbax root `out`."""
  out = checkpoint_files.check_output_dir(out)
  model = pretrained.from_hf(from_hf)
  return checkpointing.save_model(out, model.params, model.metadata(), step=0)


def main(argv: list[str]) -> int:
  parser = cli.ArgumentParser(prog="python -m muppet_jax.convert", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--from-hf", required=True, metavar="PATH_OR_NAME",
                      help="Hugging Face checkpoint directory or hub model name")
  parser.add_argument("--out", required=True, metavar="CKPT_DIR",
                      help="new (or empty) directory for the orbax checkpoint")
  args = parser.parse_args(argv)
  out = convert(args.from_hf, args.out)
  print(f"wrote {out} (step 0); export it with: python -m muppet_jax.export --checkpoint {out} "
        "--out HF_DIR")
  return 0


if __name__ == "__main__":
  cli.run(main)
