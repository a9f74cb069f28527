"""The compiled train step on 8 fake CPU devices, for RoBERTa and for BART with summaries in
every batch: sharded equals single-device, one compilation over many steps with changing task
mixes, and gradient accumulation equals one big batch."""

import jax
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from muppet_jax import losses, partitioning, state, trainer
from muppet_jax.data.batching import MixtureStream, StreamConfig
from muppet_jax.models.config import BartConfig, EncoderConfig
from muppet_jax.models.multitask import build

pytestmark = pytest.mark.slow  # Scheduled first (conftest.py).

ROWS = 16


@pytest.fixture(scope="module", params=["roberta", "bart"])
def setup(request):
  bart = request.param == "bart"
  # Four row groups, so the same batches also serve the 4-microbatch step.
  stream = MixtureStream(StreamConfig("muppet_demo", batch_size=ROWS, max_length=64,
                                      target_length=24, max_segments=8, row_groups=4,
                                      exclude_families=() if bart else ("summarization",)))
  batches = [next(stream) for _ in range(4)]
  if bart:
    config = BartConfig(vocab_size=1000, hidden_size=64, encoder_layers=2, decoder_layers=1,
                        encoder_heads=4, decoder_heads=4, encoder_ffn_size=128,
                        decoder_ffn_size=128, max_position_embeddings=64, hidden_dropout=0.0)
    assert all((b["target_segment_ids"] > 0).any() for b in batches)  # Summaries everywhere.
  else:
    config = EncoderConfig(vocab_size=1000, hidden_size=64, num_layers=2, num_heads=4,
                           intermediate_size=128, max_position_embeddings=66,
                           hidden_dropout=0.0, attention_dropout=0.0)
  model = build(config, stream.layout)
  table = losses.TaskTable.build(stream.tasks, 64, 1000)
  tx = trainer.make_optimizer(1e-3, 2, 100)
  return model, table, tx, batches


def _run(setup, mesh_axes, steps=2, microbatches=1, devices=None):
  model, table, tx, batches = setup
  mesh = partitioning.make_mesh(mesh_axes, devices)
  abstract = state.abstract_state(model, mesh, tx)
  train_state = state.init_state(model, abstract, jax.random.key(0), tx)
  shardings = state.shardings(abstract)
  batch_sharding = NamedSharding(mesh, P(("data", "fsdp")))
  step_fn = jax.jit(trainer.make_train_step(model, tx, table, microbatches, seed=0),
                    in_shardings=(shardings, batch_sharding),
                    out_shardings=(shardings, shardings.step), donate_argnums=0)
  metrics = []
  with partitioning.use_mesh(mesh):
    for batch in batches[:steps]:
      train_state, m = step_fn(train_state, jax.device_put(batch, batch_sharding))
      metrics.append(float(m["loss_sum"]) / float(m["count"]))
  return train_state, metrics, step_fn


@pytest.mark.parametrize("mesh_axes", [{"data": 2, "fsdp": 4}, {"data": 8}])
def test_sharded_step_equals_single_device(setup, mesh_axes):
  single, single_losses, _ = _run(setup, {"data": 1}, devices=jax.devices()[:1])
  sharded, sharded_losses, _ = _run(setup, mesh_axes)
  np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-5)
  params = sharded.params
  kernel = (params["encoder_layers_0"]["mlp"]["fc1"]["kernel"] if "shared" in params
            else params["encoder"]["layers_0"]["mlp"]["intermediate"]["kernel"])
  if mesh_axes.get("fsdp"):
    assert kernel.sharding.spec[0] == "fsdp"  # Parameters really are sharded.
  for a, b in zip(jax.tree.leaves(sharded.params), jax.tree.leaves(single.params), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)


def test_step_compiles_once_over_changing_task_mixes(setup):
  batches = setup[3]
  mixes = {tuple(np.unique(b["seg_task"])) + tuple(np.bincount(b["seg_task"][b["seg_task"] >= 0]))
           for b in batches}
  assert len(mixes) == len(batches)  # Every step sees another mix of tasks.
  _, losses_seen, step_fn = _run(setup, {"data": 2, "fsdp": 4}, steps=4)
  assert step_fn._cache_size() == 1 and len(losses_seen) == 4


def test_gradient_accumulation_equals_one_big_batch(setup):
  whole, whole_losses, _ = _run(setup, {"fsdp": 2}, devices=jax.devices()[:2])
  accumulated, accumulated_losses, _ = _run(setup, {"fsdp": 2}, microbatches=4,
                                            devices=jax.devices()[:2])
  np.testing.assert_allclose(accumulated_losses, whole_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(accumulated.params), jax.tree.leaves(whole.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)
