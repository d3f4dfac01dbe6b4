"""Hypothesis strategies that generate valid networks, for property tests (yours and ours).

In the manner of NNSmith, the generator tracks the tensor shape forward and draws each op's
parameters to fit its input, so every program it writes type-checks. How an op is drawn is part of
its record (`OPS[name].generate`), so a new op is generated as soon as it exists. It covers every op of the
language, cat and add merges, labels with references (crop's `like`), definitions with
parameters, and repeats, and it keeps the size and cost small.

    from hypothesis import given
    from netdsl.testing import programs

    @given(programs())
    def test_my_backend(program):
        net = netdsl.parse(program.text)
        assert net.output_shape == program.output_shape

Requires hypothesis (in the test extra).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from hypothesis import strategies as st

from .ops import ACTIVATIONS, OPS

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Program:
    text: str  # the .net source
    output_shape: Shape  # what the generator expects the checker to find
    ops: frozenset[str]  # the ops it wrote (to see coverage)


class _Context:
    """What an op record's `generate` rule draws with (see netdsl/ops/base.py)."""

    st = st

    def __init__(self, draw, max_channels: int):
        self.draw = draw
        self.max_channels = max_channels
        self.labels = 0

    def channels(self) -> int:
        return self.draw(st.integers(1, self.max_channels))

    def label(self) -> str:
        self.labels += 1
        return f"l{self.labels}"


#: The ops a program can contain: every record with a generator (all but the input).
GENERATED_OPS = tuple(op for op in OPS.values() if op.generate is not None)


@st.composite
def programs(draw, max_layers: int = 6, max_channels: int = 6, max_size: int = 9,
             first: str | None = None) -> Program:
    """A valid .net program with its input shape written in, and its expected output shape;
    `first` names an op to draw as the first layer (where it fits the input)."""
    flat = draw(st.integers(0, 5)) == 0
    c = draw(st.integers(1, 4))
    if flat:
        shape: Shape = (draw(st.integers(1, 8)),)
    else:
        shape = (c, draw(st.integers(3, max_size)), draw(st.integers(3, max_size)))
    context = _Context(draw, max_channels)
    ops: set[str] = set()
    activation = draw(st.sampled_from(["relu", "none", *ACTIVATIONS]))
    lines = [f"input {'x'.join(map(str, shape))}", f"activation {activation}"]
    elements = []
    for position in range(draw(st.integers(1, max_layers))):
        op = OPS[first] if first and position == 0 else draw(st.sampled_from(GENERATED_OPS))
        assert op.generate is not None  # GENERATED_OPS holds only ops with a generator
        found = op.generate(context, shape)
        if found is None:
            continue
        text, shape = found
        elements.append(text)
        ops.add(op.name)
    while elements and elements[-1].startswith("aux{"):  # the net's last layer is its output
        elements.pop()
    if not any(element.startswith("aux{") for element in elements):
        ops.discard("aux")
    # a definition with a parameter, called (and repeated) with a shape-preserving body
    if len(shape) == 3 and draw(st.booleans()):
        c_same = shape[0]
        times = draw(st.integers(0, 2))
        lines.append(f"def keep(c, n=1) = (conv3-c - bn)*n")
        elements.append(f"keep({c_same}, n={draw(st.integers(1, 2))})*{times}")
        ops |= {"conv", "bn"} if times else set()
    if not elements:
        elements.append("id")
    lines.append(" - ".join(elements))
    return Program("\n".join(lines) + "\n", shape, frozenset(ops))


# -- the conformance kit ------------------------------------------------------------------------------

#: Shipped networks the kit runs by default (file:net, input): one of each family, at small
#: inputs that still fit them. fcn8s's smallest input is 1x1 (its first conv pads by 100), and it
#: is still the heaviest: 134M weights, 12 GMACs. GoogLeNet is the paper's (its inception modules
#: without batch norm): torchvision's, with its two auxiliary heads, batch-normalises 4x4 maps of a
#: small batch, and float32 rounding through those batch norms' backward (in the reference itself)
#: exceeds the float32 gradient floor in training mode; it passes the kit in float64.
SHIPPED_NETWORKS: tuple[tuple[str, str | None], ...] = (
    ("lenet5", None), ("vgg:A", "3x32x32"), ("resnet:resnet18", "3x64x64"),
    ("googlenet:googlenet", "3x64x64"), ("alexnet:alexnet", "3x67x67"), ("fcn:fcn8s", "3x1x1"),
)

