"""A Pygments lexer for .net files, found by Pygments through its `pygments.lexers` entry point:

    pygmentize -l netdsl networks/vgg16.net

Sphinx, mkdocs (pymdownx.highlight), Jupyter and anything else that uses Pygments then colour
```netdsl code blocks. Only Pygments imports this module; netdsl itself never does, so the op
names are written out here (tests/test_lexer.py checks them against netdsl.ops).
"""
from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import (Comment, Keyword, Name, Number, Operator, Punctuation, String, Text,
                            Whitespace)

__all__ = ["NetDSLLexer"]

#: The ops a user writes, the aliases and `id` (netdsl.ops: OPS with writable=True, ALIASES).
OP_NAMES = ("conv", "deconv", "maxpool", "avgpool", "gap", "fc", "bn", "lrn", "dropout", "relu", "tanh",
            "sigmoid", "lrelu", "elu", "hardswish", "relu6", "hardsigmoid", "silu", "gelu", "gelu_tanh",
            "layerscale", "stochastic_depth", "softmax", "flatten", "crop", "pool", "id",
            "dwconv", "adaptive_avgpool", "adaptive_maxpool", "gmp",
            "channels", "shuffle", "upsample",
            "tokens", "class_token", "pos_embedding", "attention", "token",
            "layernorm")
CONSTANTS = ("true", "false", "none")
_VALUE = r"(?:[0-9]+|[A-Za-z_][A-Za-z0-9_]*|\{[^{}\n]*\})"
_NUMBER = r"(?:[0-9]+|\{[^{}\n]*\})"
#: conv3-64, conv7-64/2, conv1x7-192, deconv4-21/2, conv1-{4*c}, dwconv3/2, dwconv1x7, maxpool3/2,
#: avgpool7, fc4096, fc{n}
SLIDE = (rf"(?:conv{_NUMBER}(?:x{_NUMBER})?-{_VALUE}|deconv{_NUMBER}-{_VALUE}|dwconv{_NUMBER}(?:x{_NUMBER})?"
         rf"|(?:max|avg)pool{_NUMBER}|fc{_NUMBER})"
         rf"(?:/{_VALUE})?(?![A-Za-z0-9_{{])")


class NetDSLLexer(RegexLexer):
    """The .net language of netdsl: `[(conv3-64)*2 - pool]*5 - fc4096*2 - fc1000`."""

    name = "netdsl"
    aliases = ["netdsl", "net"]
    filenames = ["*.net"]
    mimetypes = ["text/x-netdsl"]

    tokens = {
        "root": [
            (r"[ \t\r\f]+", Whitespace),
            (r"\n", Whitespace),
            (r"#[^\n]*", Comment.Single),
            (r'"[^"\n]*"', String.Double),
            (r"\b(def|net)(\s+)([A-Za-z_][A-Za-z0-9_]*)",
             bygroups(Keyword.Declaration, Whitespace, Name.Function)),
            (words(("use", "input", "activation"), suffix=r"\b"), Keyword.Namespace),
            (words(("if", "then", "else", "for"), prefix=r"\b", suffix=r"\b"), Keyword),
            (words(("and", "or", "not"), prefix=r"\b", suffix=r"\b"), Operator.Word),
            (r"(cat|concat|add|mul)(\{)", bygroups(Keyword, Punctuation)),
            (r"[0-9]+(?:x[0-9]+)+(?![A-Za-z0-9_])", Number.Integer),  # a shape: 3x224x224
            (SLIDE, Name.Builtin),
            (r"(@)((?:input|[A-Za-z_][A-Za-z0-9_]*)(?:\.[A-Za-z_][A-Za-z0-9_]*)*)",
             bygroups(Operator, Name.Label)),
            (r"([A-Za-z_][A-Za-z0-9_]*)(\s*)(:)", bygroups(Name.Label, Text, Punctuation)),
            (r"([A-Za-z_][A-Za-z0-9_]*)(\s*)(=)(?!=)", bygroups(Name.Attribute, Text, Operator)),
            (words(OP_NAMES, suffix=r"\b"), Name.Builtin),
            (words(CONSTANTS, suffix=r"\b"), Keyword.Constant),
            (r"[A-Za-z_][A-Za-z0-9_]*", Name),
            (r"(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[0-9]+[eE][-+]?[0-9]+", Number.Float),
            (r"[0-9]+", Number.Integer),
            (r"==|!=|<=|>=|<|>|//|[-*%+=/]", Operator),
            (r"[()\[\]{},|]", Punctuation),
        ],
    }
