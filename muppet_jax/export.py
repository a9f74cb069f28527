"""Exports a muppet_jax checkpoint as a Hugging Face directory.

    python -m muppet_jax.export --checkpoint CKPT_DIR --out HF_DIR [--task TASK]

Without --task: the whole pretrained model, what the published Muppet checkpoints are: RoBERTa
or BERT as `RobertaForMaskedLM` or `BertForMaskedLM` (for `AutoModelForMaskedLM`), BART as
`BartForConditionalGeneration` (for `AutoModelForSeq2SeqLM`; summarization trains its LM head).
With --task (a pre-finetuned checkpoint): the model plus that task's trained head as
`{Roberta,Bert}ForSequenceClassification` (with the task's class names as labels),
`{Roberta,Bert}ForMultipleChoice`, `{Roberta,Bert}ForQuestionAnswering`,
`BartForSequenceClassification` or `BartForQuestionAnswering`. Either way: config.json,
model.safetensors, and the tokenizer files when the source had them.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib

import jax
import numpy as np
from etils import epath

from muppet_jax import checkpointing, cli, hf, partitioning, pretrained
from muppet_jax.errors import UserError
from muppet_jax.hf import checkpoint_files
from muppet_jax.models.config import DTYPES


def export(checkpoint: str | os.PathLike, out: str | os.PathLike, step: int | None = None,
           dtype: str | None = None, task: str | None = None) -> pathlib.Path:
  """Writes step `step` (default: latest) of `checkpoint` to the new directory `out`, as the
  pretrained model's transformers class or, with `task`, as that task's transformers model.

  Tensors keep the checkpoint's parameter dtype unless `dtype` is given.
  """
  out = checkpoint_files.check_output_dir(out)
  # The whole model is written by one process, so restore it onto one device.
  mesh = partitioning.make_mesh({"fsdp": 1}, jax.devices()[:1])
  if step is None:  # The latest step that restores (a damaged newer one is named, skipped).
    step, model, _ = checkpointing.first_restorable(
        epath.Path(checkpoint).expanduser(), checkpointing.restorable_steps(checkpoint),
        lambda s: pretrained.from_checkpoint(checkpoint, mesh=mesh, step=s)[1], "exporting")
  else:
    step, model = pretrained.from_checkpoint(checkpoint, mesh=mesh, step=step)
  dtype = dtype or model.config.param_dtype
  params = jax.device_get(model.params)
  nonfinite = [jax.tree_util.keystr(path)
               for path, x in jax.tree_util.tree_leaves_with_path(params)
               if not np.isfinite(x).all()]
  if nonfinite:
    others = [s for s in checkpointing.restorable_steps(checkpoint) if s != step]
    raise UserError(f"{checkpoint} step {step} holds non-finite weights ({len(nonfinite)} "
                    f"tensors, first {nonfinite[0]}); not exporting them: export an earlier "
                    f"step with --step (steps there: {others or 'no other'})")
  hf_config = model.config.to_hf_config(model.hf_config)
  hf_config.pop("torch_dtype", None)  # transformers 5 reads `dtype`; keep one source of truth.
  if task is None:
    names = hf.weights_for(model.config)
    tensors = names.export_tensors(params, model.config, dtype)
    architecture = names.hf_architecture(model.config)
  else:
    tensors, architecture = _task_tensors(model, params, task, dtype, hf_config)
  hf_config.update(architectures=[architecture], dtype=dtype)
  return checkpoint_files.write_checkpoint(out, hf_config, tensors, model.tokenizer_files)


def _task_tensors(model: pretrained.Pretrained, params, task: str, dtype: str,
                  hf_config: dict) -> tuple[dict, str]:
  """Tensors and class of `task`'s transformers model; fills in its config fields."""
  entry = next((t for t in model.tasks if t.name == task), None)
  if entry is None:
    known = ", ".join(t.name for t in model.tasks) or "none: it was not pre-finetuned"
    raise UserError(f"the checkpoint has no head for task {task!r}; its tasks: {known}")
  head = model.layout.index(entry.head)
  kind = model.layout.kinds[head]
  names = hf.weights_for(model.config)
  architectures = names.task_architectures(model.config)
  if kind == "lm":
    raise UserError(f"task {task!r} trains the LM head, which is part of the model: export "
                    "without --task for BartForConditionalGeneration")
  if kind not in architectures:
    raise UserError(f"task {task!r} trains a {kind} head, which has no transformers counterpart "
                    f"for a {model.config.model_type} model; export without --task for the "
                    "pre-finetuned model itself")
  regression = entry.family == "regression"
  num_labels = 1 if regression else entry.num_classes
  tensors = names.export_task_tensors(
      params, model.config, kind, model.layout.index_in_kind()[head], num_labels, dtype)
  if kind == "classification":
    labels = entry.labels or tuple(f"LABEL_{i}" for i in range(num_labels))
    hf_config.update(num_labels=num_labels,
                     id2label={str(i): label for i, label in enumerate(labels)},
                     label2id={label: i for i, label in enumerate(labels)},
                     problem_type="regression" if regression else "single_label_classification")
  return tensors, architectures[kind]


def main(argv: list[str]) -> int:
  parser = cli.ArgumentParser(prog="python -m muppet_jax.export", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--checkpoint", required=True, metavar="CKPT_DIR",
                      help="muppet_jax checkpoint root (from convert or training)")
  parser.add_argument("--out", required=True, metavar="HF_DIR",
                      help="new (or empty) directory for the Hugging Face checkpoint")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  parser.add_argument("--dtype", choices=DTYPES, default=None,
                      help="dtype of the written tensors (default: the checkpoint's)")
  parser.add_argument("--task", default=None,
                      help="write this task's transformers model, with its trained head")
  args = parser.parse_args(argv)
  out = export(args.checkpoint, args.out, step=args.step, dtype=args.dtype, task=args.task)
  architecture = json.loads((out / checkpoint_files.CONFIG_FILE).read_text())["architectures"][0]
  print(f"wrote {out}; load it with transformers.{architecture}.from_pretrained({str(out)!r})")
  return 0


if __name__ == "__main__":
  cli.run(main)
