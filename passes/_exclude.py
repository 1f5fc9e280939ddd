"""Which nodes a lossy pass leaves alone: its exclude_ops / exclude_nodes options and the pipeline
step's scope, with the reason the report gives."""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Callable, Optional


def words(text: str) -> tuple[str, ...]:
    """A comma-list option (`"a, b*"`) as its items."""
    return tuple(w.strip() for w in text.split(",") if w.strip())


def excluded(node, ops, nodes, in_scope: Callable) -> Optional[str]:
    """Why `node` is excluded (`ops`: op types, `nodes`: name globs, as tuples or comma lists), or None."""
    ops = words(ops) if isinstance(ops, str) else ops
    nodes = words(nodes) if isinstance(nodes, str) else nodes
    if node.op_type in ops:
        return f"excluded by exclude_ops ({node.op_type})"
    glob = next((g for g in nodes if fnmatchcase(node.name, g)), None)
    if glob is not None:
        return f"excluded by exclude_nodes ({glob})"
    return None if in_scope(node) else "outside the pass's scope"
