"""Inputs for running a model when the user gives none: validation draws and random calibration
samples come from here (one spec of a model's inputs, one generator).

Random numbers are not enough for real models: an integer input may be a token id indexing an
embedding table, a mask, a divisor, an axis or a shape. The generator reads how the graph uses
each input and draws values that make sense there:

- indices (Gather, GatherElements, GatherND, ScatterND, ScatterElements, OneHot): inside the
  indexed axis (token_type_ids of a 2-row table are 0 or 1);
- masks (a name with "mask", or read as a boolean condition): 0 and 1;
- divisors and Mod operands, steps, repeats, depths, sizes: non-zero and small;
- axes: distinct valid axes of the tensor they apply to;
- shapes (Reshape, Expand, ConstantOfShape), pads, Resize scales and sizes, Split sizes,
  Squeeze axes (dims of size 1), sequence lengths: values valid for the tensors they apply to;
- strings, sequences, maps and optionals: small valid values.

Symbolic dims get one size per name (axis 0: a batch of 1, others `dim`). Some models need larger
dims (a reflect Pad wider than 32, a kernel or an STFT frame): `DIM_LADDER` lists the sizes to
try in turn when the model does not run on the first ones, and last axis-0 dims grow too
(`GROWN_BATCH`: a graph network's node count sits where a batch usually does); last, one input
shaped like an RNN state ([layers, ?, hidden]) at a time, its unnamed dims past axis 0 take the
batch size; see runtime/validate.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from graphopt.errors import GraphoptError
from graphopt.ir import Graph, Model, Value
from graphopt.ir.dtypes import (
    NO_NUMPY_ARITHMETIC,
    SUBBYTE_TYPES,
    DataType,
    is_integer,
    itemsize,
    np_dtype,
)

DEFAULT_BATCH = 1
DEFAULT_DIM = 32
DIM_LADDER = (32, 64, 160, 512)  # sizes tried in turn for symbolic dims other than a batch
GROWN_BATCH = 8  # the last try: symbolic axis-0 dims too (a graph's node count, not a batch)
MAX_FEED_BYTES = 1 << 30  # one draw of inputs; more is a model declaring absurd dims
MAX_FOLLOW = 8  # how far a use is followed through ops that pass values on unchanged

# Ops whose output holds (some of) the values of input 0 unchanged: an input's use is followed
# through them.
PASS_ON = {"Identity", "Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Expand", "Transpose", "Slice",
           "Concat", "Tile", "Gather", "CastLike", "Split"}
INDEX_INPUTS = {("Gather", 1), ("GatherElements", 1), ("GatherND", 1), ("ScatterND", 1), ("ScatterElements", 1),
                ("Scatter", 1), ("OneHot", 0), ("RoiAlign", 2), ("MaxUnpool", 1), ("TfIdfVectorizer", 0)}
AXES_INPUTS = {("Unsqueeze", 1), ("Slice", 3), ("Pad", 3), ("CumSum", 1), ("CumProd", 1)}
# (op, input) -> (low, high) of small positive values
POSITIVE_INPUTS = {("Div", 1): (1, 5), ("Mod", 1): (1, 5), ("Mod", 0): (0, 9), ("Slice", 4): (1, 3),
                   ("Tile", 1): (1, 3), ("ConstantOfShape", 0): (1, 4), ("OneHot", 1): (2, 6), ("TopK", 1): (1, 2),
                   ("Range", 2): (1, 3), ("Range", 0): (0, 3), ("Range", 1): (3, 9), ("Resize", 3): (1, 9),
                   ("Upsample", 1): (1, 3), ("Pad", 1): (0, 2),
                   ("SequenceInsert", 2): (0, 2), ("SequenceAt", 1): (0, 2), ("SequenceErase", 1): (0, 2), ("BitShift", 1): (0, 4), ("Pow", 1): (0, 3),
                   ("NonMaxSuppression", 2): (0, 4), ("CenterCropPad", 1): (1, 9), ("Col2Im", 1): (4, 9),
                   ("Col2Im", 2): (1, 3), ("STFT", 1): (1, 9), ("STFT", 3): (4, 9), ("DFT", 1): (4, 9),
                   ("BlackmanWindow", 0): (4, 9), ("HannWindow", 0): (4, 9), ("HammingWindow", 0): (4, 9),
                   ("MelWeightMatrix", 0): (4, 9), ("MelWeightMatrix", 1): (8, 17), ("MelWeightMatrix", 2): (8, 17)}
# float inputs that must lie in [0, 1] (probabilities, thresholds)
UNIT_INPUTS = {("Bernoulli", 0), ("NonMaxSuppression", 3), ("Dropout", 1), ("Resize", 1)}
MASK_CONSUMERS = {("Where", 0), ("And", 0), ("And", 1), ("Or", 0), ("Or", 1), ("Not", 0), ("Xor", 0), ("Xor", 1),
                  ("Compress", 1)}


@dataclass(frozen=True)
class InputSpec:
    """One input the caller must feed: name, ONNX element type and declared dims (int, symbol
    or None per dim; shape None = unknown rank). Non-tensor inputs carry their TypeProto."""

    name: str
    elem_type: Optional[int]
    shape: Optional[tuple]
    type_proto: Any = None

    @property
    def dtype(self) -> np.dtype:
        return np_dtype(self.elem_type)

    @property
    def is_tensor(self) -> bool:
        return self.type_proto is None and self.elem_type is not None


def model_inputs(model: Model) -> list[InputSpec]:
    """The inputs a caller feeds, in order (an initializer-backed input keeps its default)."""
    return [InputSpec(v.name, v.dtype, tuple(v.shape) if v.shape is not None else None, v.type_proto)
            for v in model.graph.inputs if v.const is None]


def symbol_sizes(specs: Sequence[InputSpec], pinned: Optional[Mapping[str, Sequence[int]]] = None,
                 dim: int = DEFAULT_DIM, batch: int = DEFAULT_BATCH) -> dict[str, int]:
    """One size per symbolic dim name: pinned where --input-shape pins it, else axis 0 `batch`
    (1) and any other `dim`."""
    pinned = pinned or {}
    sizes: dict[str, int] = {}
    for s in specs:
        if s.name in pinned and s.shape is not None:
            for d, p in zip(s.shape, pinned[s.name]):
                if isinstance(d, str):
                    sizes.setdefault(d, int(p))
    for s in specs:
        for axis, d in enumerate(s.shape or ()):
            if isinstance(d, str):
                sizes.setdefault(d, batch if axis == 0 else dim)
    return sizes


def concrete_shape(spec: InputSpec, sizes: Mapping[str, int], pinned=None, dim: int = DEFAULT_DIM,
                   batch: int = DEFAULT_BATCH, batch_like: bool = False) -> tuple:
    """Sizes for `spec`'s dims: declared ones as they are, symbols from `sizes`, unknown ones
    `batch` on axis 0 (every axis with `batch_like`) and `dim` elsewhere."""
    if pinned and spec.name in pinned:
        return tuple(int(d) for d in pinned[spec.name])
    out = []
    for axis, d in enumerate(spec.shape or ()):
        if isinstance(d, str):
            out.append(sizes[d])
        elif _unnamed(d):
            out.append(batch if axis == 0 or batch_like else dim)
        else:  # declared; a declared 0 is an empty dim: onnxruntime insists on it
            out.append(d)
    return tuple(out)


def _unnamed(d) -> bool:
    """An unknown dim with no name (or a negative dim an exporter wrote for "unknown")."""
    return d is None or (isinstance(d, int) and d < 0)


def unnamed_batch_candidates(model: Model) -> list[str]:
    """Inputs shaped like an RNN state, [layers, ?, hidden]: some dims declared, and an unknown,
    unnamed one past axis 0, when there are other inputs it may have to match. That dim may be
    their batch, which no name ties to it. (Inputs with no declared dim, token ids [?, ?], are
    not: each would only add failing tries before "not validated".)"""
    specs = [s for s in model_inputs(model) if s.is_tensor]
    if len(specs) < 2:
        return []
    return [s.name for s in specs if s.shape and any(isinstance(d, int) and d >= 0 for d in s.shape)
            and any(_unnamed(d) for d in s.shape[1:])]


# ------------------------------------------------------------------------------ how inputs are used
@dataclass
class Use:
    """What an input's values must satisfy where the graph reads them."""

    kind: str = "free"  # free, index, mask, positive, axes, reshape, ones, unit
    bound: Any = None  # index: (value, axis) whose dim bounds it, or an int; positive: (low, high); axes: rank


