"""netdsl.parse_module: parse once, build one net or each; the parse caches behind it."""
from pathlib import Path

import pytest

import netdsl
from netdsl.errors import NetDSLNameError, NetDSLShapeError, NetDSLSyntaxError, Source
from netdsl.modules import resolve_use, shipped_networks_dir
from netdsl.parser import RecentlyUsed, _ProgramBuilder, _parse, _to_ast, normalize_text, parse_program

TWO_NETS = ("input 3x32x32\n"
            "def block(c) = conv3-c - pool\n"
            "net small = block(8) - fc10\n"
            "net large = block(64) - fc10\n")


def test_nets_definitions_and_one_net_built():
    parsed = netdsl.parse_module(TWO_NETS, path="two.net")
    assert parsed.nets == ["small", "large"] and parsed.definitions == ["block"]
    large = parsed.build("large")
    assert large.name == "large" and large.params == 3 * 9 * 64 + 64 + 64 * 16 * 16 * 10 + 10
    assert large.output_shape == (10,)
    assert large.graph.structure() == netdsl.parse(TWO_NETS, net="large", path="two.net").graph.structure()


def test_an_unnamed_chain_is_named_after_the_file():
    parsed = netdsl.parse_module("conv3-8 - pool - fc10\n", path="tiny.net")
    assert parsed.nets == ["tiny"]
    assert parsed.build(input="3x8x8").params == netdsl.parse("conv3-8 - pool - fc10", input="3x8x8").params
    assert parsed.build("tiny", input=(3, 8, 8)).output_shape == (10,)


def test_only_the_asked_net_is_built():
    text = TWO_NETS + "net broken = block(8) - pool - pool - pool - pool - pool - fc10\n"
    parsed = netdsl.parse_module(text, path="three.net")
    assert parsed.build("small").params == 3 * 9 * 8 + 8 + 8 * 16 * 16 * 10 + 10
    with pytest.raises(NetDSLShapeError):
        parsed.build("broken")


def test_build_needs_a_net_name_when_there_are_several():
    parsed = netdsl.parse_module(TWO_NETS, path="two.net")
    with pytest.raises(NetDSLNameError, match=r"two.net defines 2 nets \(small, large\); choose one"):
        parsed.build()
    with pytest.raises(NetDSLNameError, match="has no net named smal") as error:
        parsed.build("smal")
    assert "did you mean small?" in error.value.notes


def test_build_all_matches_parse_all():
    parsed = netdsl.parse_module(TWO_NETS, path="two.net")
    built = parsed.build_all(input="3x16x16")
    expected = netdsl.parse_all(TWO_NETS, input="3x16x16", path="two.net")
    # each is 3*9*c + c (conv) + c*8*8*10 + 10 (fc)
    assert [n.params for n in built] == [n.params for n in expected] == [5354, 42762]


def test_check_reports_every_net_and_keeps_the_ones_that_built():
    text = ("input 3x32x32\n"
            "net good = conv3-8 - fc10\n"
            "net first = conv3-8 - pool - pool - pool - pool - pool - pool - fc10\n"
            "net second = conv3-8 - bogus - fc10\n")
    checked = netdsl.parse_module(text, path="some.net").check()
    assert list(checked.networks) == ["good"] and not checked.ok
    messages = [(d.severity, d.span.line, d.message) for d in checked.diagnostics]
    assert messages[0][:2] == ("error", 3) and "empty" in messages[0][2]
    assert messages[1] == ("error", 4, "unknown op or definition bogus")
    assert len(messages) == 2


def test_check_of_a_clean_file_and_warnings_said_once():
    # A definition's "doesn't fit" warning is the same in both nets that call it: said once.
    text = "def odd = conv3-8/2(pad=0)\nnet a = odd - fc10\nnet b = odd - fc2\n"
    checked = netdsl.parse_module(text, path="w.net").check(input="3x8x8")
    assert checked.ok and list(checked.networks) == ["a", "b"]
    assert [(d.severity, d.span.line) for d in checked.diagnostics] == [("warning", 1)]
    assert netdsl.parse_module(TWO_NETS, path="two.net").check().diagnostics == []


def test_a_syntax_error_is_raised_with_its_place():
    with pytest.raises(NetDSLSyntaxError) as error:
        netdsl.parse_module("net a = conv3-8 -\nnet b = fc10\n", path="bad.net")
    # after "-", `net` reads as a name (a definition call), so the mistake shows at the "="
    assert error.value.diagnostic.render().startswith("bad.net:2:7: error: unexpected '='")


