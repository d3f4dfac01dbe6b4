"""Auxiliary outputs, `aux{ head }` (GoogLeNet's and Inception-v3's side classifiers): the head's
result is returned beside the output in training mode and not computed in eval mode, as
torchvision's models do; its weights are the net's; its MACs are reported apart."""
import json

import numpy as np
import pytest

import netdsl

TEXT = """
input 3x16x16
def head(n) = gap - fc{n}
net a = conv3-8 - s: conv3-8 - aux{ head(5) } - maxpool2 - conv3-8 - aux{ conv1-4 - head(6) } - gap - fc10
"""


@pytest.fixture(scope="module")
def net():
    return netdsl.parse(TEXT)


def test_the_heads_branch_off_and_the_chain_goes_on(net):
    aux = net.graph.aux_outputs
    assert [node.name for node in aux] == ["aux1", "aux2"]
    assert [net.shapes[node.id] for node in aux] == [(5,), (6,)]
    assert net.graph.node("aux1.head1.fc1").inputs == (net.graph.node("aux1.head1.gap1").id,)
    # the maxpool reads the conv the first head branched from, not the head
    assert net.graph.node("maxpool1").inputs == (net.graph.node("s").id,)
    assert net.output_shape == (10,)
    # implicit activations: the heads' last layers are output layers; the conv they branch from is not
    acts = {node.name: node.attrs.get("act") for node in net.graph.nodes}
    assert acts["aux1.head1.fc1"] == "none" and acts["aux2.head1.fc1"] == "none"
    assert acts["s"] == "relu" and acts["aux2.conv1"] == "relu" and acts["fc1"] == "none"


def test_macs_are_the_eval_forwards_and_the_heads_are_counted_apart(net):
    heads = ["aux1.head1.fc1", "aux2.conv1", "aux2.head1.fc1"]
    head_macs = sum(net.stats.layers[net.graph.node(name).id].macs for name in heads)
    head_params = sum(net.stats.layers[net.graph.node(name).id].params for name in heads)
    assert head_macs == 8 * 5 + 8 * 4 * 8 * 8 + 4 * 6 and head_params == 45 + 36 + 30
    assert net.stats.aux_macs == head_macs
    assert net.macs == sum(layer.macs for layer in net.stats.layers) - head_macs
    assert net.params == sum(layer.params for layer in net.stats.layers)  # the heads' included
    text = net.summary()
    assert f"({head_params:,} in the auxiliary heads)" in text
    assert f"the auxiliary heads add {head_macs:,} in training" in text
    summary = json.loads(json.dumps(net.summary_dict()))
    assert (summary["aux_macs"], summary["aux_params"]) == (head_macs, head_params)
    assert "aux_macs" not in netdsl.parse("input 8\nfc3").summary_dict()


def test_numpy_returns_the_heads_in_training_and_backward_takes_their_gradients(net):
    module = net.compile("numpy", dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16))
    y, a1, a2 = module(x)
    assert (y.shape, a1.shape, a2.shape) == ((2, 10), (2, 5), (2, 6))
    module.eval()
    assert np.allclose(module(x), y)  # no dropout, no batch norm: the same output
    module.train()
    module(x)
    module.backward(np.ones((2, 10)))  # the output's gradient only: the heads get none
    assert "aux1.head1.fc1.weight" not in module.grads and np.any(module.grads["fc1.weight"])
    module(x)
    module.backward((np.zeros((2, 10)), np.ones((2, 5)), np.zeros((2, 6))))
    assert np.any(module.grads["aux1.head1.fc1.weight"]) and not np.any(module.grads["fc1.weight"])
    with pytest.raises(ValueError, match="backward takes 3 gradients"):
        module(x)
        module.backward((np.zeros((2, 10)), np.ones((2, 5))))


def test_torch_returns_the_heads_in_training_and_skips_them_in_eval(net):
    torch = pytest.importorskip("torch")
    from equivalence import compare
    # the output and both heads, and their gradients, as NumPy's; the floor is atol times the
    # largest value (about 4 here), so 1e-13 keeps it below the absolute 1e-12 this test held
    compare(net, modes=("train",), dtype="float64", rtol=1e-12, atol=1e-13)
    model = net.compile("torch", dtype="float64")
    x = np.random.default_rng(1).standard_normal((2, 3, 16, 16))
    outputs = model(torch.from_numpy(x))
    assert isinstance(outputs, tuple) and [tuple(y.shape) for y in outputs] == [(2, 10), (2, 5), (2, 6)]
    ran = []
    model.aux1.register_forward_hook(lambda module, inputs, output: ran.append(1))
    model.eval()
    y = model(torch.from_numpy(x))
    assert isinstance(y, torch.Tensor) and ran == []
    assert "aux2.head1.fc1.weight" in model.state_dict()
    traced = torch.fx.symbolic_trace(model)  # eval: a plain graph without the heads
    assert "aux1" not in traced.code and np.allclose(traced(torch.from_numpy(x)).detach().numpy(), y.detach().numpy())
    exported = torch.export.export(model, (torch.from_numpy(x),))
    assert len(exported.graph_signature.user_outputs) == 1


def test_the_expanded_program_prints_aux_back(net):
    again = netdsl.parse(net.expand())
    assert again.graph.structure() == net.graph.structure()
    assert "aux{" in net.expand()


def test_the_drawing_shows_each_head_as_an_output(net):
    dot = net.draw().source
    assert "aux1: auxiliary output (training)" in dot and "aux2: auxiliary output (training)" in dot


@pytest.mark.parametrize("text,message", [
    ("def h = aux{ fc3 }\nnet a input 8 = h - fc2", "aux{ } belongs in a net's own chain"),
    ("net a input 8 = add{ aux{ fc3 } - fc8 | id }", "aux{ } belongs in a net's own chain"),
    ("net a input 8 = (aux{ fc3 } - fc8)*2", "aux{ } belongs in a net's own chain"),
    ("net a input 8 = fc8 - aux{ fc3 }", "a net cannot end with aux{ }"),
])
def test_aux_in_the_wrong_place_is_an_error(text, message):
    with pytest.raises(netdsl.NetDSLError, match=message.replace("{", r"\{").replace("}", r"\}")):
        netdsl.parse(text)
