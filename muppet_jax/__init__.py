"""muppet_jax: massive multi-task pre-finetuning (Muppet) of RoBERTa/BART in JAX/Flax."""

__version__ = "0.1.0"
