"""trt-check: what is left in a model that TensorRT's ONNX parser is known to reject.

Each finding names the node and the reason. Errors are what the parser rejects; warnings are
what works only on newer TensorRT or with a plugin.
"""

from __future__ import annotations

from graphopt.ir import Graph, Model
from graphopt.lint.findings import Finding
from graphopt.lint.trt_inputs import build_time_inputs

MIN_OPSET, MAX_OPSET = 9, 25


SEQUENCE_OPS = {"SequenceAt", "SequenceConstruct", "SequenceEmpty", "SequenceErase", "SequenceInsert",
                "SequenceLength", "SplitToSequence", "ConcatFromSequence", "SequenceMap"}


UNSUPPORTED_TYPES = {11: "double", 8: "string", 14: "complex64", 15: "complex128"}


INPUT_NAMES = {("Pad", 1): "pads", ("Pad", 2): "constant value", ("Pad", 3): "axes", ("TopK", 1): "k",
               ("OneHot", 1): "depth", ("Dropout", 2): "training_mode", ("Resize", 1): "roi",
               ("Resize", 2): "scales", ("Resize", 3): "sizes", ("Slice", 1): "starts", ("Slice", 2): "ends",
               ("Slice", 3): "axes", ("Slice", 4): "steps", ("Tile", 1): "repeats", ("Expand", 1): "shape",
               ("Reshape", 1): "shape", ("ConstantOfShape", 0): "shape"}


def trt_check(model: Model) -> list[Finding]:
    findings: list[Finding] = []
    opset = model.opset
    if not MIN_OPSET <= opset <= MAX_OPSET:
        findings.append(Finding("error", "", "model", f"opset {opset}: TensorRT's ONNX parser accepts opsets "
                                                      f"{MIN_OPSET} to {MAX_OPSET}"))
    for g in model.graph.walk():
        _check_graph(g, findings)
    return findings


def _check_graph(g: Graph, findings: list[Finding]) -> None:
    for v in g.inputs + g.outputs + g.initializers:
        if v.dtype in UNSUPPORTED_TYPES:
            findings.append(Finding("error", v.name, "tensor", f"type {UNSUPPORTED_TYPES[v.dtype]} is not supported by TensorRT"))
    for node in g.toposort():
        name = node.name or node.outputs[0].name if node.outputs and node.outputs[0] is not None else node.name
        if not node.is_standard:
            findings.append(Finding("warning", name, node.op_type, f"custom domain {node.domain!r}: needs a TensorRT plugin"))
            continue
        if node.op_type in SEQUENCE_OPS:
            findings.append(Finding("error", name, node.op_type, "sequence types are not supported by TensorRT"))
        ins = node.inputs
        for i in build_time_inputs(node):
            if i >= len(ins) or ins[i] is None:
                continue
            v = ins[i]
            what = INPUT_NAMES.get((node.op_type, i), "axes" if node.op_type.startswith(("Reduce", "Squeeze", "Unsqueeze")) else f"input {i}")
            data = g.const_value(v)
            if data is None:
                if node.op_type == "Reshape":
                    findings.append(Finding("warning", name, node.op_type, f"{what} is computed at run time: fails on "
                                            "older TensorRT and wherever it decides a rank (run -p promote)"))
                else:
                    findings.append(Finding("error", name, node.op_type, f"{what} is computed at run time; TensorRT "
                                            "needs it as a build-time constant (run -p promote)"))
            elif node.op_type == "Dropout" and bool(data):
                findings.append(Finding("error", name, node.op_type, "training_mode is true; TensorRT runs inference only"))