def input_uses(model: Model) -> dict[str, Use]:
    """For each graph input, the strictest use found by following it through ops that pass its
    values on (see the module docstring)."""
    g = model.graph
    out = {}
    for v in g.inputs:
        if v.const is None:
            out[v.name] = _use_of(g, v)
    return out


def _use_of(g: Graph, v: Value) -> Use:
    found: list[Use] = []
    if "mask" in v.name.lower():
        found.append(Use("mask"))
    work, seen = [(v, 0)], set()
    while work:
        value, depth = work.pop()
        if value.id in seen or depth > MAX_FOLLOW:
            continue
        seen.add(value.id)
        for node, k in g.uses(value):
            if not isinstance(k, int) or not node.is_standard:
                continue
            key = (node.op_type, k)
            data = node.inputs[0] if node.inputs else None
            if key in (("GatherND", 1), ("ScatterND", 1)):  # index tuples: column j indexes axis batch_dims + j
                found.append(Use("index_nd", (data, node.attr("batch_dims", 0))))
            elif key in INDEX_INPUTS:
                if node.op_type == "OneHot":  # indices run over [0, depth)
                    found.append(Use("index", [g.const_value(node.inputs[1])]))
                else:
                    axis = node.attr("axis", 0) if node.op_type in ("Gather", "GatherElements", "ScatterElements",
                                                                     "Scatter") else 0
                    found.append(Use("index", [(data, axis)]))
            elif key in AXES_INPUTS or (node.op_type.startswith("Reduce") and k == 1):
                rank = len(data.shape) if data is not None and data.shape is not None else None
                if rank is not None and node.op_type == "Unsqueeze" and node.outputs[0] is not None \
                        and node.outputs[0].shape is not None:
                    rank = len(node.outputs[0].shape)
                found.append(Use("axes", rank))
            elif key == ("Squeeze", 1):
                found.append(Use("squeeze", data))
            elif key in (("Split", 1), ("SplitToSequence", 1)):
                found.append(Use("split", (data, node.attr("axis", 0), node.n_outputs if node.op_type == "Split" else 0)))
            elif key in (("Resize", 2), ("Resize", 3)):
                found.append(Use("resize_scales" if k == 2 else "resize_sizes", data))
            elif key == ("AffineGrid", 1):
                found.append(Use("affine_size", data))
            elif key in (("LSTM", 4), ("GRU", 4), ("RNN", 4)):
                found.append(Use("lengths", (data, 0 if not node.attr("layout", 0) else 1)))
            elif key == ("Reshape", 1):
                found.append(Use("reshape"))
            elif key == ("Expand", 1):
                found.append(Use("ones"))
            elif key in POSITIVE_INPUTS:
                found.append(Use("positive", POSITIVE_INPUTS[key]))
            elif key in UNIT_INPUTS:
                found.append(Use("unit"))
            elif key in MASK_CONSUMERS or (node.op_type == "Cast" and node.attr("to") == DataType.BOOL):
                found.append(Use("mask"))
            if node.op_type in PASS_ON and k == 0:
                work.extend((o, depth + 1) for o in node.outputs if o is not None)
    order = ("axes", "squeeze", "split", "resize_scales", "resize_sizes", "affine_size", "lengths", "reshape", "ones",
             "index_nd", "index", "positive", "unit", "mask")
    if not found:
        return Use()
    best = min(found, key=lambda u: order.index(u.kind))
    same = [u for u in found if u.kind == best.kind]
    if best.kind == "index":  # every table it indexes: the smallest bounds it
        return Use("index", [b for u in same for b in u.bound])
    if best.kind == "positive":  # every range it must lie in
        lo, hi = max(u.bound[0] for u in same), min(u.bound[1] for u in same)
        return Use("positive", (lo, hi) if lo < hi else best.bound)
    return best


