"""`model.scan_layers`: one nn.scan over the layers gives the loop's outputs and gradients with
the same parameters stacked; the layouts convert both ways; a scanned run's checkpoint exports
and reloads in Hugging Face's layout."""

import jax
import numpy as np
import pytest

from muppet_jax import checkpointing, losses, partitioning, progress, state, trainer
from muppet_jax.data.batching import MixtureStream, StreamConfig
from muppet_jax.errors import UserError
from muppet_jax.models import scan_layout
from muppet_jax.models.config import BartConfig, EncoderConfig
from muppet_jax.models.layers import init_variables
from muppet_jax.models.multitask import build

pytestmark = pytest.mark.slow  # Scheduled first (conftest.py).


@pytest.fixture(scope="module", params=["roberta", "bart"])
def setup(request):
  bart = request.param == "bart"
  with MixtureStream(StreamConfig("muppet_demo", batch_size=4, max_length=64,
                                  target_length=24, max_segments=8,
                                  exclude_families=() if bart else ("summarization",))) as s:
    batch = next(s)
  if bart:
    config = BartConfig(vocab_size=1000, hidden_size=32, encoder_layers=2, decoder_layers=3,
                        encoder_heads=4, decoder_heads=4, encoder_ffn_size=64,
                        decoder_ffn_size=64, max_position_embeddings=64)
  else:
    config = EncoderConfig(vocab_size=1000, hidden_size=32, num_layers=3, num_heads=4,
                           intermediate_size=64, max_position_embeddings=66)
  return config, s.layout, losses.TaskTable.build(s.tasks, 64, 1000), batch


def _params(model):
  return jax.tree.map(lambda x: x.unbox(), init_variables(model, jax.random.key(0)),
                      is_leaf=lambda x: hasattr(x, "unbox"))["params"]


def test_scanned_layers_equal_the_loop(setup):
  config, layout, table, batch = setup
  loop, scanned = build(config, layout), build(config.replace(scan_layers=True), layout)
  params = _params(loop)
  stacked = scan_layout.match(params, scanned.config)
  assert jax.tree.structure(stacked) == jax.tree.structure(_params(scanned))
  back = scan_layout.match(stacked, loop.config)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params), strict=True):
    np.testing.assert_array_equal(a, b)

  def loss(model):
    def f(p):
      sums = losses.loss_sums(trainer.forward(model, p, batch, True), batch, table)
      return sums["loss_sum"] / sums["count"]
    return jax.jit(jax.value_and_grad(f))

  (a, grad_a), (b, grad_b) = loss(loop)(params), loss(scanned)(stacked)
  np.testing.assert_allclose(b, a, rtol=1e-5)
  grad_b = scan_layout.match(grad_b, loop.config)
  for x, y in zip(jax.tree.leaves(grad_b), jax.tree.leaves(grad_a), strict=True):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-7)


def test_the_scan_compiles_one_layer_body(setup):
  """The scanned program traces each kind of layer once, not once per layer."""
  config, layout, _, batch = setup
  counts = []
  for scan in (False, True):
    model = build(config.replace(scan_layers=scan), layout)
    params = _params(model)
    text = str(jax.make_jaxpr(lambda p, m=model: trainer.forward(m, p, batch, True))(params))
    counts.append(text.count("dot_general"))
  assert counts[1] < counts[0]


def test_step_flops_count_every_layer_of_a_scanned_model(setup):
  config, layout, table, batch = setup
  mesh = partitioning.make_mesh({"data": 1}, jax.devices()[:1])
  tx = trainer.make_optimizer(1e-3, 2, 100)

  def make_step(network):
    return trainer.make_train_step(network, tx, table, 1, 0)

  def compiled(scan):
    model = build(config.replace(scan_layers=scan), layout)
    step = trainer.compile_train_step(make_step(model), state.abstract_state(model, mesh, tx),
                                      batch, len(batch["input_ids"]), mesh)
    return model, progress.compiled_flops(step)
  (_, loop_flops), (scanned, scanned_flops) = compiled(False), compiled(True)
  assert scanned_flops < 0.8 * loop_flops  # XLA counts the scanned body once...
  counted = trainer.step_flops(make_step, scanned, tx, batch, len(batch["input_ids"]), mesh)
  # ...the model's FLOPs count them all (from the lowered, not the optimized program: a few %
  # apart at this size, 0.6% for roberta-large).
  assert counted == pytest.approx(loop_flops, rel=0.12)


def test_a_checkpoint_in_the_other_layout_names_the_setting_to_resume_with():
  loop = {"encoder": {"layers_0": {"w": np.zeros(2)}, "layers_1": {"w": np.zeros(2)}}}
  scanned = {"encoder": {"layers": {"stack": {"layer": {"w": np.zeros((2, 2))}}}}}
  with pytest.raises(UserError, match="saved with model.scan_layers=true: resume with that"):
    checkpointing.check_shapes(scanned, loop, "step 4")
  with pytest.raises(UserError, match="saved with model.scan_layers=false"):
    checkpointing.check_shapes(loop, scanned, "step 4")