@dataclass(frozen=True)
class Tolerance:
    """|actual - expected| <= rtol*|expected| + floor*scale elementwise, scale being the largest
    magnitude in the comparison, so that a value that is zero in theory may be rounding noise."""

    rtol: float
    floor: float  # outputs and buffers
    gradient_floor: float  # gradients, which accumulate rounding through every layer and back


#: float64: the bounds tests/test_equivalence.py holds torch to. Two correct implementations that
#: sum in different orders differ by rounding accumulated over a convolution's thousands of terms.
#: float32: outputs as in tests/test_equivalence.py; gradients get a floor of 1e-3 of their scale:
#: on googlenet_tv (3x64x64, train mode) the float32 NumPy reference's own gradient of conv1.weight
#: is 3.3e-4 of its scale away from the float64 result (rounding grows through the backward of
#: its batch norms), so no backend could meet 1e-5 there.
TOLERANCES: dict[str, Tolerance] = {"float64": Tolerance(1e-9, 1e-12, 1e-12),
                                    "float32": Tolerance(1e-4, 1e-5, 1e-3)}

#: Where a backend's own kernel is less exact than its dtype, for a reason outside netdsl: the
#: tolerance (relative, and as a floor on the gradients' scale) that its gradients get on a network
#: using the op, by (backend, op, dtype). torch's hardsigmoid backward multiplies by 1/6 rounded to
#: float32 (0.16666667163), in float64 too: 3e-8 relative per hardsigmoid a gradient passes.
KERNEL_GRADIENT_TOLERANCES: dict[tuple[str, str, str], float] = {("torch", "hardsigmoid", "float64"): 1e-6}


def kernel_gradient_tolerance(backend: str, net, dtype: str) -> float:
    """The KERNEL_GRADIENT_TOLERANCES entry that `net` calls for on `backend` (0.0 when none)."""
    ops = {n.op for n in net.graph} | {n.attrs.get("act", "none") for n in net.graph}
    return max((tolerance for (name, op, kind), tolerance in KERNEL_GRADIENT_TOLERANCES.items()
                if name == backend and op in ops and kind == dtype), default=0.0)


#: Inputs are standard normal times this: large enough that activations leave [-1, 1], where many
#: wrong kernels (a relu clipped at 5, a sigmoid's linear region) agree with right ones.
INPUT_SCALE = 4.0


class BackendMismatch(AssertionError):
    """A backend's result differs from the NumPy reference beyond the documented tolerance."""


@dataclass
class Report:
    """What `check_backend` compared: the cases (network or program) and the ops they used."""

    backend: str
    cases: list[str]
    ops: set[str]


def without_dropout(net):
    """The same network with every dropout (and stochastic depth) at p=0: train mode without
    randomness."""
    import dataclasses

    from . import Limits
    from .ir import Graph, freeze_attrs
    from .network import Network
    from .ops import RANDOM_IN_TRAINING
    nodes = tuple(dataclasses.replace(n, attrs=freeze_attrs({**n.attrs, "p": 0.0}))
                  if n.op in RANDOM_IN_TRAINING else n for n in net.graph.nodes)
    if all(a is b for a, b in zip(nodes, net.graph.nodes)):
        return net
    expanded = dataclasses.replace(net._expanded, graph=Graph(net.graph.name, nodes))
    return Network(expanded, net.input_shape, net.path, Limits(), False)