def test_use_is_loaded_once_and_a_changed_file_is_read_again(tmp_path):
    (tmp_path / "blocks.net").write_text("def block(c) = conv3-c - pool\n")
    main = tmp_path / "main.net"
    text = 'use "blocks.net"\ninput 3x8x8\nnet a = block(4) - fc2\n'
    main.write_text(text)
    first = netdsl.parse_module(text, path=str(main))
    assert first.definitions == ["block"] and first.build().params == 3 * 9 * 4 + 4 + 4 * 16 * 2 + 2
    (tmp_path / "blocks.net").write_text("def block(c) = conv3-c - conv3-c - pool\n")
    second = netdsl.parse_module(text, path=str(main))
    assert second.build().params == 3 * 9 * 4 + 4 + 4 * 9 * 4 + 4 + 4 * 16 * 2 + 2
    use = second.program.uses[0]
    assert resolve_use(use, str(main)) == (tmp_path / "blocks.net").resolve()
    with pytest.raises(NetDSLNameError, match="cannot find blocks.net"):
        resolve_use(use, "<string>")


def test_the_same_text_is_parsed_once():
    text = TWO_NETS + "# parsed once\n"
    assert parse_program(text, "once.net") is parse_program(text, "once.net")
    assert parse_program(text, "other.net") is not parse_program(text, "once.net")  # spans name the path
    assert netdsl.parse_module(text, "once.net").program is parse_program(text, "once.net")


# -- statements parsed one by one give the program the whole text gives ---------------------------

def _whole(text: str, path: str):
    """The program as parsing the whole text at once makes it (what parse_program did before)."""
    source = Source(path, normalize_text(text))
    return _ProgramBuilder(source).build(_to_ast(source, 0, _parse(source, source.text, "program", 0)))


def _fields(program):
    # Program's source compares by identity; every other node compares by value, spans by offsets
    return (program.input, program.activation, program.uses, program.defs, program.nets)


def _texts():
    for path in sorted(shipped_networks_dir().glob("*.net")):
        yield path.name, path.read_text()
    yield "header.net", "net a\n  input 3x8x8\n  activation tanh = conv3-4 - fc2\nnet b = fc2\n"
    yield "crlf.net", "\ufeffinput 3x8x8\r\ndef b(c) = conv3-c\r\nnet a = b(4) -\r\n  fc2\r\n"
    yield "comments.net", "# net x = nothing\ninput 3x8x8 # def y\nnet a = conv3-4 # use \"z.net\"\n - fc2\n"


@pytest.mark.parametrize("name,text", list(_texts()), ids=[name for name, _ in _texts()])
def test_statements_parsed_alone_give_the_whole_files_program(name, text):
    expected = _whole(text, name)
    assert _fields(parse_program(text, name)) == _fields(expected)
    edited = text.replace("\n", "\n# an edit\n", 3)  # every later statement moves
    assert _fields(parse_program(edited, name)) == _fields(_whole(edited, name))
    spans = [d.span for d in parse_program(edited, name).defs]
    assert all(span.source.text == normalize_text(edited) for span in spans)


def test_a_statement_split_at_a_keyword_line_still_parses():
    # "input" starts a line inside net a's header: that piece alone does not parse, the whole does
    program = parse_program("net a\ninput 3x8x8 = conv3-4 - fc2\n", "split.net")
    assert program.nets[0].input[0] == (3, 8, 8) and program.input is None


def test_errors_read_as_a_whole_parse_reports_them():
    text = "input 3x8x8\ndef b(c) = conv3-c\nnet a = b(4) - - fc2\nnet c = fc2\n"
    with pytest.raises(NetDSLSyntaxError) as error:
        parse_program(text, "err.net")
    with pytest.raises(NetDSLSyntaxError) as whole:
        _whole(text, "err.net")
    assert error.value.diagnostic.render() == whole.value.diagnostic.render()
    assert error.value.diagnostic.render().startswith("err.net:3:16: error: unexpected '-'")


def test_recently_used_is_bounded_in_entries_and_size():
    recent = RecentlyUsed(max_entries=2, max_size=10)
    recent.put("a", 1, 4)
    recent.put("b", 2, 4)
    assert recent.get("a") == 1  # now b is the least recently used
    recent.put("c", 3, 4)
    assert recent.get("b") is None and recent.get("a") == 1 and recent.get("c") == 3
    recent.put("d", 4, 9)  # too big to keep both: only d stays
    assert (recent.get("a"), recent.get("c"), recent.get("d")) == (None, None, 4)
    recent.put("huge", 5, 11)  # bigger than the whole budget: not kept, nothing evicted
    assert recent.get("huge") is None and recent.get("d") == 4 and recent.size == 9
