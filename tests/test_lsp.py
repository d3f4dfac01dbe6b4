"""`netdsl lsp`, driven through pygls's LanguageClient against a real server subprocess.

Every answer is checked for its exact range (0-based lines, UTF-16 columns) and text.
"""
from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path

import pytest

pytest.importorskip("pygls")
from lsprotocol import types as lsp  # noqa: E402
from pygls.lsp.client import LanguageClient  # noqa: E402

DATA = Path(__file__).parent / "data" / "editor"
BLOCKS = DATA / "blocks.net"
PARTS = DATA / "parts.net"


class Session:
    """One server process and a client on an event loop of its own thread, so tests stay sync."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = LanguageClient("netdsl-test", "1")
        self.diagnostics: dict[str, list[lsp.Diagnostic]] = {}
        self.versions = 0

        @self.client.feature(lsp.TEXT_DOCUMENT_PUBLISH_DIAGNOSTICS)
        def published(params: lsp.PublishDiagnosticsParams):
            self.diagnostics[params.uri] = params.diagnostics

        self.run(self._start())

    async def _start(self):
        # -P: the repository's ./netdsl must not shadow the installed package
        await self.client.start_io(sys.executable, "-P", "-m", "netdsl.cli", "lsp")
        await self.client.initialize_async(lsp.InitializeParams(
            capabilities=lsp.ClientCapabilities(), process_id=None, root_uri=DATA.as_uri()))
        self.client.initialized(lsp.InitializedParams())

    def run(self, coroutine, timeout: float = 60):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def open(self, uri: str, text: str) -> list[lsp.Diagnostic]:
        self.diagnostics.pop(uri, None)
        self.versions += 1
        self.client.text_document_did_open(lsp.DidOpenTextDocumentParams(
            lsp.TextDocumentItem(uri=uri, language_id="netdsl", version=self.versions, text=text)))
        return self.wait_diagnostics(uri)

    def change(self, uri: str, text: str) -> list[lsp.Diagnostic]:
        self.diagnostics.pop(uri, None)
        self.versions += 1
        self.client.text_document_did_change(lsp.DidChangeTextDocumentParams(
            lsp.VersionedTextDocumentIdentifier(uri=uri, version=self.versions),
            [lsp.TextDocumentContentChangeWholeDocument(text=text)]))
        return self.wait_diagnostics(uri)

    def wait_diagnostics(self, uri: str) -> list[lsp.Diagnostic]:
        async def wait():
            while uri not in self.diagnostics:
                await asyncio.sleep(0.01)
            return list(self.diagnostics[uri])
        return self.run(wait())

    def close(self):
        async def stop():
            await self.client.shutdown_async(None)
            self.client.exit(None)
            await self.client.stop()
        try:
            self.run(stop(), timeout=20)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)


@pytest.fixture(scope="module")
def server():
    session = Session()
    yield session
    session.close()


@pytest.fixture(scope="module")
def blocks(server):
    uri = BLOCKS.as_uri()
    assert server.open(uri, BLOCKS.read_text(encoding="utf-8")) == []
    return uri


def at(line: int, character: int) -> lsp.Position:
    return lsp.Position(line, character)


def span(line: int, start: int, end: int, end_line: int | None = None) -> lsp.Range:
    return lsp.Range(at(line, start), at(line if end_line is None else end_line, end))


def document(uri: str) -> lsp.TextDocumentIdentifier:
    return lsp.TextDocumentIdentifier(uri=uri)


# -- diagnostics ----------------------------------------------------------------------------------

BROKEN = """input 3x32x32
net a = conv3-64 - pool - fc10
net b = conv3-64 - pooll - fc10
net c = conv3-8/2 - pool*5
net d = conv5-8/2(pad=0) - fc10
"""


def test_every_net_reports_its_error_and_warning_at_its_range(server):
    uri = "untitled:broken"
    found = server.open(uri, BROKEN)
    assert [(d.range, d.severity, d.message) for d in found] == [
        (span(2, 19, 24), lsp.DiagnosticSeverity.Error,
         "unknown op or definition pooll\nnote: did you mean pool?"),
        (span(3, 20, 24), lsp.DiagnosticSeverity.Error,
         "maxpool2/2 makes the tensor empty: 8x1x1 -> 8x0x0\n"
         "note: in repeat iteration 5 of 5 at <string>:4:21\n"
         "note: shapes: 3x32x32 -> ... -> 8x4x4 -> 8x2x2 -> 8x1x1 -> maxpool2/2: 8x0x0\n"
         "note: 32x32 does not fit: 63 does (the valid sizes: H >= 63, and W alike)"),
        (span(4, 8, 24), lsp.DiagnosticSeverity.Warning,
         "conv5-8/2 leaves 1 row and 1 column of the input unused: (32 + 2*0 - 5) is not a multiple "
         "of stride 2\nnote: the slides call this \"doesn't fit\"; change the padding or stride, or "
         "use ceil mode for pools"),
    ]
    assert all(d.source == "netdsl" for d in found)


def test_a_fix_clears_the_diagnostics(server):
    uri = "untitled:fixed"
    assert len(server.open(uri, "input 3x32x32\nnet a = conv3-64 - pooll\n")) == 1
    assert server.change(uri, "input 3x32x32\nnet a = conv3-64 - pool\n") == []


def test_columns_count_utf16_code_units(server):
    # U+1F600 is two UTF-16 units: the string "😀.net" with its quotes ends at column 4 + 8 = 12
    found = server.open("untitled:emoji", 'use "😀.net"\nnet a = fc10\n')
    assert [(d.range, d.message) for d in found] == [
        (span(0, 4, 12), "cannot find 😀.net\nnote: looked in the shipped networks")]
    # and a later error on a line after a wide character is still placed by code units
    found = server.open("untitled:emoji2", "input 784 # 😀\nnet a = fc10 - pooll\n")
    assert [d.range for d in found] == [span(1, 15, 20)]


def test_a_syntax_error_has_its_range(server):
    found = server.open("untitled:syntax", "input 3x32x32\nnet a = conv3-64 -\n")
    assert [(d.range, d.message.splitlines()[0]) for d in found] == [
        (span(1, 18, 0, end_line=2), "unexpected end of input")]


# -- hover ----------------------------------------------------------------------------------------

def hover(server, uri: str, line: int, character: int) -> lsp.Hover | None:
    return server.run(server.client.text_document_hover_async(
        lsp.HoverParams(document(uri), at(line, character))))


def test_hover_on_an_op_shows_attributes_shapes_params_and_receptive_field(server, blocks):
    found = hover(server, blocks, 5, 29)  # the conv1-8 of net small
    assert found.range == span(5, 27, 34)
    assert found.contents.value == (
        "**conv**: 2-D convolution (cross-correlation, as in every framework)\n\n```\n"
        "conv(k=1, c=8, stride=1, pad=0, groups=1, dilation=1, bias=true, fixed=false, act=relu)\n"
        "```\n\n"
        "- `p`: 16x16x16 -> 8x16x16, 136 params, 32,768 MACs, receptive field 6 (stride 2)\n\n"
        "Worked arithmetic of `p`:\n\n```text\n"
        "pad         1*(1-1)//2 = 0   (the default: 'same' at stride 1)\n"
        "out size    (16 + 2*0 - 1)/1 + 1 = 16   (floor mode)\n"
        "params      1*1*16*8 + 8 = 136\n"
        "MACs        16*16*8 * 1*1*16 = 32,768   (output values * taps per output)\n"
        "im2col      [16*1*1 x 16*16] = [16 x 256]   (per image: C*k*k rows, Ho*Wo columns)\n"
        "rf          6 + (1-1)*2 = 6\n"
        "jump        2*1 = 2\n"
        "act         relu   (the net's implicit activation, fused into the layer)\n"
        "```")


def test_hover_on_an_op_of_a_definition_lists_every_layer_it_makes(server, blocks):
    found = hover(server, blocks, 4, 21)  # the conv3-c of def block
    assert found.range == span(4, 21, 28)
    lines = found.contents.value.split("\n")
    assert lines[3] == "conv(k=3, c=16, stride=1, pad=1, groups=1, dilation=1, bias=true, fixed=false, act=relu)"
    assert lines[5:13] == [
        "(the attributes of the first)", "", "3 layers come from this op:", "",
        "- `small: block1.conv1`: 3x32x32 -> 16x32x32, 448 params, 442,368 MACs, receptive field 3 (stride 1)",
        "- `small: block1.conv2`: 16x32x32 -> 16x32x32, 2,320 params, 2,359,296 MACs, receptive field 5 (stride 1)",
        "- `wide: block1.conv1`: 16x32x32 -> 32x32x32, 4,640 params, 4,718,592 MACs, receptive field 5 (stride 1)",
        ""]
    # the worked arithmetic is the first layer's
    assert lines[13:16] == ["Worked arithmetic of `small: block1.conv1`:", "", "```text"]
    assert "out size    (32 + 2*1 - 3)/1 + 1 = 32   (floor mode)" in lines
    assert "im2col      [3*3*3 x 32*32] = [27 x 1024]   (per image: C*k*k rows, Ho*Wo columns)" in lines
    assert lines[-1] == "```"


def test_hover_on_a_call_and_on_a_net(server, blocks):
    found = hover(server, blocks, 5, 13)  # block(16)
    assert found.range == span(5, 12, 21)
    assert found.contents.value == ("**def block**(c, n=2)\n\n"
                                    "- `block(16, 2)`: 3x32x32 -> 16x16x16, 3 layers, 2,768 params")
    found = hover(server, blocks, 6, 5)  # net wide
    assert found.range == span(6, 4, 8)
    assert found.contents.value == "**net wide**: 3x32x32 -> 10, 5,450 params, 5,161,280 MACs, 6 layers"


def test_hover_on_a_label_describes_the_layer_it_names(server, blocks):
    found = hover(server, blocks, 5, 24)  # the p of `p: conv1-8`
    assert found.range == span(5, 27, 34)
    assert ("- `p`: 16x16x16 -> 8x16x16, 136 params, 32,768 MACs, receptive field 6 (stride 2)\n\n"
            "Worked arithmetic of `p`:") in found.contents.value


def test_hover_shows_the_rule_that_applied(server):
    uri = "untitled:hover-explain"
    server.open(uri, "input 3x227x227\nnet a = conv11-96/4(pad=0) - maxpool3/2(ceil) - fc10\n")
    conv = hover(server, uri, 1, 10).contents.value
    assert "out size    (227 + 2*0 - 11)/4 + 1 = 55   (floor mode)" in conv
    assert "params      11*11*3*96 + 96 = 34,944" in conv and "[363 x 3025]" in conv
    pool = hover(server, uri, 1, 32).contents.value
    assert "out size    (55 + 2*0 - 3)/2 + 1 = 27   (ceil mode)" in pool
    assert "rf          11 + (3-1)*4 = 19" in pool


def test_hover_on_a_broken_net_still_describes_the_op(server):
    uri = "untitled:hover-broken"
    server.open(uri, "input 3x8x8\nnet a = pool*4\n")
    found = hover(server, uri, 1, 9)
    assert found.range == span(1, 8, 12)
    assert found.contents.value.startswith("**maxpool**: max pooling\n\n- `k` (int, required): window size")


# -- completion -----------------------------------------------------------------------------------

def complete(server, uri: str, line: int, character: int) -> list[lsp.CompletionItem]:
    result = server.run(server.client.text_document_completion_async(
        lsp.CompletionParams(document(uri), at(line, character))))
    return result.items


def test_completion_offers_ops_aliases_definitions_and_keywords(server, blocks):
    labels = [item.label for item in complete(server, blocks, 6, 11)]
    for expected in ("conv", "maxpool", "fc", "bn", "pool", "id", "block", "stem", "net", "use"):
        assert expected in labels
    for hidden in ("add", "concat", "input"):  # ops only the expander creates
        assert labels.count(hidden) == (1 if hidden == "input" else 0)  # `input` is the keyword


def test_completion_inside_parentheses_offers_attributes_or_parameters(server):
    uri = "untitled:complete"
    server.open(uri, "def block(c, n=2) = conv3-c\nnet a = conv3-64/2(pa\nnet b = block(\n")
    items = complete(server, uri, 1, 21)
    assert [item.label for item in items] == ["k", "c", "stride", "pad", "groups", "dilation", "bias",
                                              "fixed", "act", "kh", "kw", "stride_h", "stride_w", "pad_h",
                                              "pad_w"]
    assert items[3].insert_text == "pad="
    assert [item.label for item in complete(server, uri, 2, 14)] == ["c", "n"]


def test_completion_after_at_offers_labels(server):
    uri = "untitled:labels"
    text = "input 3x32x32\nnet a = x: conv3-8 - y: pool - cat{ @x | @ }\n"
    server.open(uri, text)
    assert [item.label for item in complete(server, uri, 1, 42)] == ["input", "x", "y"]


# -- go to definition -----------------------------------------------------------------------------

def definition(server, uri: str, line: int, character: int):
    return server.run(server.client.text_document_definition_async(
        lsp.DefinitionParams(document(uri), at(line, character))))


def test_go_to_definition_of_a_definition_a_label_and_a_use(server, blocks):
    assert definition(server, blocks, 5, 14) == lsp.Location(blocks, span(4, 4, 9))
    assert definition(server, blocks, 5, 43) == lsp.Location(blocks, span(5, 24, 25))  # @p
    assert definition(server, blocks, 6, 12) == lsp.Location(PARTS.resolve().as_uri(), span(0, 4, 8))
    assert definition(server, blocks, 1, 7) == lsp.Location(PARTS.resolve().as_uri(), span(0, 0, 0))
    assert definition(server, blocks, 5, 30) is None  # conv1-8 is an op


# -- symbols and rename ---------------------------------------------------------------------------

def test_document_symbols_are_the_nets_and_definitions(server, blocks):
    symbols = server.run(server.client.text_document_document_symbol_async(
        lsp.DocumentSymbolParams(document(blocks))))
    assert [(s.name, s.kind, s.detail, s.range, s.selection_range) for s in symbols] == [
        ("block", lsp.SymbolKind.Function, "def", span(4, 4, 38), span(4, 4, 9)),
        ("small", lsp.SymbolKind.Module, "3x32x32 -> 10, 43,874 params", span(5, 4, 58), span(5, 4, 9)),
        ("wide", lsp.SymbolKind.Module, "3x32x32 -> 10, 5,450 params", span(6, 4, 43), span(6, 4, 8)),
    ]


def rename(server, uri: str, line: int, character: int, name: str):
    return server.run(server.client.text_document_rename_async(
        lsp.RenameParams(document(uri), at(line, character), name)))


def test_rename_a_label_and_a_definition(server, blocks):
    for column in (24, 42, 43):  # on the label, on the @ of @p, on its p
        edit = rename(server, blocks, 5, column, "skip")
        assert list(edit.changes) == [blocks]
        assert list(edit.changes[blocks]) == [lsp.TextEdit(span(5, 24, 25), "skip"),
                                              lsp.TextEdit(span(5, 43, 44), "skip")]
    edit = rename(server, blocks, 4, 5, "stage")  # on def block
    assert list(edit.changes[blocks]) == [lsp.TextEdit(span(4, 4, 9), "stage"),
                                          lsp.TextEdit(span(5, 12, 17), "stage"),
                                          lsp.TextEdit(span(6, 18, 23), "stage")]
    placeholder = server.run(server.client.text_document_prepare_rename_async(
        lsp.PrepareRenameParams(document(blocks), at(6, 20))))
    assert placeholder == lsp.PrepareRenamePlaceholder(span(6, 18, 23), "block")


@pytest.mark.parametrize("name, reason", [("pool", "pool is a reserved word"),
                                          ("2x", "'2x' is not a name"),
                                          ("stem", "a definition named stem already exists")])
def test_a_rename_that_would_break_the_program_is_refused(server, blocks, name, reason):
    with pytest.raises(Exception) as refused:
        rename(server, blocks, 4, 5, name)
    assert reason in str(refused.value)


def test_a_mistake_in_a_used_file_is_shown_on_the_use(server):
    uri = (DATA / "unsaved.net").as_uri()  # not on disk: its folder is where `use` looks
    found = server.open(uri, 'input 3x8x8\nuse "parts.net"\nuse "broken_part.net"\nnet a = broken_stem\n')
    part = (DATA / "broken_part.net").resolve()
    assert [(d.range, d.message.splitlines()[0]) for d in found] == [
        (span(2, 4, 21), f"{part}:1:33: bn eps must be at least 0, got -1.0")]


def test_only_the_lsp_command_imports_pygls():
    import subprocess
    script = ("import sys, netdsl.cli; status = netdsl.cli.main(['check', sys.argv[1]]); "
              "assert status == 0; assert 'pygls' not in sys.modules and 'lsprotocol' not in sys.modules")
    done = subprocess.run([sys.executable, "-P", "-c", script, str(BLOCKS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "small: ok" in done.stdout


# -- Neovim, headless: the set-up docs/editors.md gives, without nvim-lspconfig -------------------

NEOVIM_SETUP = r"""
local file, out, command = vim.env.NETDSL_FILE, vim.env.NETDSL_OUT, vim.env.NETDSL_COMMAND
vim.cmd("edit " .. vim.fn.fnameescape(file))
vim.bo.filetype = "netdsl"
local config = { name = "netdsl", cmd = { command, "lsp" }, root_dir = vim.fn.fnamemodify(file, ":h") }
if vim.lsp.start then   -- Neovim 0.8 and later
  vim.lsp.start(config)
