"""Muppet mixtures: rates proportional to train-split size by default."""

from __future__ import annotations

from muppet_jax.data import mixing
from tasks import demo as demo_tasks

mixing.add_mixture("muppet_demo", list(demo_tasks.demo.DEMO_TASKS))
