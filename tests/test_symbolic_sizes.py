"""Symbolic input sizes (`input 3xHxW`): shapes as formulas, the exact valid sizes, and modules that
take them (docs/language.md, "Symbolic sizes"). The solver itself is tested in test_symbolic.py."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest

import netdsl
from netdsl.errors import NetDSLShapeError
from netdsl.shapes import infer_shapes
from netdsl.symbolic import Size

H, W = Size.name("H"), Size.name("W")
#: Strict: a padded stride-2 conv (odd sizes fit, and sizes 4k through the right padding), then a
#: 2x2 pool that wants an even size: two residue classes mod 4 with different starts.
TWO_CLASSES = "conv3-8/2 - pool - conv3-4(pad=0)"


def concrete_ok(graph, size: int, strict: bool, channels: int = 3) -> bool:
    try:
        infer_shapes(graph, (channels, size, size), strict=strict)
        return True
    except NetDSLShapeError:
        return False


def test_a_file_and_the_command_line_take_size_names_and_a_repeated_name_is_one_size():
    net = netdsl.parse("input 3xHxW\nconv3-8/2 - pool")
    assert net.symbolic and net.input_shape == (3, H, W)
    assert net.output_shape == (8, (H + 1) // 4, (W + 1) // 4)
    square = netdsl.parse("conv3-8/2 - pool", input="3xSxS")
    assert square.input_shape[1] is square.input_shape[2] or square.input_shape[1] == square.input_shape[2]
    assert list(square.valid_sizes) == ["S"]
    with pytest.raises(NetDSLShapeError, match="only the height and width may be size names"):
        netdsl.parse("conv3-8", input=(Size.name("C"), 4, 4))


def test_a_net_whose_valid_set_is_two_residue_classes_matches_the_concrete_checker():
    net = netdsl.parse(TWO_CLASSES, input="3xHxW")
    strict = net.strict_sizes["H"]
    assert strict.describe() == "H = 4k + 3, H >= 11; or H = 4k, H >= 12"
    assert net.valid_sizes["H"].describe() == "H >= 11"
    graph = net.graph
    for size in range(1, 120):
        assert (size in strict) == concrete_ok(graph, size, strict=True), size
        assert (size in net.valid_sizes["H"]) == concrete_ok(graph, size, strict=False), size


@pytest.mark.parametrize("target,upto", [("unet", 420), ("resnet50", 140), ("fcn:fcn8s", 120)])
def test_shipped_size_free_nets_valid_sets_equal_the_concrete_checker(target, upto):
    net = netdsl.load(target, input="1xHxW" if target == "unet" else "3xHxW")
    channels = net.input_shape[0]
    for strict, sets in ((False, net.valid_sizes), (True, net.strict_sizes)):
        found = [s for s in range(1, upto) if concrete_ok(net.graph, s, strict, channels)]
        assert found == sets["H"].values(upto - 1), (target, strict)


def test_every_symbolic_shape_evaluates_to_the_concrete_shape():
    for target, sizes in (("unet", (188, 204, 573)), ("resnet50", (1, 97, 224)), ("fcn:fcn16s", (37, 500))):
        net = netdsl.load(target, input="1xHxW" if target == "unet" else "3xHxW")
        for h in sizes:
            w = h + 16 if target == "unet" else h + 3
            concrete = infer_shapes(net.graph, (net.input_shape[0], h, w)).shapes
            for symbolic, expected in zip(net.shapes, concrete):
                got = tuple(d if isinstance(d, int) else d.evaluate({"H": h, "W": w}) for d in symbolic)
                assert got == expected, (target, h)


def test_unet_sizes_output_and_the_nearest_valid_sizes():
    net = netdsl.load("unet", input="1xHxW")
    assert net.valid_sizes["H"].describe() == "H >= 188"
    assert net.strict_sizes["H"].describe() == "H = 16k + 12, H >= 188"
    assert net.at("1x572x572").output_shape == (2, 388, 388)  # the paper's Figure 1
    assert net.accepts("1x572x572") and net.accepts("1x570x570") and not net.accepts("1x187x187")
    assert not netdsl.load("unet", input="1xHxW", strict=True).accepts("1x570x570")
    with pytest.raises(NetDSLShapeError) as error:
        netdsl.load("unet", input="1x570x570", strict=True)
    assert ("570x570 does not fit: 556 and 572 do (the valid sizes: H = 16k + 12, H >= 188, "
            "and W alike)") in error.value.notes
    with pytest.raises(NetDSLShapeError) as error:
        netdsl.load("unet", input="1x180x180")
    assert error.value.notes[-1].startswith("180x180 does not fit: 188 does")


def test_fcn_and_resnet_take_any_size_and_fcn_gives_a_map_of_the_same_size():
    for name in ("fcn32s", "fcn16s", "fcn8s"):
        net = netdsl.load(f"fcn:{name}", input="3xHxW")
        assert net.output_shape == (21, H, W)
        assert net.valid_sizes["H"].describe() == net.strict_sizes["H"].describe() == "H >= 1"
    resnet = netdsl.load("resnet50", input="3xHxW")
    assert resnet.valid_sizes["H"].smallest() == 1
    gap = next(node for node in resnet.graph.nodes if node.op == "gap")
    assert resnet.shapes[gap.inputs[0]] == (2048, (H + 31) // 32, (W + 31) // 32)


def test_statistics_are_formulas_that_evaluate_to_the_concrete_counts():
    net = netdsl.load("resnet50", input="3xHxW")
    assert net.params == 25_557_032  # no weight depends on the size
    for h, w in ((224, 224), (97, 160)):
        concrete = net.at(f"3x{h}x{w}")
        assert net.macs.evaluate({"H": h, "W": w}) == concrete.macs
        assert net.activations.evaluate({"H": h, "W": w}) == concrete.activations
    assert net.macs.evaluate({"H": 224, "W": 224}) == 4_089_184_256  # torchvision's figure


def test_a_weight_that_depends_on_the_size_is_named_and_cannot_be_compiled():
    net = netdsl.load("vgg16", input="3xHxW")
    assert net.size_dependent_weights == ["fc1"]
    assert net.params.evaluate({"H": 224, "W": 224}) == 138_357_544
    with pytest.raises(NetDSLShapeError, match="fc1's weights depend on the input size"):
        net.compile("numpy")


def run_cli(*args):
    result = subprocess.run([sys.executable, "-m", "netdsl.cli", *args], capture_output=True, text=True,
                            timeout=120)
    return result.returncode, result.stdout, result.stderr


def test_check_summary_json_and_draw_with_size_names(tmp_path):
    status, out, err = run_cli("check", "unet", "--input", "1xHxW")
    assert status == 0, err
    assert out.splitlines()[1:] == ["  valid sizes  H >= 188 (and the same for W)",
                                    "    fits exactly (--strict): H = 16k + 12, H >= 188"]
    assert "1xHxW -> 2x(16*((H + 4)//16) - 188)x(16*((W + 4)//16) - 188), 31,030,658 params" in out
    status, out, err = run_cli("check", "vgg16", "--input", "3xHxW")
    assert status == 0 and "params depend on the input size (fc1)" in out
    status, out, err = run_cli("summary", "unet", "--input", "1xHxW", "--json")
    summary = json.loads(out)
    assert summary["schema"] == 2 and summary["input"] == [1, "H", "W"]
    assert summary["output"] == [2, "16*((H + 4)//16) - 188", "16*((W + 4)//16) - 188"]
    assert summary["sizes"]["H"] == {"valid": "H >= 188", "strict": "H = 16k + 12, H >= 188",
                                     "smallest": 188, "modulus": 16}
    assert summary["params"] == 31_030_658 and isinstance(summary["macs"], str)
    assert any(c["strict_only"] and "centre" in c["reason"] for c in summary["constraints"])
    concrete = json.loads(run_cli("summary", "unet", "--json")[1])
    assert concrete["output"] == [2, 388, 388] and concrete["schema"] == 2
    status, out, err = run_cli("summary", "resnet50", "--input", "3xHxW", "--explain")
    assert status == 0 and "worked at 3x32x32, the example size" in out
    status, out, err = run_cli("draw", "unet", "--input", "1xHxW", "-o", str(tmp_path / "u.dot"))
    assert status == 0
    dot = (tmp_path / "u.dot").read_text()
    assert "64x(H - 4)x(W - 4)" in dot and "H &gt;= 188" in dot or "H >= 188" in dot
    status, out, err = run_cli("compile", "vgg16", "--input", "3xHxW", "-o", str(tmp_path / "v.npz"))
    assert status == 1 and "fc1's weights depend on the input size" in err and "Traceback" not in err


def test_numpy_module_runs_every_valid_size_and_names_the_nearest_for_others():
    net = netdsl.parse(TWO_CLASSES + " - gap - fc3", input="3xHxW")
    module = net.compile("numpy", dtype="float64", seed=0)
    for h, w in ((11, 11), (12, 30), (57, 13)):
        x = np.random.default_rng(h).standard_normal((2, 3, h, w))
        reference = net.at(f"3x{h}x{w}").compile("numpy", dtype="float64", weights=module.weights)
        np.testing.assert_allclose(module.run(x), reference.run(x), rtol=1e-12)
    with pytest.raises(ValueError, match=r"10 does not fit \(H >= 11; 11 does\)"):
        module.run(np.zeros((1, 3, 10, 12)))


def test_generated_source_states_the_valid_sizes():
    pytest.importorskip("torch")
    from netdsl.backends.torch_codegen import generate_source
    source = generate_source(netdsl.load("unet", input="1xHxW"))
    assert '"""Input (N, 1, H, W) -> output (N, 2, 16*((H + 4)//16) - 188, 16*((W + 4)//16) - 188).' in source
    assert "    H = 16k + 12, H >= 188" in source and "    H >= 188" in source
    assert "model(torch.zeros(1, 1, 188, 188))" in source  # the example runs at a valid size
    compile(source, "model.py", "exec")


def test_torch_module_and_its_export_take_the_true_sizes():
    torch = pytest.importorskip("torch")
    net = netdsl.parse(TWO_CLASSES + " - pool", input="3xHxW", strict=True)
    assert net.strict_sizes["H"].describe() == "H = 8k + 7, H >= 15; or H = 8k, H >= 16"
    model = net.compile("torch", dtype="float64")
    numpy_model = net.compile("numpy", dtype="float64", weights=model.weights)
    for h in (15, 23, 16, 40):
        x = np.random.default_rng(h).standard_normal((2, 3, h, h + 8))
        np.testing.assert_allclose(model.run(x), numpy_model.run(x), rtol=1e-10, atol=1e-12)
    # two classes: torch.export gets the smallest size and no step (said in dynamic_shapes' doc)
    (axes,) = model.dynamic_shapes()
    assert str(axes[2]) == "Dim('H', min=15)"
    single = netdsl.parse("input 3xHxW\nmaxpool2/2 - conv3-4 - maxpool2/2", strict=True).compile("torch")
    (axes,) = single.dynamic_shapes()
    assert str(axes[2]) == "4*H_steps"
    program = single.export().module()
    assert tuple(program(torch.randn(1, 3, 12, 20)).shape) == (1, 4, 3, 5)
    with pytest.raises(Exception, match=r"% 4 == 0"):
        program(torch.randn(1, 3, 14, 20))


def torch_and_onnxruntime(net, path):
    """The net's torch module (float32) and an onnxruntime session of its ONNX export to `path`."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from netdsl.backends.torch_export import export_onnx
    model = net.compile("torch")
    export_onnx(model, net, path)
    return model, ort.InferenceSession(str(path))


def test_onnx_axes_are_named_after_the_sizes_and_run_in_onnxruntime(tmp_path):
    onnx = pytest.importorskip("onnx")
    net = netdsl.parse("input 3xHxW\nconv3-8/2 - pool - conv1-4")
    path = tmp_path / "m.onnx"
    model, session = torch_and_onnxruntime(net, path)
    graph = onnx.load(str(path)).graph
    dims = [d.dim_param or d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "H", "W"]
    assert [d.dim_param or d.dim_value for d in graph.output[0].type.tensor_type.shape.dim] == \
        ["batch", 4, "(H + 1)//4", "(W + 1)//4"]
    for h, w in ((9, 9), (33, 20)):
        x = np.random.default_rng(h).standard_normal((2, 3, h, w)).astype(np.float32)
        np.testing.assert_allclose(session.run(None, {"input": x})[0], model.run(x), rtol=1e-4, atol=1e-5)


@pytest.mark.heavy
def test_unet_runs_at_188_572_and_1004_in_torch_and_onnxruntime_and_export_rejects_570(tmp_path):
    torch = pytest.importorskip("torch")
    model, session = torch_and_onnxruntime(netdsl.load("unet", input="1xHxW"), tmp_path / "unet.onnx")
    for size, out in ((188, 4), (572, 388), (1004, 820)):
        x = np.random.default_rng(size).standard_normal((1, 1, size, size)).astype(np.float32)
        y = model.run(x)
        assert y.shape == (1, 2, out, out)
        np.testing.assert_allclose(session.run(None, {"input": x})[0], y, rtol=1e-3, atol=1e-4)
    program = model.export(batch=1).module()  # the example batch is raised to 2
    assert tuple(program(torch.randn(1, 1, 572, 572)).shape) == (1, 2, 388, 388)
    with pytest.raises(Exception, match=r"% 16 == 12"):
        program(torch.randn(1, 1, 570, 570))


@pytest.mark.heavy
def test_fcn_runs_at_two_sizes_in_torch_and_onnxruntime(tmp_path):
    model, session = torch_and_onnxruntime(netdsl.load("fcn:fcn8s", input="3xHxW"), tmp_path / "fcn.onnx")
    for h, w in ((64, 64), (75, 101)):
        x = np.random.default_rng(h).standard_normal((1, 3, h, w)).astype(np.float32)
        y = model.run(x)
        assert y.shape == (1, 21, h, w)
        np.testing.assert_allclose(session.run(None, {"input": x})[0], y, rtol=1e-3, atol=1e-3)


VALID_SIZES_LINE = re.compile(r"# Valid sizes(?: of (\w+))? \(netdsl check --input (\S+)\), H and W alike: "
                              r"(.+); exact \(--strict\): (.+)\.$")


def test_size_free_shipped_networks_state_their_valid_sizes_and_the_statement_is_true():
    from conftest import NETWORKS
    stated = {}
    for path in sorted(NETWORKS.glob("*.net")):
        for line in path.read_text().splitlines():
            found = VALID_SIZES_LINE.match(line)
            if found:
                stated.setdefault(path.stem, []).append(found.groups())
    assert set(stated) == {"fcn", "googlenet", "resnet", "resnet50", "resnext50", "unet", "regnet", "shufflenet",
                           "convnext", "inception", "deeplabv3"}
    for stem, claims in stated.items():
        text = (NETWORKS / f"{stem}.net").read_text()
        for net_name, shape, valid, strict in claims:
            nets = netdsl.parse_all(text, input=shape, path=stem)
            assert nets and all(n.symbolic for n in nets)
            for net in nets:
                if net_name is not None and net.name != net_name:
                    continue
                assert net.valid_sizes["H"].describe() == valid, (stem, net.name)
                assert net.strict_sizes["H"].describe() == (valid if strict == "the same" else strict)
                assert net.valid_sizes["W"].describe() == valid.replace("H", "W")
                assert not net.size_dependent_weights


def test_a_net_no_size_fits_is_an_error_at_the_layer_that_rules_the_last_size_out():
    with pytest.raises(NetDSLShapeError) as error:
        netdsl.parse("conv3-8 - add{ id | maxpool2/2 }", input="3xHxW")
    assert error.value.message == "no input size H works: add{} branches 1 and 2 equal in height"
    assert (error.value.span.line, error.value.span.column) == (1, 11)
    assert error.value.notes[0] == "the layers before it take H >= 2"
    # branches agree only at odd sizes, where the 2-wide stride-2 window leaves a row: no size
    # fits exactly
    text = "cat{ conv3-4/2(pad=0) | conv2-4/2(pad=0) }"
    net = netdsl.parse(text, input="3xHxW")
    assert net.valid_sizes["H"].describe() == "H = 2k + 1, H >= 3"
    assert net.strict_sizes["H"].is_empty()
    with pytest.raises(NetDSLShapeError, match=r"no input size H fits exactly \(--strict\)"):
        netdsl.parse(text, input="3xHxW", strict=True)


def test_run_hover_and_the_playground_take_a_file_with_size_names():
    status, out, err = run_cli("run", "unet", "--input", "1xHxW")
    assert status == 0, err
    assert out.startswith("unet takes H >= 188; W >= 188: running at 1x188x188, the example size")
    assert "output    1x2x4x4" in out
    from netdsl import lsp
    from netdsl.serve.analysis import analyse
    text = "input 3xHxW\nconv3-8/2 - gap - fc10\n"
    result = analyse(text)
    assert result["ok"] and result["summary"]["output"] == [10] and result["diagnostics"] == []
    assert result["summary"]["layers"][1]["shape"] == [8, "(H + 1)//2", "(W + 1)//2"]
    found = lsp.hover_text(lsp.analyse(text, "<string>"), text.index("gap") + 1)
    assert found is not None
    hover = found[0]  # on gap: its field is the whole input, whose size is a formula
    assert "8x((H + 1)//2)x((W + 1)//2) -> 8x1x1" in hover and "receptive field the whole input" in hover


#: The window ops of issue 12: a kernel, stride and padding per axis, depthwise, adaptive and
#: global max pooling, each stating its conditions per axis (H and W get different valid sets).
WINDOW_OPS = ("conv1x7-4/2(pad_w=0) - dwconv3x1(stride_w=3, pad=0, multiplier=2)"
              " - conv5x3-4(pad=0, stride_h=2) - maxpool2/2")


def concrete_ok_at(graph, h: int, w: int, strict: bool) -> bool:
    try:
        infer_shapes(graph, (3, h, w), strict=strict)
        return True
    except NetDSLShapeError:
        return False


@pytest.mark.parametrize("tail", ["", " - adaptive_avgpool(3) - fc5", " - adaptive_maxpool(2) - gmp - fc5"])
def test_window_ops_valid_sets_per_axis_equal_the_concrete_checker(tail):
    net = netdsl.parse(WINDOW_OPS + tail, input="3xHxW")
    assert net.valid_sizes["H"].describe() != net.valid_sizes["W"].describe()  # the axes differ
    for strict, sets in ((False, net.valid_sizes), (True, net.strict_sizes)):
        valid_h, valid_w = set(sets["H"].values(60)), set(sets["W"].values(60))
        assert valid_h and valid_w
        for h in range(1, 61):
            for w in range(1, 61, 7):
                assert ((h in valid_h) and (w in valid_w)) == concrete_ok_at(net.graph, h, w, strict), (h, w)
        for w in range(1, 61):
            assert (w in valid_w) == concrete_ok_at(net.graph, min(valid_h), w, strict), w
    for h, w in ((min(valid_h), min(valid_w)), (57, 44), (40, 59)):
        concrete = infer_shapes(net.graph, (3, h, w)).shapes
        for symbolic, expected in zip(net.shapes, concrete):
            got = tuple(d if isinstance(d, int) else d.evaluate({"H": h, "W": w}) for d in symbolic)
            assert got == expected, (h, w)
    if tail:  # adaptive and global pooling end the size's reach: the output is the same at every size
        assert all(isinstance(d, int) for d in net.output_shape)


def test_a_flattened_formula_size_where_a_number_is_needed_is_a_clear_error():
    with pytest.raises(NetDSLShapeError, match=r"channels needs a whole number of channels or "
                                               r"features, got H\*W"):
        netdsl.parse("flatten - channels(0, 1)", input="1xHxW")
    assert netdsl.parse("flatten - channels(0, 1)", input="1x3x3").output_shape == (1,)
