"""Hugging Face -> convert -> export -> Hugging Face, and the errors on bad checkpoints."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file, save_file

from muppet_jax import convert, export, pretrained
from muppet_jax.errors import UserError
from muppet_jax.hf import checkpoint_files, encoder_weights
from muppet_jax.models.config import EncoderConfig
from tests import hf_fixtures


def _bits(x: np.ndarray) -> np.ndarray:
  return np.ascontiguousarray(x).view(np.uint8)


@pytest.fixture(scope="module")
def round_trip(tiny_mlm, tmp_path_factory):
  root = tmp_path_factory.mktemp("round_trip")
  convert.convert(str(tiny_mlm.path), root / "ckpt")
  export.export(root / "ckpt", root / "export_1")
  export.export(root / "ckpt", root / "export_2")
  return tiny_mlm, root


def test_round_trip_tensors_are_bit_identical(round_trip):
  saved, root = round_trip
  original = load_file(saved.path / "model.safetensors")
  exported = load_file(root / "export_1" / "model.safetensors")
  assert sorted(exported) == sorted(original)
  for name, x in original.items():
    assert exported[name].dtype == x.dtype and exported[name].shape == x.shape, name
    np.testing.assert_array_equal(_bits(exported[name]), _bits(x), err_msg=name)


def test_export_loads_in_transformers_with_nothing_missing_and_equal_logits(round_trip):
  saved, root = round_trip
  model, info = transformers.AutoModelForMaskedLM.from_pretrained(
      root / "export_1", output_loading_info=True)
  assert type(model).__name__ == {"roberta": "RobertaForMaskedLM",
                                  "bert": "BertForMaskedLM"}[saved.model_type]
  assert not info["missing_keys"] and not info["unexpected_keys"]
  assert not info["mismatched_keys"] and not info["error_msgs"]
  ids, mask, types = hf_fixtures.padded_batch(saved.model_type)
  with torch.no_grad():
    ref = hf_fixtures.load_mlm(saved.path)(input_ids=ids, attention_mask=mask,
                                            token_type_ids=types).logits
    got = model.eval()(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
  assert torch.equal(ref, got)


def test_tokenizer_files_travel_and_tokenize_alike(round_trip):
  saved, root = round_trip
  originals = {f for f in os.listdir(saved.path) if f in checkpoint_files.TOKENIZER_FILES}
  assert originals  # The fixture has a tokenizer, so the check below means something.
  for name in originals:
    assert (root / "export_1" / name).read_bytes() == (saved.path / name).read_bytes()
  text = "w1 w2 w33 w7"
  assert (transformers.AutoTokenizer.from_pretrained(root / "export_1")(text)["input_ids"]
          == transformers.AutoTokenizer.from_pretrained(saved.path)(text)["input_ids"])


def test_second_export_gives_identical_files(round_trip):
  _, root = round_trip
  names = sorted(os.listdir(root / "export_1"))
  assert names == sorted(os.listdir(root / "export_2"))
  for name in names:
    assert (root / "export_1" / name).read_bytes() == (root / "export_2" / name).read_bytes(), name


def test_pytorch_bin_checkpoint_imports_like_safetensors(tmp_path):
  model = hf_fixtures.tiny_mlm("roberta")
  model.save_pretrained(tmp_path / "st")
  # transformers 5 writes only safetensors; older checkpoints on the hub are pickles like this.
  (tmp_path / "bin").mkdir()
  shutil.copy(tmp_path / "st" / "config.json", tmp_path / "bin")
  torch.save(model.state_dict(), tmp_path / "bin" / checkpoint_files.PYTORCH_FILE)
  a = pretrained.from_hf(str(tmp_path / "st")).params
  b = pretrained.from_hf(str(tmp_path / "bin")).params
  for x, y in zip(_leaves(a), _leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def _leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_old_layer_norm_names_tied_decoder_copies_and_unused_tensors_are_understood(tmp_path):
  model = hf_fixtures.tiny_mlm("bert")
  model.save_pretrained(tmp_path / "new")
  tensors = load_file(tmp_path / "new" / "model.safetensors")
  old = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"):
         v for k, v in tensors.items()}
  old["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"]
  # BertForPreTraining's next-sentence head and an old position-id buffer: read, not used.
  old["cls.seq_relationship.weight"] = np.ones((2, 32), np.float32)
  old["cls.seq_relationship.bias"] = np.ones(2, np.float32)
  old["bert.embeddings.position_ids"] = np.arange(64)[None]
  config = EncoderConfig.from_hf_config(model.config.to_dict())
  target = pretrained.abstract_params(config, pretrained.default_mesh())
  a = encoder_weights.import_params(tensors, config, target)
  b = encoder_weights.import_params(old, config, target)
  for x, y in zip(_leaves(a.params), _leaves(b.params), strict=True):
    np.testing.assert_array_equal(x, y)
  assert a.summary == "loaded 42 tensors; newly initialized: none; unused: none"
  assert b.summary == ("loaded 42 tensors; newly initialized: none; unused: "
                       "bert.embeddings.position_ids, cls.seq_relationship.* (2 tensors)")


# Bad input.

def _copy(saved, tmp_path) -> pathlib.Path:
  return pathlib.Path(shutil.copytree(saved.path, tmp_path / "copy"))


def _edit_config(path: pathlib.Path, **changes) -> None:
  config = json.loads((path / "config.json").read_text())
  config.update(changes)
  (path / "config.json").write_text(json.dumps(config))


def _one_line_error(fn, *args, match: str) -> str:
  with pytest.raises(UserError, match=match) as info:
    fn(*args)
  assert "\n" not in str(info.value)
  return str(info.value)


def test_directory_that_is_not_a_checkpoint(tmp_path):
  _one_line_error(pretrained.from_hf, str(tmp_path), match="no config.json")
  (tmp_path / "config.json").write_text(json.dumps(hf_fixtures.tiny_config("bert").to_dict()))
  _one_line_error(pretrained.from_hf, str(tmp_path), match="not a supported checkpoint")
  _one_line_error(pretrained.from_hf, str(tmp_path / "nope"), match="not a directory")


@pytest.mark.parametrize("tiny_mlm", ["roberta"], indirect=True)
def test_checkpoint_that_does_not_match_its_config(tiny_mlm, tmp_path):
  path = _copy(tiny_mlm, tmp_path)
  _edit_config(path, intermediate_size=64)
  _one_line_error(pretrained.from_hf, str(path), match=r"other shapes.*intermediate\.dense")
  _edit_config(path, intermediate_size=37, num_hidden_layers=3)
  _one_line_error(pretrained.from_hf, str(path), match=r"missing.*layer\.2\.")
  _edit_config(path, num_hidden_layers=1)
  _one_line_error(pretrained.from_hf, str(path), match=r"unexpected.*layer\.1\.")
  # A masked-LM head is all there (a bare encoder has none of it) or an error.
  _edit_config(path, num_hidden_layers=2)
  tensors = load_file(path / "model.safetensors")
  del tensors["lm_head.dense.weight"]
  save_file(tensors, path / "model.safetensors")
  _one_line_error(pretrained.from_hf, str(path), match=r"1 tensor\(s\) missing, e.g. lm_head.dense")


@pytest.mark.parametrize("tiny_mlm", ["roberta"], indirect=True)
def test_unknown_architecture(tiny_mlm, tmp_path):
  path = _copy(tiny_mlm, tmp_path)
  _edit_config(path, model_type="gpt2")
  _one_line_error(pretrained.from_hf, str(path), match="unknown architecture.*gpt2")


@pytest.mark.parametrize("tiny_mlm", ["bert"], indirect=True)
def test_outputs_never_overwrite_existing_files(tiny_mlm, tmp_path):
  keep = tmp_path / "keep"
  keep.mkdir()
  (keep / "mine.txt").write_text("precious")
  _one_line_error(convert.convert, str(tiny_mlm.path), keep, match="not empty")
  convert.convert(str(tiny_mlm.path), tmp_path / "ckpt")
  _one_line_error(export.export, tmp_path / "ckpt", keep, match="not empty")
  assert os.listdir(keep) == ["mine.txt"] and (keep / "mine.txt").read_text() == "precious"
  _one_line_error(export.export, tmp_path / "keep", tmp_path / "out", match="no muppet_jax checkpoint")
  assert not (tmp_path / "out").exists()


def _cli(*args) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                        cwd=pathlib.Path(__file__).parent.parent, timeout=300)


@pytest.mark.parametrize("tiny_mlm", ["roberta"], indirect=True)
def test_command_lines(tiny_mlm, tmp_path):
  done = _cli("muppet_jax.convert", "--from-hf", str(tiny_mlm.path), "--out", str(tmp_path / "c"))
  assert done.returncode == 0, done.stderr
  done = _cli("muppet_jax.export", "--checkpoint", str(tmp_path / "c"), "--out", str(tmp_path / "e"))
  assert done.returncode == 0, done.stderr
  assert "RobertaForMaskedLM.from_pretrained" in done.stdout
  assert transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "e") is not None
  failed = _cli("muppet_jax.convert", "--from-hf", str(tmp_path), "--out", str(tmp_path / "x"))
  assert failed.returncode == 2
  assert failed.stderr.strip().splitlines() == [f"error: {tmp_path} is not a Hugging Face "
                                                "checkpoint: it has no config.json"]


def test_hub_name_without_network_is_a_clear_error():
  message = _one_line_error(pretrained.from_hf, "facebook/muppet-roberta-base",
                            match="neither a local directory nor a Hugging Face hub model")
  assert "facebook/muppet-roberta-base" in message
