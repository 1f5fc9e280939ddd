"""A finding of a checker (trt-check, qdq-lint): a node and what is wrong with it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Finding:
    """One finding of a checker (trt-check, qdq-lint): a node and what is wrong with it."""

    severity: str  # "error" or "warning"
    node: str
    op_type: str
    message: str
    rule: str = ""  # the rule's id, e.g. "trt10.initializer-input.Slice.axes" (trt-check)
    version: str = ""  # the version the rule is for (trt-check: the TensorRT support-matrix entry)
    source: str = ""  # where the rule comes from (trt-check: onnx-tensorrt ref, commit, doc/code)

    def __str__(self) -> str:
        where = f"{self.op_type} {self.node!r}" if self.node else self.op_type
        rule = f" [{self.rule}]" if self.rule else ""
        return f"{self.severity}: {where}: {self.message}{rule}"

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: v for k, v in d.items() if v or k not in ("rule", "version", "source")}
