"""The Pygments lexer: found through its entry point, every token of every shipped file known."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pygments = pytest.importorskip("pygments")
from pygments.lexers import find_lexer_class_for_filename, get_lexer_by_name  # noqa: E402
from pygments.token import (Comment, Error, Keyword, Name, Number, Operator, Punctuation,  # noqa: E402
                            String, Whitespace)

from netdsl.ops import ALIASES, IDENTITY, OPS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "networks").glob("*.net")) + sorted((ROOT / "examples").glob("*.net")) \
    + sorted((ROOT / "tests" / "data" / "editor").glob("*.net"))


def tokens(text: str) -> list[tuple[object, str]]:
    return [(kind, value) for kind, value in get_lexer_by_name("netdsl").get_tokens(text)
            if kind is not Whitespace]


def test_pygments_finds_the_lexer_by_name_and_by_file_name():
    from netdsl.lexer import NetDSLLexer
    assert type(get_lexer_by_name("netdsl")) is NetDSLLexer
    assert find_lexer_class_for_filename("vgg16.net") is NetDSLLexer


def test_the_lexer_knows_every_op_the_language_has():
    from netdsl.lexer import OP_NAMES
    writable = {name for name, spec in OPS.items() if spec.writable}
    assert set(OP_NAMES) == writable | set(ALIASES) | {IDENTITY}


def test_a_line_is_split_into_its_tokens():
    text = ('use "vgg.net"  # blocks\ndef block(n, c=64) = [(conv3-c)*n - pool]\n'
            'net D input 3x224x224 = p: block(2) - cat{ @p | conv1-{2*c}/2(pad=0, bias=false) } - fc4096\n')
    assert tokens(text) == [
        (Keyword.Namespace, "use"), (String.Double, '"vgg.net"'), (Comment.Single, "# blocks"),
        (Keyword.Declaration, "def"), (Name.Function, "block"), (Punctuation, "("), (Name, "n"),
        (Punctuation, ","), (Name.Attribute, "c"), (Operator, "="), (Number.Integer, "64"),
        (Punctuation, ")"), (Operator, "="), (Punctuation, "["), (Punctuation, "("),
        (Name.Builtin, "conv3-c"), (Punctuation, ")"), (Operator, "*"), (Name, "n"), (Operator, "-"),
        (Name.Builtin, "pool"), (Punctuation, "]"),
        (Keyword.Declaration, "net"), (Name.Function, "D"), (Keyword.Namespace, "input"),
        (Number.Integer, "3x224x224"), (Operator, "="), (Name.Label, "p"), (Punctuation, ":"),
        (Name, "block"), (Punctuation, "("), (Number.Integer, "2"), (Punctuation, ")"),
        (Operator, "-"), (Keyword, "cat"), (Punctuation, "{"), (Operator, "@"), (Name.Label, "p"),
        (Punctuation, "|"), (Name.Builtin, "conv1-{2*c}/2"), (Punctuation, "("),
        (Name.Attribute, "pad"), (Operator, "="), (Number.Integer, "0"), (Punctuation, ","),
        (Name.Attribute, "bias"), (Operator, "="), (Keyword.Constant, "false"), (Punctuation, ")"),
        (Punctuation, "}"), (Operator, "-"), (Name.Builtin, "fc4096"),
    ]


def test_non_square_depthwise_and_adaptive_layers():
    assert tokens("conv1x7-192 - dwconv3/2 - dwconv1x{k} - adaptive_avgpool(7) - gmp") == [
        (Name.Builtin, "conv1x7-192"), (Operator, "-"), (Name.Builtin, "dwconv3/2"), (Operator, "-"),
        (Name.Builtin, "dwconv1x{k}"), (Operator, "-"), (Name.Builtin, "adaptive_avgpool"),
        (Punctuation, "("), (Number.Integer, "7"), (Punctuation, ")"), (Operator, "-"),
        (Name.Builtin, "gmp")]


def test_a_choice_colours_its_keywords_comparisons_and_logic_words():
    assert [(kind, value) for kind, value in tokens("if s == 1 and not c >= 2 then relu else tanh")
            if kind is not Name] == [
        (Keyword, "if"), (Operator, "=="), (Number.Integer, "1"), (Operator.Word, "and"),
        (Operator.Word, "not"), (Operator, ">="), (Number.Integer, "2"), (Keyword, "then"),
        (Name.Builtin, "relu"), (Keyword, "else"), (Name.Builtin, "tanh")]
    assert tokens("iffy") == [(Name, "iffy")]


def test_floats_and_operators():
    assert tokens("dropout(0.5) - lrn(alpha=1e-4) - fc{n//2 % 3}") == [
        (Name.Builtin, "dropout"), (Punctuation, "("), (Number.Float, "0.5"), (Punctuation, ")"),
        (Operator, "-"), (Name.Builtin, "lrn"), (Punctuation, "("), (Name.Attribute, "alpha"),
        (Operator, "="), (Number.Float, "1e-4"), (Punctuation, ")"), (Operator, "-"),
        (Name.Builtin, "fc{n//2 % 3}")]


def test_true_division_and_an_indexed_repeat():
    assert tokens("block(c, 0.1*i/n)*n for i - conv3-64/2") == [
        (Name, "block"), (Punctuation, "("), (Name, "c"), (Punctuation, ","),
        (Number.Float, "0.1"), (Operator, "*"), (Name, "i"), (Operator, "/"), (Name, "n"),
        (Punctuation, ")"), (Operator, "*"), (Name, "n"), (Keyword, "for"), (Name, "i"),
        (Operator, "-"), (Name.Builtin, "conv3-64/2")]
    assert tokens("format") == [(Name, "format")]


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_shipped_file_lexes_without_an_error_token(path):
    text = path.read_text(encoding="utf-8")
    found = list(get_lexer_by_name("netdsl").get_tokens(text))
    assert [value for kind, value in found if kind is Error] == []
    assert "".join(value for _, value in found) == text if text.endswith("\n") else text + "\n"


def test_pygmentize_colours_a_file():
    pygmentize = shutil.which("pygmentize", path=str(Path(sys.executable).parent))
    assert pygmentize, "pygmentize comes with pygments"
    done = subprocess.run([pygmentize, "-l", "netdsl", "-f", "html", str(ROOT / "networks" / "vgg16.net")],
                          capture_output=True, text=True, check=True)
    assert '<span class="nb">conv3-c</span>' in done.stdout and '<span class="nb">fc1000</span>' in done.stdout
    assert '<span class="c1"># VGG-16' in done.stdout
