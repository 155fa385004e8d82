"""Models Genesis corruptions (REFERENCE.md section 3), batched: one small module per transform.

Each transform has `sample(shape, generator) -> params` (per-sample random parameters, drawn on the
CPU from a seeded generator so that a resumed run draws the same; only the samples that draw a
transform get parameters for it) and `apply(x, params)` (deterministic given the parameters, on
whatever device `x` is; the in-place variants `apply_` / `shuffle_into` are what `corrupt` chains),
for 2D (B, C, H, W) and 3D (B, C, X, Y, Z) batches in [0, 1]. `bench/genesis.py` measures them
against the original algorithm.
"""