def _difference(actual, expected, rtol: float, floor: float) -> str | None:
    """None when |actual - expected| <= rtol*|expected| + floor everywhere, else the worst entry.
    Tuples (a net's output and its auxiliary outputs, in training mode) are compared in turn."""
    import numpy as np
    if isinstance(expected, tuple):
        if not isinstance(actual, tuple) or len(actual) != len(expected):
            return (f"{len(actual) if isinstance(actual, tuple) else 1} outputs, the reference gives "
                    f"{len(expected)} (the output and the auxiliary outputs, in training mode)")
        for i, (a, e) in enumerate(zip(actual, expected)):
            problem = _difference(a, e, rtol, floor)
            if problem:
                return f"output {i}: {problem}" if i else problem
        return None
    expected = np.asarray(expected, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if actual.shape != expected.shape:
        return f"shape {actual.shape}, the reference's is {expected.shape}"
    if not np.all(np.isfinite(actual)) and np.all(np.isfinite(expected)):
        return "not finite where the reference is"
    error = np.abs(actual - expected)
    excess = error - (rtol * np.abs(expected) + floor)
    worst = int(np.argmax(excess))
    if excess.flat[worst] <= 0:
        return None
    index = np.unravel_index(worst, expected.shape)
    return (f"{actual.flat[worst]:.10g} at {tuple(int(i) for i in index)}, reference "
            f"{expected.flat[worst]:.10g} (error {error.flat[worst]:.3g}, allowed "
            f"{rtol:g} relative + {floor:.3g})")


def _scale(*arrays) -> float:
    import numpy as np
    flat = [a for array in arrays for a in (array if isinstance(array, tuple) else (array,))]
    return max((float(np.max(np.abs(a))) for a in flat if np.size(a)), default=0.0)


#: What check_backend uses of netdsl.backend.CompiledModule.
_CONTRACT = ("network", "training", "run", "train", "eval", "weights", "load_weights", "save_weights",
             "freeze", "trainable")


class _Case:
    """One network compared: the reference and the candidate compiled from the same weights."""

    def __init__(self, backend, label: str, net, dtype: str, batch: int, seed: int):
        import numpy as np
        from .backend import DifferentiableModule
        self.backend, self.label, self.net, self.dtype = backend, label, net, dtype
        tolerance = TOLERANCES[dtype]
        self.rtol, self.floor, self.gradient_floor = tolerance.rtol, tolerance.floor, tolerance.gradient_floor
        looser = kernel_gradient_tolerance(backend.name, net, dtype)
        self.gradient_rtol = max(self.rtol, looser)
        self.gradient_floor = max(self.gradient_floor, looser)
        self.reference = _reference(net, dtype, seed)
        self.initial = {name: value.copy() for name, value in self.reference.weights.items()}
        self.module = self._compile()
        lacking = [name for name in _CONTRACT if not hasattr(self.module, name)]
        if lacking:
            raise BackendMismatch(f"backend {backend.name}'s module for {label} does not implement "
                                  f"netdsl.backend.CompiledModule: it has no {', '.join(lacking)}")
        self.differentiable = isinstance(self.module, DifferentiableModule)
        rng = np.random.default_rng(seed)
        self.x = (rng.standard_normal((batch, *net.input_shape)) * INPUT_SCALE).astype(dtype)
        self.dy = rng.standard_normal((batch, *net.output_shape)).astype(dtype)
        # in training mode, one more gradient per auxiliary output (aux{ }): the heads are checked too,
        # in float64. In float32 their gradients are left out: GoogLeNet's heads normalise 4x4 maps of
        # a small batch, and batch norm over so few values amplifies float32 rounding past any
        # tolerance that would still catch a bug (the NumPy reference itself is that far from float64)
        heads = net.graph.aux_outputs if dtype == "float64" else ()
        self.dy_train = (self.dy, *(rng.standard_normal((batch, *net.shapes[node.id])).astype(dtype)
                                    for node in heads)) if heads else self.dy

    def _compile(self):
        weights = {name: value.copy() for name, value in self.initial.items()}
        try:
            return self.backend.compile(self.net, dtype=self.dtype, seed=0, weights=weights)
        except Exception as error:  # the kit reports any failure, with the case it happened in
            raise BackendMismatch(f"backend {self.backend.name} cannot compile {self.label}: "
                                  f"{type(error).__name__}: {error}") from error

    def fail(self, mode: str, what: str, problem: str, locate: bool = False) -> None:
        where = f"; {self._first_differing_node(mode)}" if locate else ""
        raise BackendMismatch(f"backend {self.backend.name} differs from the NumPy reference on "
                              f"{self.label} ({mode} mode, {self.dtype}), {what}: {problem}{where}")

    def _call(self, what: str, function, *args):
        try:
            return function(*args)
        except BackendMismatch:
            raise
        except Exception as error:
            raise BackendMismatch(f"backend {self.backend.name} fails on {self.label} ({what}): "
                                  f"{type(error).__name__}: {error}") from error

    def check(self) -> None:
        import numpy as np
        buffers = [spec.name for spec in self.net.weight_specs if not spec.trainable]
        for mode in ("eval", "train"):
            self.reference.train(mode == "train")
            self.module.train(mode == "train")
            expected = self.reference.run(self.x)
            actual = self._call(f"{mode} forward", self.module.run, self.x)
            # An output that is zero in theory (dead ReLUs into batch norm) is noise on the input's scale.
            problem = _difference(actual, expected, self.rtol, self.floor * _scale(expected, self.x))
            if problem:
                self.fail(mode, "output", problem, locate=True)
            if self.differentiable:
                dy = self.dy_train if mode == "train" else self.dy
                dx_ref, grads_ref = self.reference.gradients(self.x, dy)
                dx, grads = self._call(f"{mode} gradients", self.module.gradients, self.x, dy)
                if set(grads) != set(grads_ref):
                    self.fail(mode, "gradients", f"names {sorted(set(grads) ^ set(grads_ref))[:3]} "
                                                 f"are in one result only")
                # Gradients are linear in dy: one that is zero in theory is rounding noise on the
                # scale of dy and of the other gradients.
                floor = self.gradient_floor * _scale(dx_ref, dy, *grads_ref.values())
                problem = _difference(dx, dx_ref, self.gradient_rtol, floor)
                if problem:
                    self.fail(mode, "gradient of the input", problem)
                for name in grads_ref:
                    problem = _difference(grads[name], grads_ref[name], self.gradient_rtol, floor)
                    if problem:
                        self.fail(mode, f"gradient of {name}", problem)
            # Running statistics moved alike (or not at all in eval); they share one scale.
            weights = self.module.weights
            floor = self.floor * _scale(*(self.reference.weights[name] for name in buffers))
            for name in buffers:
                problem = _difference(np.asarray(weights[name]), self.reference.weights[name], self.rtol, floor)
                if problem:
                    self.fail(mode, name, problem)

    def _first_differing_node(self, mode: str) -> str:
        """Where the outputs part: the first node whose value differs, when the module can `trace`."""
        import numpy as np
        reference = _reference(self.net, self.dtype, 0, self.initial).train(mode == "train")
        module = self._compile().train(mode == "train")
        if not callable(getattr(module, "trace", None)):
            return "the module has no trace(x) to find the first node that differs"
        try:
            values = module.trace(self.x)
        except Exception as error:
            return f"trace(x) failed ({type(error).__name__}: {error})"
        expected = reference.trace(self.x)
        for node, want, got in zip(self.net.graph.nodes, expected, values):
            if want is None or got is None:
                continue
            got = got.detach().cpu().numpy() if hasattr(got, "detach") else np.asarray(got)
            problem = _difference(got, want, self.rtol, self.floor * _scale(want, self.x))
            if problem:
                act = node.attrs.get("act", "none")
                op = node.op + (f"+{act}" if act != "none" else "")
                place = f" at {node.span.location()}" if node.span else ""
                return f"first differing node: {node.name} ({op}{place}): {problem}"
        return "no single node differs beyond the tolerance (the error accumulates)"


def _reference(net, dtype: str, seed: int, weights=None):
    from .plugins import get_backend
    # the plain kernels: a backend is judged against the reference itself, not its faster stand-ins
    return get_backend("numpy").compile(net, dtype=dtype, seed=seed, weights=weights, reference=True)


def _load_case(spec: str, input: str | None):
    from .network import load
    path, _, name = spec.partition(":")
    return load(path, net=name or None, input=input)


def _well_conditioned(net, dtype: str, x, seed: int) -> bool:
    """The preconditions tests/equivalence.py applies to generated programs, on the kit's own input
    and weights: every bn sees a batch variance of at least 1e-2 per channel (over a nearly
    constant batch any implementation amplifies rounding by up to 1/sqrt(eps)), and in each mode
    every max-pool window's maximum beats the runner-up by more than 1e-9 of the scale (at a tie
    the gradient may go to either); every group a layer norm normalises passes
    `layer_norm_is_well_conditioned`."""
    import numpy as np
    if not any(node.op in ("bn", "layernorm", *MAX_OPS) for node in net.graph):
        return True
    for training in (True, False):
        values = _reference(net, dtype, seed).train(training).trace(x)
        for node in net.graph:
            if node.op == "layernorm" and not layer_norm_is_well_conditioned(
                    values[node.inputs[0]].astype(np.float64), node.attrs["eps"]):
                return False
            if node.op == "bn" and training:
                value = values[node.inputs[0]].astype(np.float64)
                if value.var(axis=(0, 2, 3) if value.ndim == 4 else (0,)).min() < 1e-2:
                    return False
            elif node.op == "maxpool" and node.attrs["k"] > 1 and not _maxima_are_unique(
                    node, values[node.inputs[0]].astype(np.float64), net.shapes[node.id]):
                return False
            elif node.op in ("adaptive_maxpool", "gmp") and not adaptive_maxima_are_unique(
                    node, values[node.inputs[0]].astype(np.float64)):
                return False
    return True


def layer_norm_is_well_conditioned(value, eps: float) -> bool:
    """Whether each group of a batch-first value (N, C, H, W), (N, C) or tokens (N, T, D) that layer
    norm normalises (the channels at a pixel, the features of a sample or of a token) is all zeros
    or has its largest magnitude within 100 times sqrt(variance + eps). Beyond that, x - mean
    cancels, and any implementation multiplies the rounding of x by |x| / sqrt(variance + eps)."""
    import numpy as np
    axis = -1 if value.ndim == 3 else 1
    largest = np.abs(value).max(axis=axis)
    return bool(np.all((largest == 0) | (largest <= 100 * np.sqrt(value.var(axis=axis) + eps))))


#: Ops whose gradient goes to one maximum of a window (a tie there may route it either way).
MAX_OPS = ("maxpool", "adaptive_maxpool", "gmp")


def adaptive_maxima_are_unique(node, value) -> bool:
    """As _maxima_are_unique, for adaptive_maxpool and gmp on an (N, C, H, W) value: in every
    window of two or more values the maximum beats the runner-up by more than 1e-9 of the scale."""
    import numpy as np
    from .ops.pool import adaptive_bounds
    n, c, h, w = value.shape
    size = node.attrs["size"] if node.op == "adaptive_maxpool" else 1
    scale = max(float(np.abs(value).max()), 1.0)
    for r0, r1 in adaptive_bounds(h, size):
        for c0, c1 in adaptive_bounds(w, size):
            window = value[:, :, r0:r1, c0:c1].reshape(n, c, -1)
            if window.shape[-1] < 2:
                continue
            top = np.sort(window, axis=-1)[..., -2:]
            if np.min(top[..., 1] - top[..., 0]) <= 1e-9 * scale:
                return False
    return True


def _maxima_are_unique(node, value, out_shape) -> bool:
    import numpy as np
    a = node.attrs
    k, s, p = a["k"], a["stride"], a["pad"]
    n, c, h, w = value.shape
    ho, wo = out_shape[1:]
    padded = np.full((n, c, max(h + 2 * p, (ho - 1) * s + k), max(w + 2 * p, (wo - 1) * s + k)), -np.inf)
    padded[:, :, p:p + h, p:p + w] = value
    windows = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(2, 3))
    windows = windows[:, :, ::s, ::s][:, :, :ho, :wo].reshape(n, c, ho, wo, k * k)
    top = np.sort(windows, axis=-1)[..., -2:]
    return bool(np.min(top[..., 1] - top[..., 0]) > 1e-9 * max(float(np.abs(value).max()), 1.0))


