"""Models Genesis corruptions (REFERENCE.md section 3), batched: one small module per transform.

Each transform has `sample(shape, generator) -> params` (per-sample random parameters, drawn on the
CPU from a seeded generator so that a resumed run draws the same) and `apply(x, params)` (deterministic,
on whatever device `x` is), for 2D (B, C, H, W) and 3D (B, C, X, Y, Z) batches in [0, 1].
"""