# ------------------------------------------------------------------------------ drawing values
class Synthesizer:
    """Seeded feeds for a model: `feeds(draws, seed)` gives `draws` dicts of input name -> value."""

    def __init__(self, model: Model, pinned: Optional[Mapping[str, Sequence[int]]] = None, dim: int = DEFAULT_DIM,
                 batch: int = DEFAULT_BATCH, batch_like: frozenset = frozenset()):
        self.specs = model_inputs(model)
        self.pinned = dict(pinned or {})
        self.dim = dim
        self.sizes = symbol_sizes(self.specs, self.pinned, dim, batch)
        self.uses = input_uses(model)
        self._dims: dict = {}
        self.shapes = {s.name: concrete_shape(s, self.sizes, self.pinned, dim, batch, s.name in batch_like)
                       for s in self.specs if s.is_tensor}
        total = 0
        for s in self.specs:
            if s.is_tensor:
                n = int(np.prod(self.shapes[s.name], dtype=np.float64)) * (itemsize(s.elem_type) or 8)
                total += n
                if total > MAX_FEED_BYTES:
                    raise GraphoptError(
                        f"input {s.name!r} declares shape {list(self.shapes[s.name])} ({n:.3g} bytes): too large to "
                        f"make inputs for; pin a smaller shape with --input-shape {s.name}:... or use --no-validate")

    def feeds(self, draws: int, seed: int) -> list[dict[str, Any]]:
        return [self.feed(draw, seed) for draw in range(draws)]

    def feed(self, draw: int, seed: int) -> dict[str, Any]:
        """Draw number `draw` alone: the same values every time it is asked for."""
        rng = np.random.default_rng([seed, draw])
        return {s.name: self.value(s, rng) for s in self.specs}

    def value(self, s: InputSpec, rng: np.random.Generator):
        if not s.is_tensor:
            return _typed_value(s.type_proto, rng, self.sizes, self.dim)
        shape = self.shapes[s.name]
        return np.asarray(_tensor(s.elem_type, shape, self.uses.get(s.name, Use()), rng, self._dim_of))

    def _dim_of(self, value: Value, axis: int) -> Optional[int]:
        """The run-time size of `value`'s dim `axis` under the chosen symbol sizes, if known
        (memoized: every draw asks again, and a constant's size may cost a copy of its data)."""
        key = (id(value), axis)  # the model outlives this synthesizer: its values keep their ids
        if key not in self._dims:
            self._dims[key] = self._find_dim(value, axis)
        return self._dims[key]

    def _find_dim(self, value: Value, axis: int) -> Optional[int]:
        data = value.graph.const_value(value) if value is not None else None
        if data is not None:
            return int(data.shape[axis]) if -data.ndim <= axis < data.ndim else None
        if value is None or value.shape is None or not -len(value.shape) <= axis < len(value.shape):
            return None
        d = value.shape[axis]
        if isinstance(d, int) and d >= 0:
            return d
        if value.is_graph_input and value.name in self.shapes:
            return self.shapes[value.name][axis]
        return self.sizes.get(d) if isinstance(d, str) else None


