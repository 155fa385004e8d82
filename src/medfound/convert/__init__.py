"""Readers of foreign checkpoints (TensorFlow SavedModels, SimCLR, Genesis) -> medfound weights."""
