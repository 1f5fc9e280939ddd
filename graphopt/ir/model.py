"""The model around the main graph: opsets, functions, metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from graphopt.ir.graph import Attr, Graph


@dataclass
class Function:
    """A model-local function; its body is an IR graph with untyped inputs and outputs."""

    name: str
    domain: str
    body: Graph
    overload: str = ""
    attributes: list[str] = field(default_factory=list)  # attribute names without defaults
    attribute_defaults: dict[str, Attr] = field(default_factory=dict)
    opset_imports: dict[str, int] = field(default_factory=dict)
    doc_string: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class Model:
    graph: Graph
    opset_imports: dict[str, int] = field(default_factory=dict)  # domain -> version, in file order
    ir_version: int = 8
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc_string: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    functions: list[Function] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # rare ModelProto fields kept verbatim
    source_path: Optional[str] = None  # the file this model was read from, if any
    source_data_files: list[str] = field(default_factory=list)  # its external data files (realpaths)
    mapped_files: list = field(default_factory=list)  # MappedFiles the tensors read from
    shapes_inferred_at: Optional[tuple] = None  # (graph id, mutation count) of the last inference
    inference_mode: str = "strict"  # how analysis/shapes.py runs onnx's inference on this model
    declarations_checked: bool = False  # the first inference weighed the declared shapes (analysis/shapes.py)
    corrected_declarations: tuple = ()  # (value name, declared shape, computed shape) it replaced

    def release_mapped_pages(self) -> None:
        for f in self.mapped_files:
            f.release()

    @property
    def opset(self) -> int:
        """The default-domain opset version."""
        return self.opset_imports.get("", self.opset_imports.get("ai.onnx", 1))

    def all_graphs(self):
        """Every graph of the model, function bodies included, outermost first."""
        yield from self.graph.walk()
        for f in self.functions:
            yield from f.body.walk()

    def clone(self) -> "Model":
        m = Model(**{k: getattr(self, k) for k in self.__dataclass_fields__})
        m.graph = self.graph.clone()
        m.opset_imports = dict(self.opset_imports)
        m.metadata = dict(self.metadata)
        m.functions = [Function(**{**f.__dict__, "body": f.body.clone()}) for f in self.functions]
        m.extra = dict(self.extra)
        m.source_data_files = list(self.source_data_files)
        m.mapped_files = list(self.mapped_files)
        return m
