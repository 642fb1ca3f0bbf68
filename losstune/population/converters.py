"""TensorFlow `pfor` converters that `tf.vectorized_map` lacks or maps by a loop over members: Conv2D and
Conv3D over per-member filters as grouped convolutions, and Bitcast.

Relies on TensorFlow private names (2.x) of `tensorflow.python.ops.parallel_for.pfor`: the converter
registry, `_create_op`, `wrap`, `_fallback_converter` and the `_PforInput` / `WrappedTensor` objects a
converter receives (tests/test_population_package.py and tests/test_population_layers.py check each). Where
one is missing, TensorFlow's own conversion stays.
"""

from __future__ import annotations


def install_converters():
    """Teach `tf.vectorized_map` to map, without a loop over members:

    - a Conv2D or Conv3D over per-member filters, as grouped convolutions. TensorFlow's own Conv2D converter
      wants the filter to be the same in every iteration, and it has none for Conv3D: either way it falls back
      to a loop over members (forward and backward). K members' filters (K, kh, kw, C, F) are one grouped
      convolution of the members' inputs laid side by side in the channels (B, H, W, K*C) with K groups, or,
      when all members see the same input (a first layer), one convolution with K*F output channels. Same
      arithmetic per output element as the members' own convolutions, and faster than the loop (figures in
      benchmarks/README.md). TensorFlow's CPU kernels have no grouped Conv3D: a Conv3D of per-member inputs is
      the sum over the kernel's depth taps of grouped Conv2Ds (each on the input's depth slices that tap
      reads), of a shared input one Conv3D with K*F output channels. For NHWC / NDHWC ops with per-member
      filters only; anything else is converted as before.
    - a Bitcast (Keras's `ops.argmax` calls `signbit`, a Bitcast: every "accuracy" metric has one): it
      reinterprets each element's bits, changing at most the trailing axes, so the stacked tensor is bitcast
      as it is.

    Installed once per process.
    """
    try:
        from tensorflow.python.ops.parallel_for import pfor as pfor_lib

        # TensorFlow private (2.x): `pfor._pfor_converter_registry` maps an op type to the converter
        # `vectorized_map` calls for it; an op type without an entry is converted by `_fallback_converter`
        # (a loop over iterations). Replacing or adding the entry is how a converter is installed.
        registry = pfor_lib._pfor_converter_registry
        # op type -> (our converter's factory, the conversion it hands the cases it does not map)
        mine = {"Conv2D": (_grouped_conv2d, registry["Conv2D"]),
                "Conv3D": (_grouped_conv3d, pfor_lib._fallback_converter)}
    except (ImportError, AttributeError, KeyError):  # another TensorFlow: keep its conversion
        return
    if "Bitcast" not in registry:  # a TensorFlow with its own Bitcast converter keeps it
        mine["Bitcast"] = (_bitcast, None)
    for op_type, (make, original) in mine.items():
        if getattr(registry.get(op_type), "losstune_converter", False):
            continue
        convert = make(pfor_lib, original)
        convert.losstune_converter = True
        registry[op_type] = convert


def _bitcast(pfor_lib, _original):
    import tensorflow as tf

    def convert(pfor_input):
        # TensorFlow private (2.x): `_PforInput.stacked_input(i)` and `.get_attr(name)`, as TensorFlow's own
        # converters (Cast) use them.
        return [pfor_lib.wrap(tf.bitcast(pfor_input.stacked_input(0), pfor_input.get_attr("type")), True)]

    return convert


def _unsupported(pfor_input, data_format):
    """TensorFlow private (2.x): a converter gets a `_PforInput` (`.op.node_def.attr`, `.inputs` of
    `WrappedTensor`s with `.t`, `.is_stacked`, `.is_sparse_stacked`, and `.outputs`)."""
    attrs = pfor_input.op.node_def.attr
    x_in, f_in = pfor_input.inputs[0], pfor_input.inputs[1]
    return not f_in.is_stacked or attrs["data_format"].s != data_format or x_in.is_sparse_stacked


def _wide_filters(tf, f):
    """Per-member filters (K, ..., C, F) as one filter (..., C, K*F), member-major output channels."""
    rank, shape = len(f.shape), tf.shape(f)
    f = tf.transpose(f, list(range(1, rank - 1)) + [0, rank - 1])
    return tf.reshape(f, tf.concat([shape[1:-1], [shape[0] * shape[-1]]], 0))


