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

    def __str__(self) -> str:
        where = f"{self.op_type} {self.node!r}" if self.node else self.op_type
        return f"{self.severity}: {where}: {self.message}"

    def to_dict(self) -> dict:
        return asdict(self)