def _tensor(elem_type: int, shape: tuple, use: Use, rng: np.random.Generator, dim_of):
    if elem_type in NO_NUMPY_ARITHMETIC or elem_type == DataType.BFLOAT16:
        # numpy cannot hand these to onnxruntime: small values as float32 / int8, which the
        # session casts at the model's interface (runtime/session.py)
        if elem_type in SUBBYTE_TYPES:
            return rng.integers(0, 2, size=shape).astype(np.int8)
        return rng.standard_normal(shape).astype(np.float32)
    dt = np_dtype(elem_type)
    size = int(np.prod(shape, dtype=np.int64))
    if elem_type == DataType.STRING:
        words = np.array(["graphopt", "onnx", "a", "model", "Test", "x y"], dtype=object)
        return words[rng.integers(0, len(words), size=shape)] if shape else np.array(words[0], dtype=object)
    if dt == np.bool_:
        return rng.random(shape) < 0.5
    integer = is_integer(elem_type)
    if use.kind == "axes" and integer:
        rank = use.bound or max(size, 1)
        picks = rng.permutation(rank)[:size] if size <= rank else np.arange(size) % rank
        return np.sort(picks).astype(dt).reshape(shape)
    if use.kind == "squeeze" and integer:
        dims = _dims(use.bound, dim_of)
        ones = [i for i, d in enumerate(dims or ()) if d == 1]
        return np.array((ones * size)[:size] if ones else list(range(size)), dt).reshape(shape)
    if use.kind == "split" and integer:
        data, axis, parts = use.bound
        total = dim_of(data, axis)
        if total is None:
            return np.ones(shape, dt)
        if not shape:  # SplitToSequence's scalar split: a chunk length
            return np.array(max(1, total // 2), dt)
        parts = size or parts
        base = [total // parts] * parts
        base[-1] += total - sum(base)
        return np.array(base, dt).reshape(shape)
    if use.kind in ("resize_scales", "resize_sizes"):
        dims = _dims(use.bound, dim_of) or [None] * size
        if use.kind == "resize_scales":
            out = [1.0 if i < 2 else float(rng.choice([0.5, 2.0])) for i in range(size)]
        else:
            out = [d if i < 2 and d is not None else int(rng.integers(1, 9)) for i, d in enumerate(dims[:size])]
        return np.array(out, dt).reshape(shape)
    if use.kind == "affine_size" and integer:
        n = dim_of(use.bound, 0) or 1
        return np.array([n] + [int(x) for x in rng.integers(1, 5, size=size - 1)], dt).reshape(shape)
    if use.kind == "lengths" and integer:
        data, axis = use.bound
        total = dim_of(data, axis) or 1
        return rng.integers(1, total + 1, size=shape).astype(dt)
    if use.kind == "reshape" and integer:
        return np.array([1] * (size - 1) + [-1] if size else [], dt).reshape(shape)
    if use.kind == "ones":
        return np.ones(shape, dt)
    if use.kind == "index" and integer:
        bounds = [dim_of(*b) if isinstance(b, tuple) else (int(b.ravel()[0]) if isinstance(b, np.ndarray) and b.size
                                                           else None) for b in use.bound]
        known = [b for b in bounds if b is not None]
        high = max(min(known), 1) if known else 2
        return rng.integers(0, high, size=shape).astype(dt)
    if use.kind == "index_nd" and integer:
        data, batch_dims = use.bound
        cols = shape[-1] if shape else 1
        highs = [max(dim_of(data, batch_dims + j) or 2, 1) for j in range(cols)]
        return np.stack([rng.integers(0, h, size=shape[:-1]) for h in highs], axis=-1).astype(dt).reshape(shape)
    if use.kind == "positive":
        lo, hi = use.bound
        if integer:
            return rng.integers(lo, hi, size=shape).astype(dt)
        return rng.uniform(max(lo, 0.5), hi, size=shape).astype(dt)
    if use.kind == "unit":
        return rng.uniform(0, 1, size=shape).astype(dt)
    if use.kind == "mask":
        return (rng.random(shape) < 0.8).astype(dt)  # mostly ones: an attention mask keeps most positions
    if integer:
        return rng.integers(0, 4, size=shape).astype(dt)  # small non-negative: valid as most ids and counts
    if dt.kind in "fcV":  # drawn in float32: no float64 copy of an image-sized input
        return rng.standard_normal(shape, dtype=np.float32).astype(dt, copy=False)
    raise GraphoptError(f"cannot make input values of type {dt}")


def _dims(value, dim_of) -> Optional[list]:
    """The run-time dims of `value` (None where unknown), or None for an unknown rank."""
    if value is None or value.shape is None:
        return None
    return [dim_of(value, i) for i in range(len(value.shape))]


def _typed_value(tp, rng: np.random.Generator, sizes: Mapping[str, int], dim: int):
    """A small valid value of a non-tensor ONNX type (sequence, optional, map) or an untyped tensor."""
    which = tp.WhichOneof("value") if tp is not None else None
    if which == "tensor_type":
        tt = tp.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else sizes.get(d.dim_param, 2)
                      for d in tt.shape.dim) if tt.HasField("shape") else (2,)
        return np.asarray(_tensor(tt.elem_type or DataType.FLOAT, shape, Use(), rng, lambda *a: None))
    if which == "sequence_type":
        return [_typed_value(tp.sequence_type.elem_type, rng, sizes, dim) for _ in range(2)]
    if which == "optional_type":
        return _typed_value(tp.optional_type.elem_type, rng, sizes, dim)
    if which == "map_type":
        key = tp.map_type.key_type
        values = _typed_value(tp.map_type.value_type, rng, sizes, dim)
        flat = np.asarray(values).ravel()
        keys = [f"k{i}" for i in range(len(flat))] if key == DataType.STRING else list(range(len(flat)))
        return dict(zip(keys, flat.tolist()))
    raise GraphoptError(f"cannot make input values of type {which or 'unknown'}")
