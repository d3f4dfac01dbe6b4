"""netdsl draw: golden DOT, determinism, escaping, rendering without system Graphviz, no torch."""
import subprocess
import sys

import pytest

import netdsl
from conftest import GOLDEN, NETWORKS, check_golden
from netdsl.cli import main
from netdsl.draw import find_renderer, render

GOLDEN_DRAWINGS = [
    ("vgg16", {}),
    ("resnet50", {}),
    ("resnet50", {"depth": 0, "stats": True}),
    ("googlenet:googlenet", {}),
    ("fcn:fcn8s", {}),
    ("lenet5", {"depth": None, "stats": True, "rankdir": "LR"}),
]


def _golden_name(target, kwargs):
    suffix = "".join(f"_{k}{'' if v is True else v}" for k, v in sorted(kwargs.items()))
    return target.replace(":", "_") + suffix + ".dot"


@pytest.mark.parametrize("target,kwargs", GOLDEN_DRAWINGS,
                         ids=[_golden_name(t, k) for t, k in GOLDEN_DRAWINGS])
def test_golden_dot(target, kwargs):
    source = netdsl.load(target).draw(**kwargs).source
    assert source == netdsl.load(target).draw(**kwargs).source  # deterministic
    check_golden(GOLDEN / "draw" / _golden_name(target, kwargs), source)


def test_collapsed_boxes_read_like_the_program():
    source = netdsl.load("resnet:resnet152").draw().source
    assert "bottleneck(256) x35" in source and "bottleneck_down(256, 2)" in source
    assert "stem" in source and "stem()" not in source
    # consecutive identical calls are one box, whether written as a repeat or twice
    for target in ("vgg:D", "vgg16"):
        source = netdsl.load(target).draw(depth=0).source
        assert '"block(3, 256)\\n256x28x28"' in source and '"block(3, 512) x2\\n512x7x7"' in source


def test_labelled_calls_are_not_merged_with_their_neighbours():
    source = netdsl.load("fcn:fcn8s").draw().source
    assert '"p4: block(3, 512)\\n512x44x44"' in source and '"block(3, 512)\\n512x22x22"' in source


def test_edges_carry_shapes_and_skip_connections_are_edges():
    net = netdsl.load("fcn:fcn8s")
    source = net.draw(depth=1).source
    assert 'label="21x34x34"' in source
    assert "size of 21x34x34" in source and "style=dashed" in source  # crop(like=@upscore2)
    graph = net.draw(depth=None)
    edges = [line for line in graph.source.splitlines() if line.startswith("\t") and " -> " in line
             and "[label=" in line and not line.startswith("\tfontname")]
    assert len(edges) == sum(len(n.inputs) for n in net.graph)


def test_every_layer_is_drawn_when_expanded():
    net = netdsl.load("resnet:resnet152")
    source = net.draw(depth=None).source
    for node in net.graph:
        assert f"\tn{node.id} [" in source


def test_user_strings_are_escaped():
    net = netdsl.parse("conv3-8 - fc10", input="3x8x8")
    source = net.draw(title='a "quoted" title \\ with <html> and {braces}').source
    assert 'label="a \\"quoted\\" title \\\\ with <html> and {braces}"' in source
    svg = render(source, "svg").decode()
    assert "<svg" in svg and "quoted" in svg


def test_renders_svg_and_png_without_system_graphviz():
    source = netdsl.load("resnet50").draw().source
    assert render(source, "svg", prefer="pure").startswith(b"<?xml")
    assert render(source, "png", prefer="pure").startswith(b"\x89PNG")


def test_pdf_needs_system_graphviz():
    with pytest.raises(netdsl.NetDSLError, match="graphviz-pure cannot write pdf"):
        find_renderer("pdf", prefer="pure")


def test_fully_expanded_resnet152_is_a_valid_svg():
    svg = render(netdsl.load("resnet:resnet152").draw(depth=None).source, "svg", prefer="pure")
    assert svg.count(b'class="node"') == len(netdsl.load("resnet:resnet152").graph)
    assert svg.rstrip().endswith(b"</svg>")


def test_jupyter_display():
    bundle = netdsl.load("lenet5")._repr_mimebundle_()
    assert bundle["image/svg+xml"].lstrip().startswith("<?xml")
    assert bundle["text/plain"].startswith("<Network lenet5")


def test_cli_draw_writes_each_format(tmp_path, capsys):
    for name in ("r.svg", "r.png", "r.dot"):
        out = tmp_path / name
        assert main(["draw", str(NETWORKS / "resnet50.net"), "-o", str(out)]) == 0
        assert out.stat().st_size > 1000
    assert (tmp_path / "r.dot").read_text() == netdsl.load("resnet50").draw().source
    assert "wrote" in capsys.readouterr().out


def test_cli_draw_default_output_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["draw", "lenet5", "--expand", "--stats"]) == 0
    assert (tmp_path / "lenet5.svg").read_bytes().startswith(b"<?xml")


def test_cli_draw_bad_format(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["draw", "lenet5", "-o", "x.bmp"])
    assert caught.value.code == 1


def test_draw_does_not_import_torch(tmp_path):
    code = ("import sys; from netdsl.cli import main; main(['draw', 'resnet50', '-o', %r]); "
            "sys.exit(3 if 'torch' in sys.modules else 0)" % str(tmp_path / "r.svg"))
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_doc_images_are_current():
    """docs/images are what the commands in docs/drawing.md make (regenerate them if this fails)."""
    from conftest import ROOT
    doc = (ROOT / "docs" / "drawing.md").read_text()
    import re
    for command in re.findall(r"`netdsl draw ([^`]*) -o docs/images/(\S+)\.svg`", doc):
        args, name = command
        svg = (ROOT / "docs" / "images" / f"{name}.svg").read_text()
        argv = args.split()
        kwargs = {"depth": 1, "stats": "--stats" in argv,
                  "rankdir": argv[argv.index("--rankdir") + 1] if "--rankdir" in argv else "TB"}
        if "--expand" in argv:
            kwargs["depth"] = None
        if "--depth" in argv:
            kwargs["depth"] = int(argv[argv.index("--depth") + 1])
        expected = render(netdsl.load(argv[0]).draw(**kwargs).source, "svg", prefer="pure").decode()
        assert svg == expected, name
