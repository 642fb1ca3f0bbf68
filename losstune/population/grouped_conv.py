"""A TensorFlow `pfor` converter that maps a Conv2D over per-member filters as one grouped convolution.

Relies on TensorFlow private names (2.x) of `tensorflow.python.ops.parallel_for.pfor`: the converter
registry, `_create_op`, `wrap` and the `_PforInput` / `WrappedTensor` objects a converter receives
(tests/test_population_package.py checks each). Where one is missing, TensorFlow's own converter stays.
"""

from __future__ import annotations


def install_grouped_conv2d():
    """Teach `tf.vectorized_map` to map a Conv2D over per-member filters as one grouped convolution.

    TensorFlow's own converter wants the filter to be the same in every iteration and otherwise falls back
    to a loop over members (forward and backward). K members' filters (K, kh, kw, C, F) are one grouped
    convolution of the members' inputs laid side by side in the channels (B, H, W, K*C) with K groups, or,
    when all members see the same input (a first layer), one convolution with K*F output channels. Same
    arithmetic per output element as the members' own convolutions, and faster than the loop (figures in
    benchmarks/README.md). Installed once per process, for NHWC Conv2D ops only; anything else goes to
    TensorFlow's converter as before.
    """
    try:
        from tensorflow.python.ops.parallel_for import pfor as pfor_lib

        # TensorFlow private (2.x): `pfor._pfor_converter_registry` maps an op type to the converter
        # `vectorized_map` calls for it; replacing the "Conv2D" entry is how this converter is installed.
        registry = pfor_lib._pfor_converter_registry
        original = registry["Conv2D"]
    except (ImportError, AttributeError, KeyError):  # another TensorFlow: keep its converter
        return
    if getattr(original, "losstune_grouped", False):
        return
    convert = _grouped_converter(pfor_lib, original)
    convert.losstune_grouped = True
    registry["Conv2D"] = convert


def _grouped_converter(pfor_lib, original):
    import tensorflow as tf

    def convert(pfor_input):
        # TensorFlow private (2.x): a converter gets a `_PforInput` (`.op.node_def.attr`, `.inputs` of
        # `WrappedTensor`s with `.t`, `.is_stacked`, `.is_sparse_stacked`, and `.outputs`).
        attrs = pfor_input.op.node_def.attr
        x_in, f_in = pfor_input.inputs[0], pfor_input.inputs[1]
        if not f_in.is_stacked or attrs["data_format"].s != b"NHWC" or x_in.is_sparse_stacked:
            return original(pfor_input)
        f = f_in.t  # (K, kh, kw, C, F)
        k, kh, kw, c, out = (tf.shape(f)[i] for i in range(5))
        filters = tf.reshape(tf.transpose(f, [1, 2, 3, 0, 4]), tf.stack([kh, kw, c, k * out]))
        x = x_in.t
        if x_in.is_stacked:  # (K, B, H, W, C) -> (B, H, W, K*C), member-major channels
            shape = tf.shape(x)
            x = tf.reshape(tf.transpose(x, [1, 2, 3, 0, 4]), tf.stack([shape[1], shape[2], shape[3], k * c]))
        # TensorFlow private (2.x): `pfor._create_op(op_type, inputs, op_dtypes, attrs=)` creates the op with
        # the original's attributes (strides, padding, dilations) inside the converted graph.
        y = pfor_lib._create_op("Conv2D", [x, filters], [pfor_input.outputs[0].dtype], attrs=attrs).outputs[0]
        shape = tf.shape(y)
        y = tf.reshape(y, tf.stack([shape[0], shape[1], shape[2], k, out]))
        # TensorFlow private (2.x): `pfor.wrap(tensor, is_stacked)` marks the result as stacked (per member).
        return [pfor_lib.wrap(tf.transpose(y, [3, 0, 1, 2, 4]), True)]

    return convert
