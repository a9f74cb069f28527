"""Mesh construction, the rules table, the abstract train state's shardings and sharded
initialization on 8 fake CPU devices."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from muppet_jax import partitioning, pretrained, state, trainer
from muppet_jax.errors import UserError
from muppet_jax.families import HeadLayout
from muppet_jax.models import EncoderForMaskedLM, roberta_config
from muppet_jax.models.layers import init_variables
from muppet_jax.models.multitask import MultiTaskEncoder
from tests import hf_fixtures


def test_eight_fake_devices():
  assert jax.device_count() == 8


@pytest.mark.parametrize("sizes,expected", [
    ({"data": -1}, (8, 1, 1)),
    ({"data": 2, "fsdp": -1}, (2, 4, 1)),
    ({"data": 2, "fsdp": 2, "tensor": 2}, (2, 2, 2)),
    ({"fsdp": 8}, (1, 8, 1)),
])
def test_mesh_shape_fills_the_rest(sizes, expected):
  assert partitioning.mesh_shape(sizes, 8) == expected
  assert tuple(partitioning.make_mesh(sizes).shape.values()) == expected


@pytest.mark.parametrize("sizes,match", [
    ({"fsdp": 3, "data": -1}, "do not divide the 8"),
    ({"fsdp": 4}, "needs 4 devices but 8"),
    ({"fsdp": -1, "data": -1}, "at most one axis"),
    ({"model": 8}, "unknown mesh axes"),
])
def test_mesh_errors_name_the_problem(sizes, match):
  with pytest.raises(UserError, match=match):
    partitioning.make_mesh(sizes)


def test_non_dividing_dimensions_are_replicated():
  mesh = partitioning.make_mesh({"fsdp": 4, "tensor": 2})
  abstract = {"a": jax.ShapeDtypeStruct((50265, 768), jnp.float32),
              "b": jax.ShapeDtypeStruct((50266, 768), jnp.float32)}
  specs = {"a": P("vocab", "embed"), "b": P("vocab", "embed")}
  shardings = partitioning.logical_to_mesh_sharding(specs, abstract, mesh)
  assert shardings["a"].spec == P(None, "fsdp")
  assert shardings["b"].spec == P("tensor", "fsdp")


def test_sharded_init_puts_an_eighth_of_every_large_kernel_on_each_device():
  config = roberta_config("tiny")
  model = EncoderForMaskedLM(config)
  mesh = partitioning.make_mesh({"fsdp": 8})
  params = state.init_state(model, state.abstract_state(model, mesh), jax.random.key(0)).params
  large = {path: x for path, x in jax.tree_util.tree_leaves_with_path(params)
           if x.ndim >= 2 and x.size >= 4096}
  assert len(large) == 2 + 4 * 2 + 2 * 2 + 1  # word/position embeddings, qkvo, mlp, head dense.
  for path, x in large.items():
    shards = x.addressable_shards
    assert len(shards) == 8, path
    assert all(s.data.size * 8 == x.size for s in shards), (path, x.sharding)
  # Sharded creation computes the same values as a plain, unsharded init (up to fusion rounding).
  plain = nn.meta.unbox(init_variables(model, jax.random.key(0)))["params"]
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(plain), strict=True):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-8)


def test_optimizer_state_is_sharded_like_its_parameters():
  """AdamW's moments get exactly their parameter's sharding (from the logical names, not from a
  match of shapes), its counts are replicated, and the tree is optax's own."""
  layout = HeadLayout(("a", "choice"), ("classification", "multiple_choice"), 3)
  model = MultiTaskEncoder(roberta_config("tiny"), layout)
  tx = trainer.make_optimizer(1e-3, 2, 10)
  mesh = partitioning.make_mesh({"data": 2, "fsdp": 4})
  abstract = state.abstract_state(model, mesh, tx)
  assert (jax.tree.structure(abstract.opt_state)
          == jax.tree.structure(jax.eval_shape(tx.init, abstract.params)))
  adam = abstract.opt_state.inner_states["train"].inner_state[1][0]
  params = {jax.tree_util.keystr(k): x
            for k, x in jax.tree_util.tree_leaves_with_path(abstract.params)}
  trained = [k for k in params if not k.startswith("['mlm_head']")]  # The MLM head is frozen.
  for moments in (adam.mu, adam.nu):
    leaves = jax.tree_util.tree_leaves_with_path(moments)
    assert sorted(jax.tree_util.keystr(k) for k, _ in leaves) == sorted(trained)
    for path, moment in leaves:
      param = params[jax.tree_util.keystr(path)]
      assert moment.shape == param.shape and moment.sharding == param.sharding
  assert adam.count.sharding.spec == P()
  kernel = abstract.params["encoder"]["layers_0"]["attention"]["query"]["kernel"]
  assert kernel.sharding.spec[0] == "fsdp"  # Really sharded.
  # Every leaf of the fresh state lands where the abstract state says.
  fresh = state.init_state(model, abstract, jax.random.key(0), tx)
  for a, x in zip(jax.tree.leaves(abstract), jax.tree.leaves(fresh), strict=True):
    assert x.sharding == a.sharding and x.shape == a.shape


