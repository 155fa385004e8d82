"""A SimCLR-style ResNet-v1 in TensorFlow with Keras-style names in creation order, random weights.

From the facts in REFERENCE.md and the issue: stem 7x7/2 conv (symmetric fixed padding) + BN + ReLU +
3x3/2 max-pool 'SAME'; bottleneck blocks with the stride on the 3x3 conv; a block's projection shortcut
(conv + BN) created before its first conv; BatchNorm eps 1e-5 in inference mode.
"""

import numpy as np

DEPTHS = {50: (3, 4, 6, 3)}


def build_variables(depth: int = 50, width: int = 1, seed: int = 0, scope: str = "base_model/"):
    """{name: array} in creation order, and the per-layer plan the forward pass follows."""
    rng = np.random.default_rng(seed)
    values, counters = {}, {"conv2d": 0, "batch_normalization": 0}

    def layer(kind):
        index = counters[kind]
        counters[kind] += 1
        return f"{scope}{kind}" + (f"_{index}" if index else "")

    def conv(k, cin, cout):
        name = layer("conv2d")
        values[f"{name}/kernel"] = rng.normal(
            0, (2 / (k * k * cin)) ** 0.5, (k, k, cin, cout)
        ).astype(np.float32)
        return name

    def bn(c):
        name = layer("batch_normalization")
        values[f"{name}/gamma"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        values[f"{name}/beta"] = rng.normal(0, 0.1, c).astype(np.float32)
        values[f"{name}/moving_mean"] = rng.normal(0, 0.1, c).astype(np.float32)
        values[f"{name}/moving_variance"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
        return name

    plan = {"stem": (conv(7, 3, 64 * width), bn(64 * width)), "blocks": []}
    cin = 64 * width
    for stage, blocks in enumerate(DEPTHS[depth]):
        mid = 64 * width * 2**stage
        for block in range(blocks):
            stride = 2 if block == 0 and stage > 0 else 1
            projection = (conv(1, cin, 4 * mid), bn(4 * mid)) if block == 0 else None
            layers = [
                (conv(1, cin, mid), bn(mid)),
                (conv(3, mid, mid), bn(mid)),
                (conv(1, mid, 4 * mid), bn(4 * mid)),
            ]
            plan["blocks"].append((stride, projection, layers))
            cin = 4 * mid
    return values, plan


def forward(tf, v, plan, x):
    """Final feature map (after the last ReLU), NHWC."""

    def conv(h, name, stride=1):
        kernel = v[f"{name}/kernel"]
        k = kernel.shape[0]
        if stride > 1:  # SimCLR's fixed padding: symmetric, independent of the input size
            total = k - 1
            h = tf.pad(
                h,
                [
                    [0, 0],
                    [total // 2, total - total // 2],
                    [total // 2, total - total // 2],
                    [0, 0],
                ],
            )
            return tf.nn.conv2d(h, kernel, stride, "VALID")
        return tf.nn.conv2d(h, kernel, 1, "SAME")

    def bn(h, name, relu=True):
        h = (h - v[f"{name}/moving_mean"]) * tf.math.rsqrt(v[f"{name}/moving_variance"] + 1e-5)
        h = h * v[f"{name}/gamma"] + v[f"{name}/beta"]
        return tf.nn.relu(h) if relu else h

    stem_conv, stem_bn = plan["stem"]
    h = bn(conv(x, stem_conv, 2), stem_bn)
    h = tf.nn.max_pool2d(h, 3, 2, "SAME")
    for stride, projection, layers in plan["blocks"]:
        shortcut = (
            bn(conv(h, projection[0], stride), projection[1], relu=False) if projection else h
        )
        y = h
        for i, (c, b) in enumerate(layers):
            y = bn(conv(y, c, stride if i == 1 else 1), b, relu=i < 2)
        h = tf.nn.relu(y + shortcut)
    return h


def save_checkpoint(prefix, values, extra: dict | None = None) -> str:
    """An object-based TF checkpoint (tf.train.Checkpoint) holding the variables; returns its prefix."""
    import tensorflow as tf

    variables = [
        tf.Variable(value, name=name) for name, value in {**values, **(extra or {})}.items()
    ]
    return tf.train.Checkpoint(vars=variables).write(str(prefix))
