"""graphopt's IR: a networkx multigraph of op and value nodes, and the model around it."""

from graphopt.ir.graph import Attr, Capture, Graph, NameScope, Node, Value, format_shape, make_attr
from graphopt.ir.model import Function, Model
from graphopt.ir.tensor import MappedFile, Tensor

__all__ = ["Attr", "Capture", "Function", "Graph", "MappedFile", "Model", "NameScope", "Node",
           "Tensor", "Value", "format_shape", "make_attr"]
