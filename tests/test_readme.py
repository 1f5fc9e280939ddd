"""Issue 17, point 7: the README is tested. Every `graphopt` command in its ```sh blocks runs,
in order, in one temporary folder, with the files the README's "The README is tested" table
names standing in for its placeholders, and must exit 0: the guide cannot drift from the tool."""

import os
import re
import shlex
import shutil
import subprocess

from helpers import golden

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")

# README name -> golden file (the table in the README's "The README is tested")
FILES = {
    "model.onnx": "trained/digits_cnn.onnx",
    "MODEL.onnx": "trained/digits_cnn.onnx",
    "B.onnx": "trained/digits_cnn.onnx",
    "calib.npz": "trained/digits_cnn.calib.npz",
    "calib/calib.npz": "trained/digits_cnn.calib.npz",
    "encoder.onnx": "torch/encoder_dynamo.onnx",
    "mobilenet.onnx": "torch/mobilenetv3_block_torchscript.onnx",
}
WORDS = {"PASSES": "fuse,fold"}


def blocks(text: str, lang: str) -> list[str]:
    """The fenced blocks of language `lang` ("" for a fence without one), in order."""
    found, current, kind = [], None, None
    for line in text.splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current, kind = [], line[3:].strip()
            else:
                if kind == lang:
                    found.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return found


def commands(text: str) -> list[list[str]]:
    """The graphopt commands of the sh blocks: brackets dropped, comments ignored, `&&` split."""
    out = []
    for block in blocks(text, "sh"):
        for line in block.splitlines():
            line = re.sub(r"\s\[[^\]]*\]", "", line)  # optional parts: [--json], [options]
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words and words[0] == "graphopt":
                    out.append([WORDS.get(w, w) for w in words])
    return out


def pipeline_file(text: str) -> str:
    (trt,) = [b for b in blocks(text, "") if b.startswith("# trt.gopt")]
    return trt


def test_the_readme_has_the_commands_it_should():
    text = open(README).read()
    cmds = [" ".join(c) for c in commands(text)]
    assert cmds[0] == "graphopt golden_models/zoo/squeezenet.onnx -p none -o /tmp/squeezenet.onnx --force"
    assert "pip install . && graphopt golden_models/zoo/squeezenet.onnx -p none -o /tmp/squeezenet.onnx --force" \
        in text and "pip install -e '.[test]' && pytest" in text
    assert len(cmds) >= 25
    # the How it works section points to the architecture document, not to modules that are gone
    how = text[text.index("## How it works"):text.index("## The README is tested")]
    assert "docs/ARCHITECTURE.md" in how
    for gone in ("frontend.py", "passmanager.py", "graphopt/validate.py", "graphopt/api.py", "graphopt/calibration.py"):
        assert gone not in how
    for path in re.findall(r"`(graphopt/[a-z_]+/?|passes/)`", how):
        assert os.path.exists(os.path.join(ROOT, path)), path


def test_every_readme_command_runs(tmp_path):
    exe = shutil.which("graphopt")
    assert exe
    text = open(README).read()
    for name, src in FILES.items():
        dest = tmp_path / name
        dest.parent.mkdir(exist_ok=True)
        shutil.copy(os.path.join(golden.HERE, src), dest)
    os.symlink(golden.HERE, tmp_path / "golden_models")
    (tmp_path / "trt.gopt").write_text(pipeline_file(text))
    env = dict(os.environ, TMPDIR=str(tmp_path))
    failures = []
    for cmd in commands(text):
        cmd = [w.replace("/tmp/", f"{tmp_path}/") for w in cmd]
        proc = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
        if proc.returncode != 0:
            failures.append(f"{shlex.join(cmd)}: exit {proc.returncode}: {proc.stderr.strip()[-400:]}")
    assert not failures, "\n".join(failures)
