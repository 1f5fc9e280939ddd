"""Which nodes a lossy pass leaves alone: its exclude_ops / exclude_nodes options and the pipeline
step's scope, with the reason the report gives."""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Callable, Optional


@dataclass
class LossyLayerOptions:
    """Options every lossy layer pass has (its own options dataclass extends this one)."""

    exclude_ops: str = field(default="", metadata={"help": "op types left unchanged (comma list)"})
    exclude_nodes: str = field(default="", metadata={"help": "node-name globs left unchanged (comma list; quote globs)"})
    max_drop: float = field(default=-1.0, metadata={"help": "accuracy budget in points (negative: none); the most "
                                                           "sensitive layers stay unchanged until it holds"})


def words(text: str) -> tuple[str, ...]:
    """A comma-list option (`"a, b*"`) as its items."""
    return tuple(w.strip() for w in text.split(",") if w.strip())


def matching_glob(node, globs) -> Optional[str]:
    """The first of the user's node-name globs that matches `node`'s name, or None. Globs match
    names only, never report labels (`Conv -> x`): an unnamed node matches only a glob that
    matches the empty name, such as `*`, which the user wrote."""
    globs = words(globs) if isinstance(globs, str) else globs
    return next((g for g in globs if fnmatchcase(node.name, g)), None)


def excluded(node, ops, nodes, in_scope: Callable) -> Optional[str]:
    """Why `node` is excluded (`ops`: op types, `nodes`: name globs, as tuples or comma lists), or None."""
    ops = words(ops) if isinstance(ops, str) else ops
    if node.op_type in ops:
        return f"excluded by exclude_ops ({node.op_type})"
    glob = matching_glob(node, nodes)
    if glob is not None:
        return f"excluded by exclude_nodes ({glob})"
    return None if in_scope(node) else "outside the pass's scope"
