"""Multiply-accumulates of an ONNX classifier, counted from its graph (what was exported, not the PyTorch module).

Only the layers that carry nearly all of a CNN's arithmetic are counted, from their shapes after
``onnx.shape_inference`` with every symbolic input dimension set to 1 (so the count is per image at batch 1):

* ``Conv`` / ``ConvInteger`` / ``QLinearConv``: output ``Y [N, C_out, *S_out]``, weight ``W [C_out, C_in/g, *K]``:
  ``MACs = prod(Y.shape) * prod(W.shape[1:])`` (``C_in/g * prod(K)`` per output element; groups included).
* ``ConvTranspose``: input ``X [N, C_in, *S_in]``, weight ``W [C_in, C_out/g, *K]``:
  ``MACs = prod(X.shape) * prod(W.shape[1:])``.
* ``Gemm``: ``A [M, K]`` (``[K, M]`` with ``transA``), output ``[M, N]``: ``MACs = prod(Y.shape) * K``.
* ``MatMul`` / ``MatMulInteger`` / ``QLinearMatMul``: ``A [..., M, K]``, output ``[..., M, N]``:
  ``MACs = prod(Y.shape) * K``.

Element-wise layers (BatchNorm, activations, pooling, QDQ pairs) are not counted, as in the usual FLOPs tables;
``FLOPs = 2 * MACs``. An int8 QDQ graph keeps its Conv/Gemm nodes (their inputs come through DequantizeLinear), so
it counts the same MACs as its fp32 source.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

__all__ = ["onnx_macs", "MAC_OPS"]

# op type -> (index of the input whose shape gives the reduction, how to read it)
MAC_OPS = ("Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "Gemm", "MatMul", "MatMulInteger", "QLinearMatMul")
_WEIGHT_INPUT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1}
_A_INPUT = {"MatMul": 0, "MatMulInteger": 0, "QLinearMatMul": 0, "Gemm": 0}


def _prod(xs: Sequence[int]) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def _batch_one(model):
    """A copy of ``model`` whose graph inputs have every symbolic (or unknown) dimension set to 1."""
    m = copy.deepcopy(model)
    inits = {i.name for i in m.graph.initializer}
    for inp in m.graph.input:
        if inp.name in inits or not inp.type.HasField("tensor_type"):
            continue
        for d in inp.type.tensor_type.shape.dim:
            if not d.HasField("dim_value") or d.dim_value <= 0:
                d.Clear()
                d.dim_value = 1
    return m


def _shapes(model) -> Dict[str, List[int]]:
    """``{tensor name: static shape}`` of every tensor whose shape is fully known after shape inference."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    out: Dict[str, List[int]] = {}
    g = inferred.graph
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        if not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            continue
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            out[vi.name] = [int(d.dim_value) for d in dims]
    for init in g.initializer:
        out[init.name] = [int(d) for d in init.dims]
    for node in g.node:  # Constant nodes: their value's dims
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.HasField("t"):
                    out[node.output[0]] = [int(d) for d in a.t.dims]
    return out


def onnx_macs(model: Union[str, Path, "object"]) -> int:
    """Multiply-accumulates of one image (batch 1) through ``model`` (an ``onnx.ModelProto`` or a file path).

    Args:
        model: the ONNX model (``[N, 3, S, S] -> [N, C]`` for a pand bundle; any symbolic dimension counts as 1).

    Returns:
        The MACs of every node in :data:`MAC_OPS` (module docstring for the formulas); ``FLOPs = 2 * MACs``.

    Raises:
        ValueError: a counted node whose input or output shape shape inference could not resolve (names the node).
    """
    import onnx

    if isinstance(model, (str, Path)):
        model = onnx.load(str(model), load_external_data=False)
    model = _batch_one(model)
    shapes = _shapes(model)
    total = 0
    for node in model.graph.node:
        op = node.op_type
        if op not in MAC_OPS:
            continue

        def shape(name: str) -> List[int]:
            s: Optional[List[int]] = shapes.get(name)
            if s is None:
                raise ValueError(f"ONNX node {node.name or op} ({op}): the shape of '{name}' is unknown after shape "
                                 f"inference; cannot count its MACs")
            return s

        if op == "ConvTranspose":
            total += _prod(shape(node.input[0])) * _prod(shape(node.input[1])[1:])
        elif op in _WEIGHT_INPUT:
            total += _prod(shape(node.output[0])) * _prod(shape(node.input[_WEIGHT_INPUT[op]])[1:])
        elif op == "Gemm":
            a = shape(node.input[0])
            trans_a = next((int(x.i) for x in node.attribute if x.name == "transA"), 0)
            total += _prod(shape(node.output[0])) * int(a[0] if trans_a else a[-1])
        else:  # MatMul family: K is A's last dimension (A 1-D: its only one)
            a = shape(node.input[_A_INPUT[op]])
            total += _prod(shape(node.output[0])) * int(a[-1])
    return int(total)
