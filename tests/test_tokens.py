"""Token tensors (TxD) and the ViT ops: shapes, errors, symbolic sizes, the torch lowering and the
import of torchvision's class token (tests/test_ops.py holds each op's rule sample,
tests/test_numpy_backend.py their gradients)."""
import numpy as np
import pytest

import netdsl
from netdsl.errors import NetDSLShapeError

BLOCK = """
activation none
def encoder(d, heads, mlp) = add{ layernorm(1e-6) - attention(heads) | id }
    - add{ layernorm(1e-6) - fc{mlp} - gelu - fc{d} | id }
net small = conv4-8/4(pad=0) - tokens - class_token - pos_embedding - encoder(8, 2, 16)*2
    - layernorm(1e-6) - token - fc10
"""


def test_the_shapes_of_a_small_vit():
    net = netdsl.parse(BLOCK, input="3x16x12")
    shapes = {node.op: net.shapes[node.id] for node in net.graph.nodes}
    assert shapes["tokens"] == (12, 8)  # 4x3 patches of 8 features
    assert shapes["class_token"] == shapes["pos_embedding"] == shapes["attention"] == (13, 8)
    assert net.output_shape == (10,)
    fcs = [net.shapes[n.id] for n in net.graph.nodes if n.op == "fc"]
    assert fcs[:2] == [(13, 16), (13, 8)]  # fc on tokens: token by token
    # conv 4*4*3*8 + 8; class token 8; position 13*8; per block 2 norms, attention 4*64 + 4*8,
    # MLP 8*16 + 16 + 16*8 + 8; the last norm; the head 8*10 + 10
    block = 2 * 16 + (4 * 64 + 32) + (8 * 16 + 16 + 16 * 8 + 8)
    assert net.params == 4 * 4 * 3 * 8 + 8 + 8 + 13 * 8 + 2 * block + 16 + 8 * 10 + 10


@pytest.mark.parametrize("program,message", [
    ("attention(2)", "attention needs a TxD token tensor, got a CxHxW image of 4x6x6"),
    ("tokens - conv3-4", "conv needs a CxHxW input, got a token tensor of 36x4"),
    ("tokens - attention(3)", "attention splits 4 features into 3 heads: 4 is not a multiple of 3"),
    ("tokens - token(36)", "token(36) of 36 tokens: they are numbered 0 to 35"),
    ("gap - flatten - class_token", "class_token needs a TxD token tensor, got a flat vector of 4"),
    ("tokens - tokens", "tokens needs a CxHxW feature map, got 36x4"),
])
def test_token_ops_and_image_ops_refuse_each_other(program, message):
    with pytest.raises(NetDSLShapeError) as caught:
        netdsl.parse(program, input="4x6x6")
    assert message in str(caught.value)


def test_with_size_names_the_token_count_is_a_formula_and_compiling_needs_a_size():
    net = netdsl.parse(BLOCK, input="3xHxW")
    tokens = net.shapes[next(n.id for n in net.graph.nodes if n.op == "tokens")]
    assert str(tokens[0]) == "(H//4)*(W//4)" and tokens[1] == 8
    assert [net.graph.node(name).op for name in net.size_dependent_weights] == ["pos_embedding"]
    with pytest.raises(NetDSLShapeError, match="depend on the input size"):
        net.compile("numpy")
    concrete = net.at("3x16x12")
    assert concrete.params == netdsl.parse(BLOCK, input="3x16x12").params
    y = concrete.compile("numpy", dtype="float64").eval()(np.ones((1, 3, 16, 12)))
    assert y.shape == (1, 10)
    # token 0 exists at every size; token 1 only where H and W together give two tokens
    with pytest.raises(NetDSLShapeError, match=r"token\(1\) needs a whole number of tokens"):
        netdsl.parse("tokens - token(1)", input="3xHxW")


def test_attention_field_is_the_whole_grid():
    net = netdsl.parse(BLOCK, input="3x16x12")
    tokens = next(layer for layer in net.stats.layers if layer.op == "tokens")
    assert tokens.rf == 4 and tokens.stride == 4
    # 13 tokens: isqrt(13) = 3 patches a side, 4 + 2*4; the second block grows it again, as a
    # second conv whose kernel spans the grid would (docs/language.md, section 9)
    assert [layer.rf for layer in net.stats.layers if layer.op == "attention"] == [12, 20]


