"""Issue 17, point 3: `graphopt inspect` shows inputs and outputs (names, dtypes, shapes) first,
as `polygraphy inspect model` does, and in --json under "inputs"/"outputs"."""

import json
import os

from helpers import golden

from graphopt.cli import main

SQUEEZENET = os.path.join(golden.HERE, "zoo", "squeezenet.onnx")
ENCODER = os.path.join(golden.HERE, "torch", "encoder_dynamo.onnx")


def test_text_output_starts_with_inputs_and_outputs(capsys):
    assert main(["inspect", SQUEEZENET]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == ["inputs:", "  data_0: float [1, 3, 224, 224]", "outputs:",
                         "  softmaxout_1: float [1, 1000, 1, 1]"]
    assert lines[4].startswith("params 1,235,496  ")


def test_json_inputs_and_outputs_have_dtype_and_shape(capsys):
    assert main(["inspect", SQUEEZENET, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["inputs"] == {"data_0": {"dtype": "float", "shape": [1, 3, 224, 224]}}
    assert report["outputs"] == {"softmaxout_1": {"dtype": "float", "shape": [1, 1000, 1, 1]}}


def test_symbolic_dims_and_integer_inputs(capsys):
    assert main(["inspect", ENCODER, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["inputs"] == {"input_ids": {"dtype": "int64", "shape": ["batch", "seq"]},
                                "attention_mask": {"dtype": "int64", "shape": ["batch", "seq"]}}
    assert report["outputs"] == {"logits": {"dtype": "float", "shape": ["batch", 4]}}
    # pinned with onnxslim's spelling, several specs after one flag
    assert main(["inspect", ENCODER, "--input-shapes", "input_ids:2,16", "attention_mask:2,16", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outputs"]["logits"] == {"dtype": "float", "shape": [2, 4]}