def _unstack_channels(tf, pfor_lib, y, f):
    """(B, ..., K*F) with member-major channels -> (K, B, ..., F), wrapped as stacked (per member); `f` the
    per-member filters (K, ..., F)."""
    shape, members = tf.shape(y), tf.shape(f)
    rank = len(y.shape)
    y = tf.reshape(y, tf.concat([shape[:-1], members[:1], members[-1:]], 0))
    # TensorFlow private (2.x): `pfor.wrap(tensor, is_stacked)` marks the result as stacked (per member).
    return [pfor_lib.wrap(tf.transpose(y, [rank - 1] + list(range(rank - 1)) + [rank]), True)]


def _side_by_side(tf, x):
    """Per-member inputs (K, B, ..., C) -> (B, ..., K*C), member-major channels."""
    rank, shape = len(x.shape), tf.shape(x)
    x = tf.transpose(x, list(range(1, rank - 1)) + [0, rank - 1])
    return tf.reshape(x, tf.concat([shape[1:-1], [shape[0] * shape[-1]]], 0))


def _grouped_conv2d(pfor_lib, original):
    import tensorflow as tf

    def convert(pfor_input):
        if _unsupported(pfor_input, b"NHWC"):
            return original(pfor_input)
        x_in, f = pfor_input.inputs[0], pfor_input.inputs[1].t  # filters (K, kh, kw, C, F)
        x = _side_by_side(tf, x_in.t) if x_in.is_stacked else x_in.t
        # TensorFlow private (2.x): `pfor._create_op(op_type, inputs, op_dtypes, attrs=)` creates the op with
        # the original's attributes (strides, padding, dilations) inside the converted graph.
        y = pfor_lib._create_op("Conv2D", [x, _wide_filters(tf, f)], [pfor_input.outputs[0].dtype],
                                attrs=pfor_input.op.node_def.attr).outputs[0]
        return _unstack_channels(tf, pfor_lib, y, f)

    return convert


def _grouped_conv3d(pfor_lib, original):
    import tensorflow as tf

    def convert(pfor_input):
        if _unsupported(pfor_input, b"NDHWC") or None in pfor_input.inputs[1].t.shape:
            return original(pfor_input, root_cause="losstune maps NDHWC Conv3D with per-member filters only",
                            warn=True)
        x_in, f = pfor_input.inputs[0], pfor_input.inputs[1].t  # filters (K, kd, kh, kw, C, F)
        attrs = pfor_input.op.node_def.attr
        if not x_in.is_stacked:
            y = pfor_lib._create_op("Conv3D", [x_in.t, _wide_filters(tf, f)], [pfor_input.outputs[0].dtype],
                                    attrs=attrs).outputs[0]
            return _unstack_channels(tf, pfor_lib, y, f)
        x = x_in.t  # (K, B, D, H, W, C)
        if x.shape[2] is None:
            return original(pfor_input, root_cause="an input depth unknown when traced", warn=True)
        stride, dilation = list(attrs["strides"].list.i), list(attrs["dilations"].list.i)
        padding = attrs["padding"].s.decode()
        x, depth = _depth_valid(tf, x, f.shape[1], stride[1], dilation[1], padding)
        shape = tf.shape(x)
        y = 0
        for tap in range(f.shape[1]):  # the depth slices this tap of the kernel reads, one grouped Conv2D
            start = tap * dilation[1]
            planes = x[:, :, start:start + (depth - 1) * stride[1] + 1:stride[1]]  # (K, B, depth, H, W, C)
            planes = tf.reshape(planes, tf.concat([[shape[0], shape[1] * depth], shape[3:]], 0))
            y += tf.nn.conv2d(_side_by_side(tf, planes), _wide_filters(tf, f[:, tap]), strides=stride[2:4],
                              padding=padding, dilations=dilation[2:4])
        out = tf.shape(y)  # (B * depth, H', W', K*F)
        y = tf.reshape(y, tf.concat([[shape[1], depth], out[1:]], 0))
        return _unstack_channels(tf, pfor_lib, y, f)

    return convert


def _depth_valid(tf, x, taps, stride, dilation, padding):
    """`x` (K, B, D, ...) padded in depth as the Conv3D's padding would, and the output depth: after this the
    depth taps read valid slices only."""
    size = x.shape[2]
    span = (taps - 1) * dilation + 1
    if padding != "SAME":
        return x, (size - span) // stride + 1
    depth = -(-size // stride)
    total = max((depth - 1) * stride + span - size, 0)
    pad = [[0, 0]] * len(x.shape)
    pad[2] = [total // 2, total - total // 2]
    return tf.pad(x, pad), depth
