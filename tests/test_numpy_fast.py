"""backends/numpy_fast.py: each faster kernel computes its reference kernel's function, leaves the
cache the reference's backward reads, and the NumPy backend uses them unless asked for the
reference."""
import resource
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import netdsl
from netdsl.backends import numpy_backend as reference
from netdsl.backends import numpy_fast as fast


@st.composite
def depthwise_cases(draw):
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 3)), draw(st.integers(0, 3))
    dilation = draw(st.integers(1, 3))
    h = draw(st.integers(max(1, dilation * (kh - 1) + 1 - 2 * ph), 14))
    w = draw(st.integers(max(1, dilation * (kw - 1) + 1 - 2 * pw), 14))
    c, n = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    x, weights = rng.standard_normal((c, n, h, w)), rng.standard_normal((c, 1, kh, kw))
    return x, weights, (sh, sw), (ph, pw), dilation, rng


@settings(max_examples=150, deadline=None)
@given(depthwise_cases())
def test_depthwise_is_the_reference_for_any_geometry(case):
    x, w, stride, pad, dilation, _ = case
    expected = reference._depthwise(x, w, stride, pad, dilation)
    got = fast.depthwise(x, w, stride, pad, dilation)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=150, deadline=None)
@given(depthwise_cases())
def test_depthwise_gradients_are_the_references_for_any_geometry(case):
    x, w, stride, pad, dilation, rng = case
    dy = rng.standard_normal(reference._depthwise(x, w, stride, pad, dilation).shape)
    expected_dx, expected_dw = reference._depthwise_grads(x, w, dy, stride, pad, dilation)
    dx, dw = fast.depthwise_grads(x, w, dy, stride, pad, dilation)
    assert dx.shape == x.shape and dw.shape == w.shape
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, expected_dw, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("phases", ["of each thread's planes at once", "a block at a time"])
def test_depthwise_splits_channels_over_threads_and_blocks_planes(monkeypatch, phases):
    """Split by channel (two threads, the threshold for splitting taken away) and several blocks
    per thread; a strided one's phases made for all of a thread's planes first, or block by
    block."""
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setattr(fast, "_SPLIT_NS", 0)
    monkeypatch.setattr(fast, "_BLOCK_BYTES", 1 << 12)
    monkeypatch.setattr(fast, "_PHASES_IN_CACHE", 0 if phases == "a block at a time" else 1 << 40)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3, 48, 47)).astype(np.float32)
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    for stride in (1, 2):
        expected = reference._depthwise(x, w, stride, 1, 1)
        np.testing.assert_allclose(fast.depthwise(x, w, stride, 1, 1), expected, rtol=1e-5, atol=1e-5)
        dy = rng.standard_normal(expected.shape).astype(np.float32)
        for got, want in zip(fast.depthwise_grads(x, w, dy, stride, 1, 1),
                             reference._depthwise_grads(x, w, dy, stride, 1, 1)):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_depthwise_with_a_channel_multiplier_falls_back_to_the_references_forward_and_backward():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 1, 6, 6)), rng.standard_normal((4, 1, 3, 3))
    assert np.array_equal(fast.depthwise(x, w, 1, 1, 1), reference._depthwise(x, w, 1, 1, 1))
    dy = rng.standard_normal((4, 1, 6, 6))
    for got, want in zip(fast.depthwise_grads(x, w, dy, 1, 1, 1), reference._depthwise_grads(x, w, dy, 1, 1, 1)):
        assert np.array_equal(got, want)


# A net with every op the fast table replaces, in the forms MobileNet and EfficientNet use them:
# strided and plain depthwise convs, 1x1 convs with and without bias, batch norm, ReLU6, SiLU and
# the squeeze-and-excitation multiply; a 3x3 conv and an fc keep the reference's kernels.
MOBILE = """
input 8x18x18
activation none
conv3-16/2(bias=false) - bn - relu6 - dwconv3/2(bias=false) - bn - silu
- mul{ id | gap - conv1-4 - silu - conv1-16 - sigmoid } - conv1-24 - bn - relu6
- dwconv5(bias=true) - bn - silu - gap - fc10
"""


