"""Jupyter: a Network's inline forms and the %%netdsl cell magic, through IPython's InteractiveShell."""
from __future__ import annotations

import re

import pytest

import netdsl

pytest.importorskip("IPython")
from IPython.core.interactiveshell import InteractiveShell  # noqa: E402

SCRIPT = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def shell():
    shell = InteractiveShell.instance()
    result = shell.run_cell("%load_ext netdsl.jupyter")
    assert result.success
    return shell


def shown(shell, value) -> dict:
    data, _ = shell.display_formatter.format(value)
    return data


def test_a_network_shows_its_summary_and_drawing(shell):
    network = netdsl.parse("conv3-8 - pool - fc10", input="3x8x8")
    data = shown(shell, network)
    assert sorted(data) == ["image/svg+xml", "text/html", "text/plain"]
    assert data["text/plain"] == "<Network net: 3x8x8 -> 10, 1,514 params, 15,104 MACs>"
    assert data["image/svg+xml"].startswith("<?xml")
    page = data["text/html"]
    assert page.startswith('<div class="netdsl-network"><pre>net (&lt;string&gt;): 3x8x8 -&gt; 10\n')
    assert "params                   1,514" in page
    assert page.endswith("</svg>\n</div>") and "<?xml" not in page and "<svg" in page
    assert ">conv3&#45;8+relu</text>" in page and ">fc10</text>" in page  # the drawing's nodes


def test_user_text_in_a_networks_html_is_escaped(shell):
    network = netdsl.parse("conv3-8 - pool - fc10", input="3x8x8", path=f"{SCRIPT}.net")
    page = shown(shell, network)["text/html"]
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;.net" in page


def test_the_cell_magic_shows_each_net(shell):
    result = shell.run_cell("%%netdsl --input 3x16x16\n"
                            "net a = conv3-8 - pool - fc10\nnet b = fc10\n")
    assert result.success
    assert repr(result.result) == ("<Network a: 3x16x16 -> 10, 5,354 params, 60,416 MACs>\n"
                                   "<Network b: 3x16x16 -> 10, 7,690 params, 7,680 MACs>")
    page = shown(shell, result.result)["text/html"]
    assert page.count('<div class="netdsl-network">') == 2
    assert re.search(r"<pre>b \(&lt;string&gt;\): 3x16x16 -&gt; 10\n", page)


def test_the_cell_magic_picks_a_net_and_stores_it(shell):
    result = shell.run_cell("%%netdsl --net b --as picked\n"
                            "input 3x16x16\nnet a = conv3-8 - pool - fc10\nnet b = fc10\n")
    assert result.success
    assert shell.user_ns["picked"].name == "b"
    assert shell.user_ns["picked"].params == 7_690


def test_a_mistake_shows_the_compiler_message_escaped_without_a_traceback(shell, capsys):
    result = shell.run_cell(f"%%netdsl\ninput 3x32x32\nnet a = conv3-8 - pooll # {SCRIPT}\n")
    assert result.success and result.error_in_exec is None
    page = shown(shell, result.result)["text/html"]
    assert page == (
        '<pre class="netdsl-error">&lt;string&gt;:2:19: error: unknown op or definition pooll\n'
        "    net a = conv3-8 - pooll # &lt;script&gt;alert(1)&lt;/script&gt;\n"
        "                      ^^^^^\n"
        "note: did you mean pool?</pre>")
    assert "Traceback" not in capsys.readouterr().out


def test_bad_options_are_reported_not_raised(shell):
    result = shell.run_cell("%%netdsl --input 3xx2\nfc10\n")
    assert result.success
    assert repr(result.result).startswith("%%netdsl: argument --input: ")
    result = shell.run_cell("%%netdsl --colour\nfc10\n")
    assert repr(result.result).startswith("%%netdsl: unrecognized arguments: --colour\nusage: %%netdsl")


def test_a_cells_use_finds_the_shipped_networks_only(shell, tmp_path, monkeypatch):
    (tmp_path / "mine.net").write_text("def mine = fc10\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert repr(shell.run_cell('%%netdsl --input 3x32x32\nuse "vgg.net"\nblock(1, 8)\n').result) == \
        "<Network net: 3x32x32 -> 8x16x16, 224 params, 221,184 MACs>"
    assert repr(shell.run_cell('%%netdsl --input 10\nuse "mine.net"\nmine\n').result).startswith(
        "<string>:1:5: error: cannot find mine.net")