def test_sharded_forward_equals_single_device(tmp_path):
  hf_fixtures.save_tiny_mlm("roberta", tmp_path)
  # Four rows, so that the batch divides over data * fsdp.
  ids, mask, _ = (jnp.asarray(np.concatenate([t.numpy(), t.numpy()[:1]]))
                  for t in hf_fixtures.padded_batch("roberta"))
  single_mesh = partitioning.make_mesh({"fsdp": 1}, jax.devices()[:1])
  single = pretrained.from_hf(str(tmp_path), mesh=single_mesh)
  model = EncoderForMaskedLM(single.config)
  expected = model.apply({"params": single.params}, ids, attention_mask=mask).logits

  mesh = partitioning.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  sharded = pretrained.from_hf(str(tmp_path), mesh=mesh)
  kernel = sharded.params["encoder"]["layers_0"]["mlp"]["intermediate"]["kernel"]
  assert kernel.sharding.spec == P("fsdp", None)  # 37 mlp features don't divide over tensor=2.
  query = sharded.params["encoder"]["layers_0"]["attention"]["query"]["kernel"]
  assert query.sharding.spec == P("fsdp", "tensor", None)
  batch = jax.device_put((ids, mask), jax.sharding.NamedSharding(mesh, P(("data", "fsdp"))))
  forward = jax.jit(lambda p, i, m: model.apply({"params": p}, i, attention_mask=m).logits)
  with partitioning.use_mesh(mesh):
    # The activations' logical constraints are in the compiled program ...
    hlo = forward.lower(sharded.params, *batch).as_text()
    got = forward(sharded.params, *batch)
  # Per layer: query, key, value, attention output, mlp, layer output; plus embeddings and logits.
  assert hlo.count("sharding_constraint") >= 6 * single.config.num_layers + 2
  # ... and the logits come out sharded over batch and (vocab 99 doesn't divide) nothing else.
  assert got.sharding.spec[0] == ("data", "fsdp")
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("param_dtype", ["float32", "bfloat16"])
def test_every_parameter_has_logical_names_from_the_rules_table(param_dtype):
  model = EncoderForMaskedLM(roberta_config("tiny", param_dtype=param_dtype))
  boxed = jax.eval_shape(lambda r: init_variables(model, r), jax.random.key(0))["params"]
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  known = {name for name, _ in partitioning.LOGICAL_AXIS_RULES}
  assert len(leaves) == 5 + 16 * 2 + 5
  for leaf in leaves:
    assert isinstance(leaf, nn.Partitioned), leaf
    assert len(leaf.names) == leaf.value.ndim and set(leaf.names) <= known, leaf.names
    assert leaf.value.dtype == jnp.dtype(param_dtype)


def test_every_bart_parameter_has_logical_names_from_the_rules_table():
  from muppet_jax.models import bart
  from muppet_jax.models.config import bart_config
  model = bart.Bart(bart_config("tiny"))
  boxed = jax.eval_shape(lambda r: init_variables(model, r), jax.random.key(0))["params"]
  leaves = jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  known = {name for name, _ in partitioning.LOGICAL_AXIS_RULES}
  # shared + final_logits_bias, 2 x (positions + LayerNorm), 16 per encoder layer, 26 per
  # decoder layer (cross-attention and its LayerNorm).
  assert len(leaves) == 2 + 2 * 3 + 2 * 16 + 2 * 26
  for leaf in leaves:
    assert isinstance(leaf, nn.Partitioned), leaf
    assert len(leaf.names) == leaf.value.ndim, leaf.names
    # Only final_logits_bias's leading axis of size 1 (kept for Hugging Face's shape) is unnamed.
    assert all(name in known or (name is None and size == 1)
               for name, size in zip(leaf.names, leaf.value.shape)), leaf.names