def assert_fast_module_is_the_reference(net, train: bool, x_shape: tuple, dy_shape: tuple):
    """Forward, backward and running statistics of the default (fast) module equal the
    reference module's, float64."""
    fast_module = net.compile("numpy", dtype="float64", seed=3)
    reference_module = net.compile("numpy", dtype="float64", seed=3, reference=True)
    for module in (fast_module, reference_module):
        module.train() if train else module.eval()
    rng = np.random.default_rng(4)
    x = rng.standard_normal(x_shape)
    dy = rng.standard_normal(dy_shape)
    dx_fast, grads_fast = fast_module.gradients(x, dy)
    dx_reference, grads_reference = reference_module.gradients(x, dy)
    np.testing.assert_allclose(fast_module(x), reference_module(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx_fast, dx_reference, rtol=1e-10, atol=1e-12)
    assert set(grads_fast) == set(grads_reference)
    for name in grads_reference:
        np.testing.assert_allclose(grads_fast[name], grads_reference[name], rtol=1e-10, atol=1e-12,
                                   err_msg=name)
    # the running statistics move alike (training mode) or not at all (eval)
    for name in reference_module.weights:
        np.testing.assert_allclose(fast_module.weights[name], reference_module.weights[name],
                                   rtol=1e-12, atol=1e-15, err_msg=name)


@pytest.mark.parametrize("train", [True, False])
def test_the_fast_table_computes_the_references_forward_and_backward(train):
    net = netdsl.parse(MOBILE)
    fast_module = net.compile("numpy", dtype="float64", seed=3)
    reference_module = net.compile("numpy", dtype="float64", seed=3, reference=True)
    assert fast_module.kernels is fast.KERNELS and reference_module.kernels is reference.KERNELS
    # the ReLU6 layers after batch norm, and the gate's sigmoid after its conv, overwrite their
    # input (nothing else reads or keeps it); the reference allocates theirs
    in_place = {node.id for node in net.graph.nodes if node.op in ("relu6", "sigmoid")}
    assert fast_module._overwritable == in_place and reference_module._overwritable == set()
    assert_fast_module_is_the_reference(net, train, (2, 8, 18, 18), (2, 10))


# Batch norm and SiLU in every arrangement: fused when the SiLU is its own layer and alone reads
# the batch norm (the first, and the last, before the net's output), or is the batch norm's act=
# (the second); not where a second layer reads the batch norm too (the third, read by the add) or
# the next layer is another op (the fourth).
FUSIBLE = """
input 4x12x12
activation none
conv3-8 - bn - silu - conv3-8 - bn(act=silu) - conv1-8 - bn - add{ silu | id } - bn - relu
- conv1-6 - bn - silu
"""


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("blocks", ["one block per thread", "many blocks"])
def test_batch_norm_and_the_silu_that_alone_reads_it_run_as_one(monkeypatch, train, blocks):
    net = netdsl.parse(FUSIBLE)
    module = net.compile("numpy", dtype="float64")
    batch_norms = [node.id for node in net.graph.nodes if node.op == "bn"]
    fused = {first: second.op for first, (_, second) in module._pairs.items()}
    assert fused == {batch_norms[0]: "silu", batch_norms[1]: "silu", batch_norms[4]: "silu"}
    assert net.compile("numpy", reference=True)._pairs == {}
    if blocks == "many blocks":  # channels over two threads, each range a few blocks of 2 channels
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        monkeypatch.setattr(fast, "_PASS_BLOCK", 2 * 3 * 12 * 12)
        monkeypatch.setattr(fast, "_SPLIT_NS", 0)
    assert_fast_module_is_the_reference(net, train, (3, 4, 12, 12), (3, 6, 12, 12))
    # on vectors (batch norm after an fc): one channel's row is the batch
    vectors = netdsl.parse("input 3x8x8\nconv3-4 - gap - flatten - fc6 - bn - silu - fc2")
    assert len(vectors.compile("numpy")._pairs) == 1
    assert_fast_module_is_the_reference(vectors, train, (5, 3, 8, 8), (5, 2))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_memory_freed_by_a_forward_is_kept_for_the_next():
    """Once a fast forward has run, an array allocated again after it was freed does not come
    back as fresh pages from the system (without keep_freed_memory, glibc maps every array of more
    than 32 MiB anew: 64 MiB wrote 544 fresh huge and small pages each time here)."""
    module = netdsl.parse(MOBILE).compile("numpy", dtype="float32")
    module(np.zeros((1, 8, 18, 18), dtype=np.float32))  # the first forward sets it
    assert fast.keep_freed_memory()

    def fresh_pages() -> int:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        array = np.empty(64 << 20, dtype=np.uint8)
        array.fill(1)
        del array
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    fresh_pages()
    assert fresh_pages() < 64


def test_keeping_freed_memory_can_be_turned_off(monkeypatch):
    def no_c_library(*args):
        raise AssertionError("mallopt was looked up")
    monkeypatch.setattr(fast.ctypes, "CDLL", no_c_library)
    monkeypatch.setenv("NETDSL_KEEP_FREED_MEMORY", "0")
    assert fast.keep_freed_memory() is False
    monkeypatch.delenv("NETDSL_KEEP_FREED_MEMORY")
    with pytest.raises(AssertionError, match="mallopt was looked up"):
        fast.keep_freed_memory()


def test_fast_kernels_keep_float32_and_in_place_relu6_overwrites_its_input():
    net = netdsl.parse(MOBILE)
    module = net.compile("numpy", dtype="float32", seed=0)
    y = module(np.random.default_rng(5).standard_normal((2, 8, 18, 18)))
    assert y.dtype == np.float32
    x = np.array([[-1.0, 3.0, 7.5]], dtype=np.float32)
    out = fast.KERNELS["relu6"].in_place(net.graph.nodes[-1], [x], {}, None)[0]
    assert out is x and x.tolist() == [[0.0, 3.0, 6.0]]


def test_silu_is_exact_in_the_tails_and_keeps_relative_accuracy():
    """x / (1 + exp(-x)) where exp overflows (float32 below -88.7) gives -0, as torch's float32 SiLU
    does (the reference's form keeps denormals there: -3.7e-42 at -100), without a warning;
    elsewhere it agrees with the exact value to a few ulp."""
    x = np.array([-1000.0, -100.0, -20.0, -1e-3, 0.0, 1e-3, 2.5, 20.0, 100.0], dtype=np.float32)
    with np.errstate(all="raise"):
        y = fast.KERNELS["silu"].forward(None, [x], {}, None)[0]
    expected = reference.KERNELS["silu"].forward(None, [x.astype(np.float64)], {}, None)[0]
    np.testing.assert_allclose(y, expected, rtol=4e-7, atol=np.finfo(np.float32).tiny)
    assert y[0] == 0.0 and y[-1] == 100.0


@pytest.mark.parametrize("a_shape,b_shape", [
    ((300, 40), (40, 70)),          # more rows than columns: the rows are split
    ((20, 64), (64, 5000)),         # fewer rows: the columns are split
    ((4, 90, 30), (4, 30, 80)),     # a stack (grouped convolution's columns)
    ((3, 50, 16), (16, 40)),        # broadcast over the stack
])
def test_parallel_matmul_is_matmul(monkeypatch, a_shape, b_shape):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    monkeypatch.setattr(fast, "_SPLIT_NS", 0)
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    np.testing.assert_allclose(fast.parallel_matmul(a, b), np.matmul(a, b), rtol=1e-13, atol=1e-13)
    out = np.empty(np.matmul(a, b).shape)
    assert fast.parallel_matmul(a, b, out=out) is out
    np.testing.assert_allclose(out, np.matmul(a, b), rtol=1e-13, atol=1e-13)


def test_split_covers_the_range_once_over_the_threads_and_raises_what_a_part_raised(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    seen = []

    fast.split(lambda first, stop: seen.append((first, stop)), 101, fast._SPLIT_NS)
    assert sorted(seen) == fast._ranges(101, 2 * fast._PARTS_PER_THREAD) and len(seen) == 4
    seen.clear()
    fast.split(lambda first, stop: seen.append((first, stop)), 101, fast._SPLIT_NS - 1)  # too little work: one part, in this thread
    assert seen == [(0, 101)]

    def failing(first, stop):
        if first == 0:
            raise ValueError("part 0")
    with pytest.raises(ValueError, match="part 0"):
        fast.split(failing, 101, fast._SPLIT_NS)


def test_blas_keeps_to_one_thread_during_a_fast_forward_and_gets_its_count_back():
    from threadpoolctl import threadpool_info

    def blas_threads():
        # NumPy's own BLAS (SciPy, loaded by earlier tests, brings another, which the forward
        # does not call)
        return [lib["num_threads"] for lib in threadpool_info()
                if lib["user_api"] == "blas" and "numpy" in lib["filepath"].replace("\\", "/").split("/")[-2]]

    before = blas_threads()
    assert before, "NumPy's BLAS is visible to threadpoolctl"
    seen = []
    net = netdsl.parse(MOBILE)
    module = net.compile("numpy", dtype="float32", seed=0)
    relu6 = module.kernels["relu6"]

    def watching(node, inputs, weights, state):
        seen.append(blas_threads())
        return relu6.forward(node, inputs, weights, state)
    module.kernels = {**module.kernels, "relu6": fast.Kernel(watching, relu6.backward)}
    module(np.ones((1, 8, 18, 18), dtype=np.float32))
    assert seen and all(threads == [1] * len(before) for threads in seen)
    assert blas_threads() == before
    # the reference runs BLAS as it finds it
    reference_module = net.compile("numpy", dtype="float32", seed=0, reference=True)
    assert reference_module.execution is reference.PLAIN
