"""muppet_jax: massive multi-task pre-finetuning (Muppet) of RoBERTa/BART in JAX/Flax."""

import os

# TensorFlow feeds the input pipeline only; its C++ info logs would bury the training log. Set
# here, before any module of the package imports TensorFlow (through seqio).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
