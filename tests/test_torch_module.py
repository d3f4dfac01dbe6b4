"""The torch module is a real nn.Module tree that torch's own tooling sees as a normal model:
blocks per definition call and merge, hooks, fx, create_feature_extractor-style tracing,
torch.export, torch.compile, deepcopy, pickle and torch.save across processes."""
import copy
import pickle
import subprocess
import sys

import pytest

import netdsl
from conftest import shipped_networks
from netdsl.ir import LayoutMerge, LayoutScope, LayoutVisitor

torch = pytest.importorskip("torch")

#: One network per family and behaviour: plain chain, LRN and groups, definitions with repeats,
#: residual merges, inception concats with labels, references across scopes with crops, flat input.
REPRESENTATIVE = {"lenet5:lenet5", "alexnet:alexnet", "vgg16:vgg16", "resnet:resnet18",
                  "resnet50:resnet50", "googlenet:googlenet", "fcn:fcn8s", "mlp:mlp"}
ALL = shipped_networks()
FEW = [p for p in ALL if p.id in REPRESENTATIVE]
#: The default tier runs one network per family; `pytest -m heavy` runs the rest, but of a zoo
#: family file (efficientnet.net's eleven nets differ in widths and depths, which a module's hooks,
#: tracing and copies do not see) only its first net: the numerical tests run every net.
_FAMILY_FILES = {"mobilenet", "efficientnet", "regnet", "shufflenet", "convnext", "vit", "densenet",
                 "mnasnet", "squeezenet"}
_first_of_file: dict[str, str] = {}
for _p in ALL:
    _first_of_file.setdefault(_p.id.split(":")[0], _p.id)
REST = [pytest.param(*p.values, id=p.id, marks=pytest.mark.heavy) for p in ALL if p.id not in REPRESENTATIVE
        and (p.id.split(":")[0] not in _FAMILY_FILES or _first_of_file[p.id.split(":")[0]] == p.id)]
EVERY = FEW + REST
#: For the costly checks (export, copies of every weight) the large representatives move to heavy.
LARGE = {"fcn:fcn8s", "resnet50:resnet50", "alexnet:alexnet"}
LIGHT = [p if p.id not in LARGE else pytest.param(*p.values, id=p.id, marks=pytest.mark.heavy)
         for p in FEW] + REST


def _blocks(network) -> list[str]:
    """The path of every scope (definition call, group, merge and merge branch) with layers in it."""
    paths = []

    class Scopes(LayoutVisitor):
        def visit_scope(self, item: LayoutScope, prefix: str):
            paths.append(prefix + item.name)
            self.visit(item.body, prefix + item.name + ".")

        def visit_merge(self, item: LayoutMerge, prefix: str):
            name = network.graph[item.node].name
            paths.append(name)
            for i, branch in enumerate(item.branches, 1):
                if branch.items and any(not type(x).__name__.endswith("Identity") for x in branch.items):
                    paths.append(f"{name}.b{i}")
                self.visit(branch, f"{name}.b{i}.")

        def visit_aux(self, item, prefix: str):
            name = network.graph[item.node].name
            paths.append(name)
            self.visit(item.head, name + ".")

    Scopes().visit(network.layout, "")
    return paths


def _model(path, name, shape, **options):
    net = netdsl.load(path, net=name, input=shape)
    return net, net.compile("torch", seed=0, **options).eval()


@pytest.mark.parametrize("path,name,shape", EVERY)
def test_the_module_tree_is_the_program_tree_and_every_block_hook_fires(path, name, shape):
    net, model = _model(path, name, shape)
    blocks = _blocks(net)
    fired = set()
    for block in blocks:
        module = model.get_submodule(block)
        assert type(module).forward is not torch.nn.Module.forward, block
        module.register_forward_hook(lambda m, i, o, block=block: fired.add(block))
    with torch.no_grad():
        model(torch.randn(1, *net.input_shape))
    # an auxiliary head (aux{ }) runs in training mode only, as torchvision's do
    heads = {block for block in blocks if block.split(".")[0] in {n.name for n in net.graph.aux_outputs}}
    assert fired == set(blocks) - heads
    if heads:
        with torch.no_grad():
            model.train()(torch.randn(2, *net.input_shape))
        assert fired == set(blocks)
    keys = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    assert keys == [spec.name for spec in net.weight_specs]


