"""The inline pipeline language (`-p`): parsing to the frozen AST, and its errors."""

import dataclasses

import pytest

from graphopt.dsl import ast
from graphopt.dsl.parser import parse_inline
from graphopt.errors import PipelineError


def test_parses_passes_with_typed_options_and_positions():
    p = parse_inline("fold, fuse,prune{method=2:4, ratio=0.5, n=-3, tag=\"a b\", mode=fast}")
    assert [s.name for s in p.steps] == ["fold", "fuse", "prune"]
    assert [s.pos.column for s in p.steps] == [1, 7, 12]
    opts = {o.name: o.value for o in p.steps[2].options}
    assert opts == {"method": "2:4", "ratio": 0.5, "n": -3, "tag": "a b", "mode": "fast"}
    assert isinstance(opts["n"], int) and isinstance(opts["ratio"], float)


def test_empty_braces_and_none():
    assert parse_inline("dce{}").steps[0].options == ()
    assert parse_inline("none") == ast.Pipeline(()) == parse_inline("  ")


def test_ast_is_frozen():
    step = parse_inline("dce").steps[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        step.name = "other"


@pytest.mark.parametrize("text,message", [
    ("fold,,fuse", "-p:1:6: expected 'fixpoint' or a name or end of input, got ','"),
    ("prune{method=}", "-p:1:14: expected a name or a number or a quoted string or a ratio like 2:4, got '}'"),
    ("fold{", "-p:1:5: expected '}' or a name, got end of input"),
    ("fold x{y}", "-p:1:9: expected '=', got '}'"),
])
def test_syntax_errors_name_the_column_and_what_was_expected(text, message):
    with pytest.raises(PipelineError) as e:
        parse_inline(text)
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("text", ["fuse,fold", " fuse , fold ", "dce", "fuse-batchnorm,x.y_z,int8"])
def test_plain_name_lists_skip_the_grammar_but_parse_the_same(text):
    """A `-p` string of bare names is read without lark; the AST must equal the grammar's."""
    from graphopt.dsl.grammar import parse_tree, to_ast
    from graphopt.dsl.parser import _simple_inline

    fast = _simple_inline(text, "-p")
    assert fast is not None and fast == to_ast(parse_tree(text, "inline", "-p"), "-p") == parse_inline(text)


@pytest.mark.parametrize("text", ["fixpoint", "fuse;fold", "fuse fold", "fuse{a=1}", "a,,b", "on", "fuse,", "a\nb"])
def test_anything_else_goes_through_the_grammar(text):
    from graphopt.dsl.parser import _simple_inline

    assert _simple_inline(text, "-p") is None