def test_the_torch_lowering_reads_as_written_by_hand():
    from netdsl.backends.torch_codegen import generate_source
    source = generate_source(netdsl.parse(BLOCK, input="3x16x12"))
    assert "class Encoder(nn.Module):" in source
    assert "nn.MultiheadAttention(8, 2, batch_first=True)" in source
    assert "x = self.attention1(x, x, x, need_weights=False)[0]" in source
    assert ".flatten(2).transpose(1, 2)" in source and "[:, 0]" in source
    assert "nn.Linear(8, 16, bias=True)" in source  # a token's features, not T*D


def test_torchvision_order_puts_the_class_token_first():
    """torchvision's VisionTransformer lists class_token before conv_proj; the importer moves it to
    where the network's class token is, and checks every other tensor in order."""
    net = netdsl.parse("activation none\nconv4-8/4(pad=0) - tokens - class_token - pos_embedding - token - fc3",
                       input="3x8x8")
    rng = np.random.default_rng(0)
    state = {"class_token": rng.standard_normal((1, 1, 8)),
             "conv_proj.weight": rng.standard_normal((8, 3, 4, 4)), "conv_proj.bias": rng.standard_normal(8),
             "encoder.pos_embedding": rng.standard_normal((1, 5, 8)),
             "heads.head.weight": rng.standard_normal((3, 8)), "heads.head.bias": rng.standard_normal(3)}
    network, weights = netdsl.import_torchvision(state, network=net)
    assert list(weights) == [spec.name for spec in net.weight_specs]
    assert weights["class_token1.weight"] is state["class_token"]
    assert weights["conv1.weight"] is state["conv_proj.weight"]
    swapped = dict(state)
    swapped["conv_proj.weight"], swapped["conv_proj.bias"] = state["conv_proj.bias"], state["conv_proj.weight"]
    with pytest.raises(netdsl.NetDSLError, match="does not fit conv1.weight"):
        netdsl.import_torchvision(dict(sorted(swapped.items(), key=lambda kv: list(state).index(kv[0]))),
                                  network=net)


def test_numpy_attention_is_torch_multihead_attention():
    torch = pytest.importorskip("torch")
    net = netdsl.parse("tokens - attention(3)", input="6x2x5")
    rng = np.random.default_rng(0)
    mha = torch.nn.MultiheadAttention(6, 3, batch_first=True).double().eval()
    with torch.no_grad():
        for p in mha.parameters():
            p.copy_(torch.from_numpy(rng.standard_normal(tuple(p.shape))))
    weights = {f"attention1.{name}": p.detach().numpy() for name, p in mha.state_dict().items()}
    x = rng.standard_normal((2, 6, 2, 5))
    tokens = torch.from_numpy(x).flatten(2).transpose(1, 2)
    with torch.no_grad():
        expected = mha(tokens, tokens, tokens, need_weights=False)[0].numpy()
    got = net.compile("numpy", dtype="float64", weights=weights).eval()(x)
    assert np.abs(got - expected).max() <= 1e-12 * np.abs(expected).max()


def test_layerscale_on_tokens_scales_each_feature_in_numpy_torch_and_jax():
    """One scale per feature D (CaiT's LayerScale), not per token: the scale's gradient sums over
    the batch and the tokens."""
    from equivalence import compare
    net = netdsl.parse("conv4-6/4(pad=0) - tokens - layerscale(0.5) - fc3", input="2x8x12")
    assert [s.shape for s in net.weight_specs if s.suffix == "weight"][1] == (6,)
    module = net.compile("numpy", dtype="float64", seed=1)
    scale = np.arange(1.0, 7.0)
    module.load_weights({"layerscale1.weight": scale}, strict=False)
    trace = module.trace(np.random.default_rng(2).standard_normal((2, 2, 8, 12)))
    tokens, scaled = trace[2], trace[3]
    np.testing.assert_allclose(scaled, tokens * scale)
    compare(net)
    jax = pytest.importorskip("jax")
    del jax
    x = np.random.default_rng(3).standard_normal((2, 2, 8, 12))
    np.testing.assert_allclose(net.compile("jax", dtype="float64", weights=module.weights).eval().run(x),
                               module.eval()(x), rtol=1e-12)


@pytest.mark.parametrize("op", ["bn", "softmax"])
def test_channel_ops_refuse_token_tensors_and_say_what_tokens_take(op):
    with pytest.raises(NetDSLShapeError) as caught:
        netdsl.parse(f"tokens - {op}", input="4x6x6")
    assert f"{op} takes a CxHxW or flat input, not a token tensor (36x4)" in str(caught.value)
    assert "layernorm normalises each token's features" in str(caught.value)
