"""The ONNX graph an export is writing: nodes and constants under unique names, and its limits.

`Graph` is what `onnx_export` assembles and what the fold-model writers (`onnx_trees`,
`onnx_linear`) write into; it lives on its own so that they share it without importing one
another. A writer raises `NotConvertible` when the model holds something the graph could not
reproduce, and `onnx_export.export` reports its message as the reason there is no graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = {"": 17, "ai.onnx.ml": 3}
ML_DOMAIN = "ai.onnx.ml"
MAX_TREE_NODES = 5_000_000  # a few hundred MB of graph; a larger model is served as it is


class NotConvertible(Exception):
    """The model holds something the graph could not reproduce; the message says what."""


class Graph:
    """Nodes and constants of the graph being written, with unique tensor names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[TensorProto] = []
        self.tree_nodes = 0
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: Any, hint: str = "const") -> str:
        array = np.asarray(value)
        name = self.name(hint)
        self.initializers.append(
            numpy_helper.from_array(
                array.astype(object) if array.dtype.kind == "U" else array, name
            )
        )
        return name

    def op(
        self, op_type: str, *inputs: str, domain: str = "", output: str | None = None, **attrs: Any
    ) -> str:
        output = output or self.name(op_type.lower())
        node = helper.make_node(op_type, list(inputs), [output], self.name(op_type), **attrs)
        node.domain = domain
        self.nodes.append(node)
        return output

    def add_tree_nodes(self, count: int) -> None:
        """Count tree nodes before writing them: a huge forest is refused, not serialized."""
        self.tree_nodes += count
        if self.tree_nodes > MAX_TREE_NODES:
            raise NotConvertible(
                f"the ensemble has more than {MAX_TREE_NODES:,} tree nodes, too many for a graph"
            )
