"""HFVocabulary: eager and tf.data encoding, special ids, the padding decision, equality."""

import numpy as np
import pytest
import tensorflow as tf

from muppet_jax.data.vocabulary import HFVocabulary
from muppet_jax.errors import UserError
from tasks import demo as demo_tasks
from tests import hf_fixtures

TEXT = "anna lives in paris ."


@pytest.fixture(scope="module")
def vocab():
  return demo_tasks.VOCABULARY


def test_encode_decode_eager_and_in_tf_data(vocab):
  ids = vocab.encode(TEXT)
  assert ids == vocab.tokenizer(TEXT, add_special_tokens=False)["input_ids"] and len(ids) > 2
  assert vocab.decode(ids) == TEXT
  in_graph = tf.data.Dataset.from_tensor_slices([TEXT]).map(vocab.encode_tf)
  np.testing.assert_array_equal(next(iter(in_graph)).numpy(), ids)
  decoded = vocab.decode_tf(tf.constant([ids + [vocab.pad_id] * 3]))
  assert decoded.numpy().tolist() == [TEXT.encode()]


def test_roberta_special_ids_and_padding(vocab):
  # RoBERTa's ids are kept: <s>=0, <pad>=1, </s>=2; pad_id is the real one, not seqio's 0.
  assert (vocab.bos_id, vocab.pad_id, vocab.eos_id) == (0, 1, 2)
  assert vocab.special_template() == ([0], [2, 2], [2])


def test_bert_special_template(tmp_path):
  hf_fixtures.save_tokenizer("bert", tmp_path)
  bert = HFVocabulary(tmp_path)
  cls_id, sep_id = (bert.tokenizer.convert_tokens_to_ids(t) for t in ("[CLS]", "[SEP]"))
  assert bert.special_template() == ([cls_id], [sep_id], [sep_id])
  assert bert.pad_id == 0 and bert.eos_id == sep_id


def test_equality_follows_the_tokenizer(vocab, tmp_path):
  vocab.tokenizer.save_pretrained(tmp_path / "copy")
  hf_fixtures.save_tokenizer("roberta", tmp_path / "other")
  assert HFVocabulary(tmp_path / "copy") == vocab
  assert HFVocabulary(tmp_path / "other") != vocab


def test_missing_tokenizer_is_a_clear_error(tmp_path):
  with pytest.raises(UserError, match="no Hugging Face tokenizer"):
    _ = HFVocabulary(tmp_path / "nothing").tokenizer
