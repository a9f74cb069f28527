"""Every catalog task against fake examples in its dataset's real TFDS feature spec."""

import numpy as np
import pytest
import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from muppet_jax.data import preprocessors, task_info
from muppet_jax.errors import UserError
from tasks import catalog, demo as demo_tasks
from tests.catalog_fakes import FAKES

LENGTHS = {"inputs": 96, "targets": 32}
PREFIX = "fakevocab_"
ENTRIES = catalog.entries()


@pytest.fixture(scope="module")
def tokenizer():
  """The catalog registered once more under the (offline) demo vocabulary."""
  if PREFIX + ENTRIES[0].name not in seqio.TaskRegistry.names():
    catalog.register_catalog(demo_tasks.VOCABULARY, prefix=PREFIX)
  return demo_tasks.VOCABULARY.tokenizer


def test_catalog_has_the_46_datasets_in_four_families():
  families = [task_info.get_task(e.name).info.family for e in ENTRIES]
  assert len(ENTRIES) == 46 and set(FAKES) == {e.name for e in ENTRIES}
  assert families.count("classification") + families.count("regression") == 26
  assert (families.count("multiple_choice"), families.count("span"),
          families.count("summarization")) == (10, 6, 4)


def _features(tfds_name: str):
  if tfds_name.startswith("huggingface:"):
    return None  # No builder in TFDS itself; the fake follows the Hugging Face dataset.
  return tfds.builder(tfds_name, data_dir="/nonexistent").info.features


def _to_tensors(spec, value):
  if isinstance(spec, dict):
    return {k: _to_tensors(spec[k], value[k]) for k in spec}
  if isinstance(spec, tf.RaggedTensorSpec):
    return tf.ragged.constant(value, dtype=spec.dtype)
  return tf.constant(value, dtype=spec.dtype)


def _raw_dataset(tfds_name: str, raws: list[dict]) -> tf.data.Dataset:
  """The fakes as TFDS would yield them; `encode_example` rejects fields the spec lacks."""
  features = _features(tfds_name)
  tensors = []
  for raw in raws:
    if features is None:
      tensors.append({k: tf.constant(v) for k, v in raw.items()})
    else:
      tensors.append(_to_tensors(features.get_tensor_spec(), features.encode_example(raw)))
  dataset = tf.data.Dataset.from_tensors(tensors[0])
  for t in tensors[1:]:
    dataset = dataset.concatenate(tf.data.Dataset.from_tensors(t))
  return dataset


def _expected(entry):
  out = []
  for _, expected in FAKES[entry.name]:
    if expected is not None:
      out.extend(expected if isinstance(expected, list) else [expected])
  return out


@pytest.mark.parametrize("entry", ENTRIES, ids=[e.name for e in ENTRIES])
def test_task_turns_fake_examples_into_uniform_examples(entry, tokenizer):
  raws = [raw for raw, _ in FAKES[entry.name]]
  task = task_info.get_task(PREFIX + entry.name)
  dataset = _raw_dataset(entry.tfds[0], raws)
  processed = task.preprocess_postcache(dataset, sequence_length=LENGTHS)
  # One structure for every task of every family, as seqio mixtures require.
  spec = processed.element_spec
  assert spec.keys() == preprocessors.UNIFORM_SPEC.keys()
  assert all(preprocessors.UNIFORM_SPEC[k].is_compatible_with(spec[k]) for k in spec), spec
  out = list(processed.as_numpy_iterator())
  expected = _expected(entry)
  assert len(out) == len(expected)
  family = entry.info.family
  for ex, want in zip(out, expected):
    sequences = np.split(ex["inputs"], np.cumsum(ex["input_lengths"])[:-1])
    texts = [tokenizer.decode(s, skip_special_tokens=True) for s in sequences]
    for fragment in want["contains"]:
      assert any(fragment in t for t in texts), (fragment, texts)
    assert all(s[0] == tokenizer.bos_token_id and s[-1] == tokenizer.eos_token_id
               for s in sequences)
    if family == "classification":
      assert ex["label"] == want["label"] and len(sequences) == 1
    elif family == "regression":
      assert ex["label"] == -1 and ex["score"] == pytest.approx(want["score"])
    elif family == "multiple_choice":
      assert len(sequences) == entry.info.num_classes and ex["label"] == want["choice"]
      assert want["contains"][1] in texts[want["choice"]]
    elif family == "span":
      start, end = ex["span"]
      answer = tokenizer.decode(ex["inputs"][start:end + 1]).strip()
      assert answer == want["answer"]
    else:
      assert tokenizer.decode(ex["targets"], skip_special_tokens=True) == want["summary"]


def test_unprepared_tfds_dataset_says_how_to_prepare_it(tmp_path, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  task = task_info.get_task("glue_cola")
  with pytest.raises(UserError, match=r"tfds build glue/cola") as info:
    task_info.check_prepared(task)
  assert "\n" not in str(info.value)


def test_unknown_task_is_a_clear_error():
  with pytest.raises(UserError, match="unknown task 'glue_colaa'.*--list"):
    task_info.get_task("glue_colaa")