def test_a_block_runs_on_its_own():
    net, model = _model("resnet50", None, None)
    x = torch.randn(1, 512, 28, 28)
    with torch.no_grad():
        assert model.stage3(x).shape == (1, 1024, 14, 14)
        assert model.stage3.bottleneck1.add1.b1(torch.randn(1, 1024, 14, 14)).shape == (1, 1024, 14, 14)
    assert type(model.stage3).__name__ == "Stage_256_6_2"
    assert type(model.stage3.bottleneck1) is type(model.stage3.bottleneck5)  # one class per variant


@pytest.mark.parametrize("path,name,shape", EVERY)
def test_fx_traces_every_network_to_the_same_function(path, name, shape):
    net, model = _model(path, name, shape)
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(2, *net.input_shape)
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))
    targets = {node.target for node in traced.graph.nodes if node.op == "call_module"}
    modules = dict(model.named_modules())
    assert targets and all(target in modules for target in targets)


def test_feature_extraction_by_guessable_names():
    """What torchvision's create_feature_extractor does: trace with blocks as leaves, take outputs."""
    net, model = _model("resnet50", None, "3x64x64")

    class Blocks(torch.fx.Tracer):
        def is_leaf_module(self, module, name):
            return name.startswith("stage") and name.count(".") == 0 or super().is_leaf_module(module, name)

    graph = Blocks().trace(model)
    nodes = {node.name: node for node in graph.nodes}
    assert {"stage1", "stage2", "stage3", "stage4"} <= set(nodes)
    graph.output(tuple(nodes[f"stage{i}"] for i in (2, 3)))  # a second output node replaces the first
    outputs = [n for n in graph.nodes if n.op == "output"]
    graph.erase_node(outputs[0])
    extractor = torch.fx.GraphModule(model, graph)
    with torch.no_grad():
        c3, c4 = extractor(torch.randn(1, 3, 64, 64))
    assert c3.shape == (1, 512, 8, 8) and c4.shape == (1, 1024, 4, 4)


@pytest.mark.parametrize("path,name,shape", LIGHT)
def test_torch_export_and_compile_fullgraph(path, name, shape):
    net, model = _model(path, name, shape)
    torch.manual_seed(0)
    x = torch.randn(2, *net.input_shape)
    exported = torch.export.export(model, (x,))
    with torch.no_grad():
        expected = model(x)
        # The exported graph may order float32 sums differently (ViT-B/16's twelve attention
        # blocks end 1.7e-6 apart on outputs near 2), so the bound scales with the output.
        tolerance = dict(rtol=1e-5, atol=1e-5 * max(1.0, expected.abs().max().item()))
        torch.testing.assert_close(exported.module()(x), expected, **tolerance)
        compiled = torch.compile(model, fullgraph=True, backend="eager")
        torch.testing.assert_close(compiled(x), expected, **tolerance)