def check_backend(backend, *, networks: tuple[tuple[str, str | None], ...] | None = SHIPPED_NETWORKS,
                  examples: int = 20, dtype: str = "float64", batch: int = 2, seed: int = 0,
                  every_op: bool = True) -> Report:
    """Check a backend against the NumPy reference; raises BackendMismatch naming the first
    network (and node, when the module offers `trace(x)`) where it differs.

    `backend` is a name in the `netdsl.backends` entry-point group or a `netdsl.backend.Backend`.
    For each shipped network in `networks` (spec, input) and then `examples` generated programs
    (`programs()`; derandomized, so a run is repeatable), both backends are compiled from the same
    weights; then, in eval and in train mode: the output, and where the module is a
    DifferentiableModule the gradients of the input and of every trainable weight for a random
    output gradient, and the buffers (running statistics) afterwards. Dropout and stochastic depth
    are set to p=0 (their random stream is each backend's own). Generated programs must meet the
    equivalence tests' preconditions (well-conditioned batch norm, unique max-pool maxima); others
    are skipped. With `every_op`, each op that neither the networks nor the programs used then gets
    the simplest program that starts with it and meets the preconditions, so that a backend
    lacking any kernel fails.

    Tolerances (`TOLERANCES`): |actual - expected| <= rtol*|expected| + floor*scale elementwise,
    with scale the largest magnitude in the comparison (so a value that is zero in theory may be
    rounding noise): float64 rtol 1e-9, floor 1e-12; float32 rtol 1e-4, floor 1e-5 for outputs
    and 1e-3 for gradients. Gradients through a kernel known to be less exact than its dtype
    (`KERNEL_GRADIENT_TOLERANCES`: torch's float64 hardsigmoid) get that entry's tolerance.

    >>> check_backend("jax", examples=5)
    """
    import numpy as np
    from hypothesis import HealthCheck, assume, find, given, settings
    from hypothesis.errors import NoSuchExample

    from .backend import Backend
    from .network import parse
    from .plugins import get_backend
    if not isinstance(backend, Backend):
        backend = get_backend(backend)
    if dtype not in TOLERANCES:
        raise ValueError(f"dtype must be one of {', '.join(TOLERANCES)}, got {dtype!r}")
    report = Report(backend.name, [], set())

    def run(label: str, net, batch: int) -> None:
        _Case(backend, label, without_dropout(net), dtype, batch, seed).check()
        report.cases.append(label)
        report.ops |= {n.op for n in net.graph} | {n.attrs.get("act", "none") for n in net.graph} - {"none"}

    for spec, input in networks or ():
        net = _load_case(spec, input)
        run(f"{spec}" + (f" at {input}" if input else ""), net, batch)
    if examples <= 0:
        return report

    count = iter(range(1, 10**9))
    options = settings(derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))

    def well_conditioned(program: Program) -> bool:
        # A batch of 8: batch norm over two nearly equal values amplifies rounding past the floor.
        net = without_dropout(parse(program.text))
        x = (np.random.default_rng(seed).standard_normal((8, *net.input_shape)) * INPUT_SCALE).astype(dtype)
        return _well_conditioned(net, dtype, x, seed)

    def compare(program: Program) -> None:
        try:
            run(f"generated program {next(count)}", without_dropout(parse(program.text)), 8)
        except BackendMismatch as error:
            raise BackendMismatch(f"{error}\nthe program:\n{program.text}") from None

    @settings(options, max_examples=examples)
    @given(programs())
    def generated(program: Program) -> None:
        assume(well_conditioned(program))
        compare(program)

    generated()
    for op in GENERATED_OPS if every_op else ():
        if op.name in report.ops:
            continue
        try:  # the simplest program that starts with the op and meets the preconditions
            program = find(programs(first=op.name), _covers(op.name, well_conditioned),
                           settings=settings(options, max_examples=20))
        except NoSuchExample:
            continue  # the report's ops then lack it, for the caller to see
        compare(program)
    return report


def _covers(op: str, well_conditioned: Callable[[Program], bool]) -> Callable[[Program], bool]:
    """The condition `find` looks for: a program that uses `op` and runs well in the kit."""
    def condition(program: Program) -> bool:
        return op in program.ops and well_conditioned(program)
    return condition
