"""Build BiT ResNet-v2 SavedModels with TensorFlow, in BiT variable naming, with random weights.

Written for the tests from the architecture facts in REFERENCE.md: pre-activation bottleneck units,
GroupNorm (32 groups, eps 1e-5), weight-standardised convolutions, root 7x7/2 conv + pad 1 + 3x3/2
max-pool, final GroupNorm + ReLU. The SavedModel returns the final feature map (NHWC), as REMEDIS's
modules do; `scale_inputs` adds the [0, 1] -> [-1, 1] step inside the model.
"""

import numpy as np

DEPTHS = {50: (3, 4, 6, 3)}


def bit_variable_specs(depth: int = 50, width: int = 1, prefix: str = "resnet/"):
    """(name, shape, kind) of every backbone variable, in creation order."""
    specs = [(f"{prefix}root_block/standardized_conv2d/kernel", (7, 7, 3, 64 * width), "conv")]
    cin = 64 * width
    for block, units in enumerate(DEPTHS[depth], start=1):
        cout = 256 * width * 2 ** (block - 1)
        mid = cout // 4
        for unit in range(1, units + 1):
            scope = f"{prefix}block{block}/unit{unit:02d}/"
            specs += [
                (scope + "a/group_norm/gamma", (cin,), "gamma"),
                (scope + "a/group_norm/beta", (cin,), "beta"),
            ]
            if unit == 1:
                specs.append(
                    (scope + "a/proj/standardized_conv2d/kernel", (1, 1, cin, cout), "conv")
                )
            specs += [
                (scope + "a/standardized_conv2d/kernel", (1, 1, cin, mid), "conv"),
                (scope + "b/group_norm/gamma", (mid,), "gamma"),
                (scope + "b/group_norm/beta", (mid,), "beta"),
                (scope + "b/standardized_conv2d/kernel", (3, 3, mid, mid), "conv"),
                (scope + "c/group_norm/gamma", (mid,), "gamma"),
                (scope + "c/group_norm/beta", (mid,), "beta"),
                (scope + "c/standardized_conv2d/kernel", (1, 1, mid, cout), "conv"),
            ]
            cin = cout
    specs += [
        (f"{prefix}group_norm/gamma", (cin,), "gamma"),
        (f"{prefix}group_norm/beta", (cin,), "beta"),
    ]
    return specs


def random_values(specs, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights with GroupNorm parameters away from 1/0, so swaps would show."""
    rng = np.random.default_rng(seed)
    values = {}
    for name, shape, kind in specs:
        if kind == "conv":
            values[name] = rng.normal(0, 1, shape).astype(np.float32)
        elif kind == "gamma":
            values[name] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        else:
            values[name] = rng.normal(0, 0.2, shape).astype(np.float32)
    return values


def bit_forward(
    tf, v, x, prefix: str = "resnet/", depth: int = 50, scale_inputs: bool = False, input_scale=None
):
    """The BiT forward pass in TensorFlow ops; `v` maps a variable name to its variable."""

    def std_conv(h, name, stride=1, pad=0):
        w = v[name]
        mean, var = tf.nn.moments(w, axes=[0, 1, 2], keepdims=True)
        w = (w - mean) / tf.sqrt(var + 1e-10)
        if pad:
            h = tf.pad(h, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        return tf.nn.conv2d(h, w, strides=stride, padding="VALID")

    def gn_relu(h, scope):
        n, hh, ww, _ = tf.unstack(tf.shape(h))
        groups = 32
        g = tf.reshape(h, [n, hh, ww, groups, h.shape[-1] // groups])
        mean, var = tf.nn.moments(g, axes=[1, 2, 4], keepdims=True)
        g = (g - mean) * tf.math.rsqrt(var + 1e-5)
        h = tf.reshape(g, [n, hh, ww, h.shape[-1]])
        return tf.nn.relu(h * v[scope + "group_norm/gamma"] + v[scope + "group_norm/beta"])

    if scale_inputs:
        x = x * 2.0 - 1.0
    if input_scale is not None:  # any other affine step, x * a + b
        x = x * input_scale[0] + input_scale[1]
    h = std_conv(x, f"{prefix}root_block/standardized_conv2d/kernel", stride=2, pad=3)
    h = tf.pad(h, [[0, 0], [1, 1], [1, 1], [0, 0]])
    h = tf.nn.max_pool2d(h, 3, 2, "VALID")
    for block, units in enumerate(DEPTHS[depth], start=1):
        for unit in range(1, units + 1):
            scope = f"{prefix}block{block}/unit{unit:02d}/"
            stride = 2 if unit == 1 and block > 1 else 1
            pre = gn_relu(h, scope + "a/")
            shortcut = h
            if unit == 1:
                shortcut = std_conv(pre, scope + "a/proj/standardized_conv2d/kernel", stride=stride)
            y = std_conv(pre, scope + "a/standardized_conv2d/kernel")
            y = std_conv(
                gn_relu(y, scope + "b/"), scope + "b/standardized_conv2d/kernel", stride, 1
            )
            y = std_conv(gn_relu(y, scope + "c/"), scope + "c/standardized_conv2d/kernel")
            h = y + shortcut
    return gn_relu(h, prefix)


def save_object_based(
    path, values, scale_inputs=False, extra: dict | None = None, input_scale=None
):
    """tf.saved_model.save of a tf.Module holding the variables in a list (object-path keys)."""
    import tensorflow as tf

    class Bit(tf.Module):
        def __init__(self):
            super().__init__(name=None)
            self.vars = [
                tf.Variable(value, name=name) for name, value in {**values, **(extra or {})}.items()
            ]
            self.by_name = {var.name.split(":")[0]: var for var in self.vars}

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def __call__(self, x):
            return bit_forward(
                tf, self.by_name, x, scale_inputs=scale_inputs, input_scale=input_scale
            )

    module = Bit()
    tf.saved_model.save(module, str(path))
    return module


def save_graph_based(path, values, scale_inputs=False, scope_prefix: str = "module/"):
    """A TF1-style SavedModel (graph + Builder), variables keyed by name under `scope_prefix`."""
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [None, None, None, 3], name="images")
        variables = {}
        for name, value in values.items():
            variables[name] = v1.get_variable(scope_prefix + name, initializer=value)
        prefixed = {name: var for name, var in variables.items()}
        out = bit_forward(tf, prefixed, x, scale_inputs=scale_inputs)
        momentum = v1.get_variable(
            scope_prefix + "resnet/root_block/standardized_conv2d/kernel/Momentum",
            initializer=np.zeros((7, 7, 3, 64), np.float32),
        )
        del momentum
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(path))
            signature = v1.saved_model.predict_signature_def({"images": x}, {"features": out})
            builder.add_meta_graph_and_variables(
                sess, ["serve"], signature_def_map={"serving_default": signature}
            )
            builder.save()
