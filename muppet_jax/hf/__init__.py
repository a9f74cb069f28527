"""Hugging Face checkpoints: reading and writing their files, and weight name maps per model."""