else                    -- Neovim 0.7
  vim.lsp.buf_attach_client(0, vim.lsp.start_client(config))
end
local arrived = vim.wait(30000, function() return #vim.diagnostic.get(0) > 0 end, 50)
local lines = { arrived and "arrived" or "timed out" }
for _, d in ipairs(vim.diagnostic.get(0)) do
  table.insert(lines, string.format("%d:%d-%d:%d %d %s", d.lnum, d.col, d.end_lnum, d.end_col,
                                    d.severity, (d.message:gsub("\n", " | "))))
end
vim.fn.writefile(lines, out)
vim.cmd("qall!")
"""


def test_neovim_shows_the_diagnostics_headless(tmp_path):
    import os
    import shutil
    import subprocess
    nvim = shutil.which("nvim")
    if nvim is None:
        pytest.skip("nvim is not installed (Debian: apt-get install neovim)")
    command = Path(sys.executable).parent / "netdsl"
    assert command.exists(), "the netdsl console script comes with pip install -e ."
    source = tmp_path / "mistake.net"
    source.write_text("input 3x32x32\nnet a = conv3-8 - pooll - fc10\n", encoding="utf-8")
    setup = tmp_path / "setup.lua"
    setup.write_text(NEOVIM_SETUP, encoding="utf-8")
    out = tmp_path / "diagnostics.txt"
    env = {**os.environ, "NETDSL_FILE": str(source), "NETDSL_OUT": str(out),
           "NETDSL_COMMAND": str(command), "XDG_STATE_HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    subprocess.run([nvim, "--headless", "--clean", "-n", "-c", f"luafile {setup}"], env=env,
                   timeout=90, check=True, capture_output=True, stdin=subprocess.DEVNULL)
    assert out.read_text(encoding="utf-8").splitlines() == [
        "arrived", "1:18-1:23 1 unknown op or definition pooll | note: did you mean pool?"]


def test_a_label_is_not_renamed_to_another_label_of_its_net(server):
    uri = "untitled:two-labels"
    server.open(uri, "input 3x8x8\nnet a = x: conv3-8 - y: conv3-8 - add{ @x | @y }\n")
    with pytest.raises(Exception) as refused:
        rename(server, uri, 1, 8, "y")
    assert "a label named y already exists there" in str(refused.value)
    edit = rename(server, uri, 1, 8, "z")
    assert list(edit.changes[uri]) == [lsp.TextEdit(span(1, 8, 9), "z"), lsp.TextEdit(span(1, 40, 41), "z")]


def test_without_pygls_the_command_says_what_to_install():
    import subprocess
    script = ("import sys; sys.modules['pygls'] = None; from netdsl.cli import main; "
              "sys.exit(main(['lsp']))")
    done = subprocess.run([sys.executable, "-P", "-c", script], capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (
        1, "", "error: netdsl lsp needs pygls: pip install 'netdsl[lsp]'\n")


def test_go_to_definition_and_rename_reach_into_both_forms_of_a_choice():
    """The walk over a statement's elements enters `if ... then ... else ...` (no server needed)."""
    from netdsl import lsp as netdsl_lsp
    text = ("def plain(c) = conv3-c\ndef block(c) = if in_channels == c then add{ plain(c) | id } "
            "else plain(c)\nnet a input 3x8x8 = block(8) - block(8)\n")
    analysis = netdsl_lsp.analyse(text, "choice.net")
    assert netdsl_lsp.diagnostics(analysis) == []
    for call in (text.index("plain(c) | id"), text.index("else plain") + 5):
        location = netdsl_lsp.definition_at(analysis, call + 1)
        assert location is not None and location.range.start.line == 0, call
    name, spans = netdsl_lsp.rename_spans(analysis, text.index("plain"))
    assert name == "plain" and len(spans) == 3
