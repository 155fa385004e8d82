"""Pretraining methods: one small module each (views or corruptions, loss, heads); no devices or DDP."""
