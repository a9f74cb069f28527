"""Muppet's seqio tasks and mixtures; importing this package registers them.

- `tasks.demo`: the offline demo suite (`demo_*`, mixture `muppet_demo`).
- `tasks.catalog`: the 46 datasets of the paper's catalog, from TFDS (or local files).
- `tasks.mixtures`: `muppet_roberta`, `muppet_bart`, per-family and task-count mixtures.
- Your own tasks: a tasks file (`muppet_jax.data.tasks_file`), or `muppet_jax.data.local_files`.
"""

from tasks import catalog, demo, mixtures  # noqa: F401  (registration)
