"""netdsl.symbolic on resnet152's shape chain, against the same chain in plain integers.

    python benchmarks/symbolic.py                # resnet:resnet152, median of 20
    python benchmarks/symbolic.py --net resnet50 --repeat 50 --sympy

The chain is built by walking netdsl.load(NET).graph with each node's attrs: every conv and pool
maps the height and width of its input through its window formula, every add{} compares its
branches, every tensor must be non-empty. Rows, timed interleaved in one run (timing.paired,
CPU time, median):
- symbolic: the formulas on `Size` (netdsl.symbolic), H and W as names, constraints collected;
- concrete: the same walk on ints with netdsl.ops.base.window at 224x224 (the reference);
- + solve: the symbolic walk followed by solving the constraints for H and W;
- infer_shapes: netdsl's whole concrete shape check of the graph at 3x224x224 (every op's record,
  diagnostics), which is what a symbolic check will later sit beside;
- netdsl.load at 3xHxW vs 3x224x224: the whole check `netdsl check --input` does (read, parse,
  expand, shapes with their conditions solved), the figure issue 15 bounds (under 2x);
- check 3xHxW vs 3x224x224: netdsl's shape check alone (infer_shapes, every op record, the
  conditions collected and solved for H and W) with size names, against the same check at
  224x224;
- sympy (--sympy, when installed): the symbolic walk with sympy.floor expressions instead.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import netdsl
from netdsl.ops.base import window
from netdsl.shapes import infer_shapes
from netdsl.symbolic import Constraints, Size, window_out

sys.path.insert(0, str(Path(__file__).parent))
import timing  # noqa: E402  (beside this file)

WINDOWED = ("conv", "maxpool", "avgpool")


def formulas(graph) -> list:
    """(op, input ids, (k, stride, pad, dilation, ceil)) per node; None params for shape-keeping ops."""
    chain = []
    for node in graph.nodes:
        a = node.attrs
        if node.op in WINDOWED:
            params = (a["k"], a["stride"], a["pad"], a.get("dilation", 1), a.get("ceil", False))
        else:
            params = None
        chain.append((node.op, node.inputs, params))
    return chain


def walk(chain, start, apply, empty_check, equal) -> list:
    """One walk, shared by every row: `apply(size, params)` maps a size through a window."""
    sizes: list = []
    for op, inputs, params in chain:
        hw = sizes[inputs[0]] if inputs else start
        if params is not None:
            hw = (apply(hw[0], params), apply(hw[1], params))
            empty_check(hw)
        elif op == "add":
            for i in inputs[1:]:
                equal(hw, sizes[i])
        elif op in ("gap", "fc"):
            hw = None
        sizes.append(hw)
    return sizes


def concrete(chain) -> list:
    def empty_check(hw):
        if hw[0] < 1 or hw[1] < 1:
            raise ValueError("empty")

    def equal(a, b):
        if a != b:
            raise ValueError("branches differ")
    return walk(chain, (224, 224), lambda x, p: window(x, *p)[0], empty_check, equal)


def symbolic(chain, solve: bool = False) -> list:
    cs = Constraints()

    def empty_check(hw):
        cs.at_least(hw[0], 1)
        cs.at_least(hw[1], 1)

    def equal(a, b):
        if a != b:  # canonical forms: equal unless the shapes really differ somewhere
            cs.equal(a[0], b[0])
            cs.equal(a[1], b[1])
    sizes = walk(chain, (Size.name("H"), Size.name("W")), lambda x, p: window_out(x, *p), empty_check, equal)
    if solve:
        cs.solve()
    return sizes


def sympy_walk(chain) -> list:
    import sympy
    H, W = sympy.symbols("H W", integer=True, positive=True)

    def apply(x, p):
        k, s, pad, d, ceil = p
        span = d * (k - 1) + 1
        room = x + 2 * pad - span
        return (sympy.ceiling(room / s) if ceil else sympy.floor(room / s)) + 1

    def equal(a, b):
        if sympy.simplify(a[0] - b[0]) != 0 or sympy.simplify(a[1] - b[1]) != 0:
            raise ValueError("branches differ")
    return walk(chain, (H, W), apply, lambda hw: None, equal)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--net", default="resnet:resnet152")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--sympy", action="store_true", help="also time sympy (once: it is slow)")
    args = parser.parse_args()

    graph = netdsl.load(args.net).graph
    chain = formulas(graph)
    windows = sum(params is not None for _, _, params in chain)
    merges = sum(op == "add" for op, _, _ in chain)
    # the algebra must agree with the integers before it is timed
    values = {"H": 224, "W": 224}
    for sym, num in zip(symbolic(chain), concrete(chain)):
        assert (sym is None) == (num is None) and (sym is None or tuple(d.evaluate(values) for d in sym) == num)

    clock = time.process_time
    sym, con = timing.paired(lambda: symbolic(chain), lambda: concrete(chain), args.repeat, clock=clock)
    solved, con2 = timing.paired(lambda: symbolic(chain, solve=True), lambda: concrete(chain), args.repeat, clock=clock)
    sym2, full = timing.paired(lambda: symbolic(chain), lambda: infer_shapes(graph, (3, 224, 224)),
                               args.repeat, clock=clock)
    sizes = (3, Size.name("H"), Size.name("W"))
    whole_named, whole_plain = timing.paired(lambda: netdsl.load(args.net, input="3xHxW"),
                                             lambda: netdsl.load(args.net, input="3x224x224"),
                                             args.repeat, clock=clock)
    named, plain = timing.paired(lambda: infer_shapes(graph, sizes), lambda: infer_shapes(graph, (3, 224, 224)),
                                 args.repeat, clock=clock)
    print(f"{args.net}: {len(chain)} nodes, {windows} windows, {merges} add merges; "
          f"median CPU ms of {args.repeat}")
    print(f"{'row':34} {'ms':>8} {'ratio':>7}")
    print(f"{'concrete chain (ints, window())':34} {con * 1e3:8.3f} {1:7.2f}")
    print(f"{'symbolic chain (Size)':34} {sym * 1e3:8.3f} {sym / con:7.2f}")
    print(f"{'symbolic chain + solve':34} {solved * 1e3:8.3f} {solved / con2:7.2f}")
    print(f"{'infer_shapes (whole concrete check)':34} {full * 1e3:8.3f} {1:7.2f}")
    print(f"{'symbolic chain vs infer_shapes':34} {sym2 * 1e3:8.3f} {sym2 / full:7.2f}")
    print(f"{'netdsl.load at 3x224x224':34} {whole_plain * 1e3:8.3f} {1:7.2f}")
    print(f"{'netdsl.load at 3xHxW':34} {whole_named * 1e3:8.3f} {whole_named / whole_plain:7.2f}")
    print(f"{'check 3x224x224 (infer_shapes)':34} {plain * 1e3:8.3f} {1:7.2f}")
    print(f"{'check 3xHxW (infer_shapes, solved)':34} {named * 1e3:8.3f} {named / plain:7.2f}")
    if args.sympy:
        start = clock()
        sympy_walk(chain)
        spent = clock() - start
        print(f"{'sympy chain (once)':34} {spent * 1e3:8.3f} {spent / con:7.2f}")


if __name__ == "__main__":
    main()