@pytest.mark.heavy
@pytest.mark.parametrize("target", ["lenet5", "resnet:resnet18"])
def test_torch_compile_with_inductor(target):
    net, model = _model(target, None, "3x32x32" if "resnet" in target else None)
    x = torch.randn(2, *net.input_shape)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        assert torch.allclose(compiled(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("path,name,shape", LIGHT)
def test_deepcopy_and_pickle_give_the_same_function(path, name, shape):
    net, model = _model(path, name, shape)
    x = torch.randn(2, *net.input_shape)
    with torch.no_grad():
        expected = model(x)
        for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
            assert torch.equal(clone(x), expected)
            assert clone.network.params == net.params
    assert pickle.loads(pickle.dumps(net.graph)) == net.graph


def test_torch_save_loads_in_a_fresh_process_that_imports_only_netdsl(tmp_path):
    net, model = _model("googlenet:googlenet", None, "3x64x64")
    x = torch.randn(2, 3, 64, 64)
    torch.save(model, tmp_path / "model.pt")
    torch.save(x, tmp_path / "x.pt")
    with torch.no_grad():
        torch.save(model(x), tmp_path / "y.pt")
    script = (
        "import sys, torch, netdsl\n"
        f"model = torch.load({str(tmp_path / 'model.pt')!r}, weights_only=False)\n"
        f"x = torch.load({str(tmp_path / 'x.pt')!r}); y = torch.load({str(tmp_path / 'y.pt')!r})\n"
        "with torch.no_grad():\n"
        "    assert torch.equal(model(x), y)\n"
        "print(type(model).__name__, type(model.add1).__name__ if hasattr(model, 'add1') else '')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Googlenet")


@pytest.mark.parametrize("path,name,shape", EVERY)
def test_size_independent_networks_run_at_a_second_size(path, name, shape):
    """Every size comes from the tensors: a network whose weights do not depend on the input size
    runs, compiled at one size, on another, with the checker's output shape."""
    net = netdsl.load(path, net=name, input=shape)
    first = net.input_shape
    if len(first) == 1:
        pytest.skip("flat input: no spatial size")
    second = (first[0], first[1] + 32, first[2] + 16)
    other = netdsl.load(path, net=name, input="x".join(map(str, second)))
    if [s.shape for s in other.weight_specs] != [s.shape for s in net.weight_specs]:
        pytest.skip("an fc after a size-dependent tensor: its weights depend on the input size")
    model = net.compile("torch", seed=0).eval()
    with torch.no_grad():
        y = model(torch.randn(1, *second))
    assert tuple(y.shape[1:]) == other.output_shape


def test_user_text_never_becomes_code(tmp_path):
    from netdsl.backends.torch_codegen import generate_source
    marker = tmp_path / "pwned"
    payload = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    # Characters that end a line for some reader of the generated file (Python's str.splitlines
    # treats \x0b, \x0c, \x85 and \u2028 as line breaks; a NUL stops compile()).
    text = (f"input 1x8x8\n# comment\u2028{payload}\x85{payload}\nconv3-2 # trailing\x00{payload}"
            f"\x0b{payload}\x0c{payload}\n")
    net = netdsl.parse(text, path=f"evil\n{payload}\n#.net")
    source = generate_source(net)
    namespace: dict = {}
    exec(compile(source, "model.py", "exec"), namespace)  # noqa: S102 - the test's own output
    root = [value for value in namespace.values() if isinstance(value, type)][-1]  # defined last
    model = root()
    assert not marker.exists()
    assert model(torch.zeros(1, 1, 8, 8)).shape == (1, 2, 8, 8)
    assert source.splitlines() == source.rstrip("\n").split("\n") and "\x00" not in source


@pytest.mark.parametrize("label", ["training", "forward", "to", "eval", "_modules", "__class__",
                                   "__x", "class", "weights"])
def test_labels_that_would_break_the_module_are_refused(label):
    with pytest.raises(netdsl.NetDSLNameError, match="cannot be a label|cannot start with an underscore") as info:
        netdsl.parse(f"input 3x8x8\n{label}: conv3-4 - relu")
    assert info.value.line == 2 and info.value.column == 1
    assert any(note.startswith("did you mean") for note in info.value.notes)


def test_a_keyword_free_label_is_kept_verbatim_in_state_dict():
    net = netdsl.parse("input 3x8x8\nx: conv3-4 - lambda_: conv3-4 - self_: relu")
    model = net.compile("torch")
    assert list(model.state_dict())[:2] == ["x.weight", "x.bias"]
    assert model(torch.zeros(1, 3, 8, 8)).shape == (1, 4, 8, 8)


def test_run_and_gradients_from_numpy():
    import numpy as np
    net, model = _model("lenet5", None, None)
    x = np.random.default_rng(0).standard_normal((2, 1, 32, 32)).astype(np.float32)
    y = model.run(x)
    assert isinstance(y, np.ndarray) and y.shape == (2, 10)
    dx, grads = model.gradients(x, np.ones_like(y))
    assert dx.shape == x.shape and set(grads) == set(model.trainable())
    assert float(np.abs(dx).sum()) > 0
    assert set(model.weights) == {spec.name for spec in net.weight_specs}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_a_clean_error():
    with pytest.raises(netdsl.NetDSLError, match="no CUDA GPU"):
        netdsl.load("lenet5").compile("torch", device="cuda")


def test_block_classes_are_named_by_the_arguments_that_tell_variants_apart():
    from netdsl.backends.torch_codegen import generate_source
    source = generate_source(netdsl.load("efficientnet_b0"))
    classes = [line[6:].split("(")[0] for line in source.splitlines() if line.startswith("class ")]
    # eps and momentum are the same in every cbs call: they do not name it; a decimal is shortened
    assert "Cbs_3_32_2" in classes and not any("1e_05" in name for name in classes)
    assert "MbconvBlock_40_5_2_6_0_0375" in classes  # p = 0.2*3/16 = 0.037500000000000006
    # each block names its .net line once, in its header, not on each layer again
    se = source[source.index("class SeMulBranch2("):source.index("class SeMul(")]
    assert se.count("efficientnet.net:") == 1
