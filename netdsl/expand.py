"""Surface AST -> IR: definitions called, repeats unrolled, labels resolved, activations made explicit.

`expand_net` walks one net's chain with an environment of definition parameters and emits IR nodes
in topological order. Beside the graph it records the layout (netdsl/ir.py: the chain/scope/merge
structure the nodes came from), which summaries, drawings, the printer and the torch lowering walk.

Names: each definition call, labelled group and merge opens a scope; nodes are named inside it by
op and count (conv1, conv2, maxpool1) or by their label, giving stable paths such as
`stage2.bottleneck1.conv2`. See docs/language.md for the rules on implicit activations.
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass, field
from functools import wraps

from . import ast
from .errors import (NetDSLError, NetDSLLimitError, NetDSLNameError, NetDSLShapeError, NetDSLSyntaxError,
                     Span, suggest)
from .ir import (Frame, Graph, LayoutAux, LayoutChain, LayoutIdentity, LayoutMerge, LayoutOp, LayoutScope, Node,
                 freeze_attrs)
from .limits import Limits
from .modules import Module
from .names import label_problem, suggested_label
from .ops.base import AttributeProblem, MissingAttribute, ShapeChecks, ShapeProblem, format_shape
from .ops import ACTIVATIONS, ALIASES, IDENTITY, IMPLICIT, OPS, REQUIRED, RESERVED, WEIGHT_OPS

# -- values of expressions ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Symbol:
    """A bare name that is not a parameter: `bilinear`, `true`, `relu`."""

    name: str
    span: Span


@dataclass(frozen=True, slots=True)
class Tensor:
    """A definition argument that is a reference, `up(512, @s4)`: inside the body, `@skip` is
    that tensor (U-Net's decoder takes its skip connection this way)."""

    node: int
    label: str


_MAX_MAGNITUDE = 2**62

#: The name a definition's body reads its input's channel count by (docs/language.md, section 7):
#: torch's own word for it, nn.Conv2d(in_channels, ...).
IN_CHANNELS = "in_channels"
_NON_SQUARE = re.compile(r"[0-9]+x[0-9]+")  # the kernel of conv1x7, written without channels


# -- scopes ---------------------------------------------------------------------------------------


def _numbered(kind: str, count: int) -> str:
    """conv1, conv2; relu6_1, relu6_2 for a kind that ends in a digit (relu61 would read as relu 61)."""
    return f"{kind}_{count}" if kind[-1].isdigit() else f"{kind}{count}"


class _Scope:
    def __init__(self, path: str, parent: "_Scope | None"):
        self.path = path
        self.parent = parent
        self.counters: dict[str, int] = {}
        self.local_names: dict[str, Span | None] = {}
        self.labels: dict[str, int] = {}
        self.children: dict[str, _Scope] = {}  # named sub-scopes, for @scope.label

    def child(self, local: str, path: str | None = None) -> "_Scope":
        scope = _Scope(path or self.full(local), self)
        self.children[local] = scope
        return scope

    def full(self, local: str) -> str:
        return f"{self.path}.{local}" if self.path else local

    def claim(self, kind: str, label: str | None, span: Span | None) -> str:
        """Reserve the next name for an element of this kind; returns the local name."""
        count = self.counters.get(kind, 0) + 1
        if label is None:
            while _numbered(kind, count) in self.local_names:  # skip a name a label already took
                count += 1
        self.counters[kind] = count
        local = label if label is not None else _numbered(kind, count)
        if local in self.local_names:
            first = self.local_names[local]
            notes = [f"first used at {first.location()}"] if first is not None else []
            if label is not None:
                notes.append("a label inside a repeat names every iteration alike; "
                             "put the repeated part in a definition instead")
            raise NetDSLNameError(f"the name {local} is used twice in the same scope", span, notes)
        self.local_names[local] = span
        return local

    def lookup(self, label: str) -> int | None:
        """A label visible from here; `a.b.p` finds scope a outward, then b inside it, then p."""
        first, *rest = label.split(".")
        scope: _Scope | None = self
        while scope is not None:
            if not rest and first in scope.labels:
                return scope.labels[first]
            if rest and first in scope.children:
                inner = scope.children[first]
                for part in rest[:-1]:
                    inner = inner.children.get(part)
                    if inner is None:
                        return None
                return inner.labels.get(rest[-1])
            scope = scope.parent
        return None

    def visible_labels(self) -> list[str]:
        names, scope = [], self
        while scope is not None:
            names.extend(scope.labels)
            scope = scope.parent
        return names


@dataclass
class _Draft:
    op: str
    attrs: dict
    inputs: list[int]
    name: str
    span: Span | None
    context: tuple[Frame, ...]


@dataclass(frozen=True)
class ExpandedNet:
    graph: Graph
    layout: LayoutChain
    activation: str
    input_shape: tuple[int, ...] | None
    input_span: Span | None
    named: bool  # False for a file's one unnamed chain


def net_activation(module: Module, net: ast.Net) -> str:
    setting = net.activation or module.program.activation
    if setting is None:
        return "relu"
    name, span = setting
    if name not in ("none", *ACTIVATIONS):
        raise NetDSLNameError(f"unknown activation {name}", span,
                              ["choose one of: none, " + ", ".join(ACTIVATIONS)])
    return name


def expand_net(module: Module, net: ast.Net, limits: Limits, default_name: str = "net",
               input_shape: tuple | None = None) -> ExpandedNet:
    """Expand one net of a module into its IR graph (an unnamed net is called `default_name`).

    `input_shape` is the shape the net will be checked with (--input, or None for the one the file
    declares): a definition that reads `in_channels` needs its input's channel count while the
    net is expanded."""
    activation = net_activation(module, net)
    setting = net.input or module.program.input
    expander = _Expander(module, limits, input_shape if input_shape is not None
                         else setting[0] if setting else None)
    _check_size(expander, net.body, limits)
    root = _Scope("", None)
    root.labels["input"] = 0
    root.local_names["input"] = None
    expander.nodes.append(_Draft("input", {}, [], "input", net.span, ()))
    _, layout = expander.chain(net.body, 0, root, {}, (), 0)
    if expander.nodes[-1].op == "aux":
        raise NetDSLNameError("a net cannot end with aux{ }: its last layer is its output",
                              expander.nodes[-1].span, ["put aux{ ... } where the head branches off, "
                                                        "and go on with the main chain after it"])
    _assign_activations(expander.nodes, activation)
    nodes = tuple(Node(i, d.op, freeze_attrs(d.attrs), tuple(d.inputs), d.name, d.span, d.context)
                  for i, d in enumerate(expander.nodes))
    return ExpandedNet(Graph(net.name or default_name, nodes), layout, activation,
                       setting[0] if setting else None, setting[1] if setting else None,
                       net.name is not None)


def _depth_bounded(element):
    """Bound how deeply `element` calls nest (brackets, merges and definition calls together), so
    that a program within every per-file limit still cannot exhaust Python's stack."""
    @wraps(element)
    def bounded(self, node, *args):
        if self.depth >= self.limits.max_depth:
            if isinstance(self, _Sizer):
                raise _Unsized  # the expander reports it with the full context
            raise NetDSLLimitError(
                f"layers nested more than {self.limits.max_depth} deep (brackets, merges and "
                f"definition calls together)", node.span,
                [*_context_notes(args[3] if len(args) > 3 else ()),
                 "raise Limits.max_depth to accept it"])
        self.depth += 1
        try:
            return element(self, node, *args)
        finally:
            self.depth -= 1
    return bounded


class _Unsized(Exception):
    """The sizing pass met something only the expander can report properly."""


class _Sizer:
    """Counts the nodes and expansion steps of a chain without building anything.

    The iterations of a repeat are identical, so a repeat multiplies its body's size, and a
    definition call is sized once per argument list: a program's size is known before expansion,
    and a repeat bomb is refused at once instead of after a million steps.
    """

    def __init__(self, expander: "_Expander"):
        self.expander = expander
        self.limits = expander.limits
        self.depth = 0
        self.memo: dict[tuple, tuple[int, int]] = {}
        self.calls: list[str] = []
        self.indexed_iterations = 0  # iterations of indexed repeats sized, bounded by the step limit
        self.lower_bound = False  # whether a size was left partly counted, once over a limit
        self.index_read: dict[int, bool] = {}  # id(repeat) -> whether its body reads its index

    def reads_index(self, element: ast.Repeat) -> bool:
        known = self.index_read.get(id(element))
        if known is None:
            known = self.index_read[id(element)] = _mentions(element.index.name, [element.body])
        return known

    def chain(self, chain: ast.Chain, env: dict) -> tuple[int, int]:
        nodes = steps = 0
        for element in chain.items:
            n, s = self.element(element, env)
            nodes, steps = nodes + n, steps + s
        return nodes, steps

    @_depth_bounded
    def element(self, element, env: dict) -> tuple[int, int]:
        if isinstance(element, ast.Labelled):
            n, s = self.element(element.body, env)
            return n, s + 1
        if isinstance(element, ast.Atom):
            if element.name == IDENTITY:
                return 0, 1
            if element.name in OPS or element.name in ALIASES:
                return 1, 1
            if element.name in self.expander.defs:
                return self.call(element, env)
            raise _Unsized
        if isinstance(element, ast.Group):
            n, s = self.chain(element.body, env)
            return n, s + 1
        if isinstance(element, ast.Repeat):
            count = self.value(element.count, env)
            if (isinstance(count, bool) or not isinstance(count, int) or count < 0
                    or count > self.expander.limits.max_repeat):
                raise _Unsized  # the expander says exactly what is wrong with the count
            if element.index is None or not self.reads_index(element):  # identical iterations
                n, s = self.element(element.body, env)
                return count * n, 1 + count * s
            if index_problem(element.index.name, env):
                raise _Unsized
            nodes, steps = 0, 1
            for i in range(count):  # each iteration sees its own index, so may differ
                self.indexed_iterations += 1
                if self.indexed_iterations > self.limits.max_expansion_steps:
                    raise _Unsized  # the expander stops at its step limit itself
                n, s = self.element(element.body, {**env, element.index.name: i})
                nodes, steps = nodes + n, steps + s
                if nodes > self.limits.max_nodes or steps > self.limits.max_expansion_steps:
                    self.lower_bound = True  # already too large: the rest need not be sized
                    break
            return nodes, steps
        if isinstance(element, ast.Merge):
            sizes = [self.chain(branch, env) for branch in element.branches]
            return 1 + sum(n for n, _ in sizes), 1 + sum(s for _, s in sizes)
        if isinstance(element, ast.AuxOutput):
            n, s = self.chain(element.body, env)
            return n + 1, s + 1
        if isinstance(element, ast.Choice):
            chosen = self.value(element.condition, env)
            if not isinstance(chosen, bool):  # in_channels (unknown here), or a mistake
                raise _Unsized
            branch = element.then if chosen else element.otherwise
            if branch is None:
                return 0, 1
            n, s = self.element(branch, env)
            return n, s + 1
        raise _Unsized

    def call(self, atom: ast.Atom, env: dict) -> tuple[int, int]:
        if atom.name in self.calls or len(self.calls) >= self.expander.limits.max_call_depth:
            raise _Unsized
        try:
            bound = self.expander.bind_call(self.expander.defs[atom.name], atom, env, (), None, None)
        except NetDSLError:
            raise _Unsized from None
        key = (atom.name, tuple((k, v) for k, v in bound.items() if not isinstance(v, Symbol)))
        if key not in self.memo:
            self.calls.append(atom.name)
            try:
                n, s = self.chain(self.expander.defs[atom.name].body, bound)
            finally:
                self.calls.pop()
            self.memo[key] = (n, s + 1)
        return self.memo[key]

    def value(self, expr: ast.Expr, env: dict):
        try:
            return self.expander.evaluate(expr, env, ())
        except NetDSLError:
            raise _Unsized from None


def _check_size(expander: "_Expander", body: ast.Chain, limits: Limits) -> None:
    """Refuse a net that would expand past the node or step limit, before expanding it."""
    sizer = _Sizer(expander)
    try:
        nodes, steps = sizer.chain(body, {})
    except _Unsized:  # the expander will report the problem with its full context
        return
    if nodes + 1 > limits.max_nodes:
        raise NetDSLLimitError(
            f"the network expands to more than {limits.max_nodes:,} nodes", _culprit(sizer, body, 0),
            [f"it would have {'at least ' * sizer.lower_bound}{nodes + 1:,} nodes",
             "raise Limits.max_nodes to accept it"])
    if steps > limits.max_expansion_steps:
        raise NetDSLLimitError(
            f"expansion takes more than {limits.max_expansion_steps:,} steps", _culprit(sizer, body, 1),
            [f"it would take {'at least ' * sizer.lower_bound}{steps:,} steps; a repeat or definition "
             f"multiplies out too far",
             "raise Limits.max_expansion_steps to accept it"])


def _culprit(sizer: _Sizer, body: ast.Chain, which: int) -> Span:
    """The top-level element that contributes the most nodes (or steps)."""
    return max(body.items, key=lambda element: sizer.element(element, {})[which]).span


def _context_notes(context: tuple[Frame, ...]) -> list[str]:
    return [f"in {frame.description} at {frame.span.location()}" for frame in reversed(context)]


class _Expander:
    def __init__(self, module: Module, limits: Limits, input_shape: tuple | None = None):
        self.defs = module.defs
        self.limits = limits
        self.input_shape = input_shape
        self.nodes: list[_Draft] = []
        self.shapes: list[tuple] = []  # of nodes[:len(shapes)], found only as in_channels needs them
        self.reads_channels: dict[str, bool] = {}  # definition name -> whether its body reads in_channels
        self.steps = 0
        self.calls: list[str] = []  # the definitions being expanded, outermost first
        self.depth = 0  # elements being expanded inside each other (see _depth_bounded)
        # (id(atom), id(env)) -> the checked result: see resolve_op and call. The ids are those of
        # the module's AST nodes and of environments this expander keeps, alive while it is.
        self.resolved_ops: dict[tuple[int, int], tuple[str, dict, tuple]] = {}
        self.bound_calls: dict[tuple[int, int, int | None], tuple[dict, str]] = {}
        # (id(env), id(repeat), i) -> (env, env with the repeat's index = i): see indexed_env
        self.indexed_envs: dict[tuple[int, int, int], tuple[dict, dict]] = {}

    # -- bookkeeping ------------------------------------------------------------------------------

    def step(self, span: Span) -> None:
        self.steps += 1
        if self.steps > self.limits.max_expansion_steps:
            raise NetDSLLimitError(
                f"expansion takes more than {self.limits.max_expansion_steps:,} steps", span,
                ["a repeat or definition multiplies out too far; raise Limits.max_expansion_steps"])

    def add_node(self, draft: _Draft) -> int:
        if len(self.nodes) >= self.limits.max_nodes:
            raise NetDSLLimitError(
                f"the network expands to more than {self.limits.max_nodes:,} nodes", draft.span,
                [*_context_notes(draft.context), "raise Limits.max_nodes to accept it"])
        self.nodes.append(draft)
        return len(self.nodes) - 1

    # -- chains and elements ----------------------------------------------------------------------

    def chain(self, chain: ast.Chain, current: int, scope: _Scope, env: dict, context: tuple,
              depth: int) -> tuple[int, LayoutChain]:
        start = None
        if chain.start is not None:
            current = self.resolve_ref(chain.start, scope, context, env)
            start = _ref_text(chain.start, env)
        items: list = []
        entry = current
        for element in chain.items:
            current = self.element(element, current, scope, env, context, depth, items, None)
        return current, LayoutChain(start, tuple(items), entry, current)

    @_depth_bounded
    def element(self, element, current: int, scope: _Scope, env: dict, context: tuple, depth: int,
                out: list, label: str | None) -> int:
        self.step(element.span)
        if isinstance(element, ast.Atom):  # first: most elements are layers
            if element.name == IDENTITY and element.slide is None:
                if element.args:
                    raise NetDSLNameError("id takes no arguments", element.args[0].span)
                out.append(LayoutIdentity(label))
                return current
            if element.name in OPS or element.name in ALIASES:
                node = self.op(element, current, scope, env, context, label)
                refs = tuple((arg.name, _ref_text(arg.value, env)) for arg in element.args
                             if isinstance(arg.value, ast.Ref)) if element.args else ()
                out.append(LayoutOp(node, label, refs))
                return node
            if element.name in self.defs:
                return self.call(element, current, scope, env, context, depth, out, label)
            raise self.unknown_name(element, context)
        if isinstance(element, ast.Labelled):
            label_span = Span(element.span.source, element.span.start,
                              element.span.start + len(element.label))
            if element.label in RESERVED:
                raise NetDSLNameError(f"{element.label} is a reserved word and cannot be a label",
                                      label_span)
            problem = label_problem(element.label)
            if problem:
                raise NetDSLNameError(problem, label_span,
                                      [f"did you mean {suggested_label(element.label)}?",
                                       "labels become attribute names of the compiled torch module"])
            result = self.element(element.body, current, scope, env, context, depth, out, element.label)
            scope.labels[element.label] = result
            return result
        if isinstance(element, ast.Group):
            if label is None:  # a plain group is only grouping: no scope of its own
                if element.body.start is not None:
                    current = self.resolve_ref(element.body.start, scope, context, env)
                for item in element.body.items:
                    current = self.element(item, current, scope, env, context, depth, out, None)
                return current
            return self.scoped(element, label, current, scope, env, context, depth, out)
        if isinstance(element, ast.Repeat):
            if label is not None:
                return self.scoped(element, label, current, scope, env, context, depth, out)
            count = self.repeat_count(element, env, context)
            index = element.index
            for i in range(count):
                if index is None:
                    frame = Frame(f"repeat iteration {i + 1} of {count}", element.span)
                    inner_env = env
                else:
                    frame = Frame(f"repeat iteration {i + 1} of {count} ({index.name} = {i})", element.span)
                    inner_env = self.indexed_env(element, env, i, context)
                current = self.element(element.body, current, scope, inner_env, (*context, frame), depth,
                                       out, None)
            return current
        if isinstance(element, ast.Merge):
            return self.merge(element, current, scope, env, context, depth, out, label)
        if isinstance(element, ast.Choice):
            chosen = element.then if self.condition(element.condition, env, context) else element.otherwise
            if chosen is None:  # `if ... then x` without else: the input passes through
                out.append(LayoutIdentity(label))
                return current
            return self.element(chosen, current, scope, env, context, depth, out, label)
        if isinstance(element, ast.AuxOutput):
            return self.aux_output(element, current, scope, env, context, depth, out, label)
        raise TypeError(f"unexpected AST node {element!r}")  # pragma: no cover

    def scoped(self, element, label: str, current: int, scope: _Scope, env: dict, context: tuple,
               depth: int, out: list) -> int:
        """A labelled group or repeat: its own scope, named by the label."""
        local = scope.claim("group", label, element.span)
        inner = scope.child(local)
        items: list = []
        entry = current
        current = self.element(element, current, inner, env, context, depth + 1, items, None)
        out.append(LayoutScope(local, LayoutChain(None, tuple(items), entry, current)))
        return current

    def indexed_env(self, element: ast.Repeat, env: dict, i: int, context: tuple) -> dict:
        """The environment of iteration i of `body*n for NAME`: env with NAME = i. One dict per
        (env, repeat, i), kept with env for the expander's life: the caches key on id(env)."""
        key = (id(env), id(element), i)
        found = self.indexed_envs.get(key)
        if found is None:
            index = element.index
            problem = index_problem(index.name, env)
            if problem:
                raise NetDSLNameError(problem, index.span, _context_notes(context))
            found = self.indexed_envs[key] = (env, {**env, index.name: i})
        return found[1]

    def repeat_count(self, element: ast.Repeat, env: dict, context: tuple) -> int:
        count = self.evaluate(element.count, env, context)
        if isinstance(count, bool) or not isinstance(count, int):
            raise NetDSLNameError(f"a repeat count must be a whole number, got {_show(count)}",
                                  element.count.span, [*_context_notes(context), *_whole_number_notes(count)])
        if count < 0:
            raise NetDSLNameError(f"a repeat count cannot be negative, got {count}", element.count.span,
                                  _context_notes(context))
        if count > self.limits.max_repeat:
            raise NetDSLLimitError(f"repeat count {count:,} is over the limit of "
                                   f"{self.limits.max_repeat:,}", element.count.span,
                                   [*_context_notes(context), "raise Limits.max_repeat to accept it"])
        return count

    def merge(self, element: ast.Merge, current: int, scope: _Scope, env: dict, context: tuple,
              depth: int, out: list, label: str | None) -> int:
        word = OPS[element.kind].merge_word
        if len(element.branches) < 2:
            raise NetDSLNameError(f"{word}{{}} needs at least two branches separated by '|'", element.span,
                                  [f"write {word}{{ a | b }}; use id for a branch that passes its input"])
        local = scope.claim(word, label, element.span)
        outputs, branches = [], []
        for i, branch in enumerate(element.branches, 1):
            inner = _Scope(f"{scope.full(local)}.b{i}", scope)
            output, layout = self.chain(branch, current, inner, env, context, depth + 1)
            outputs.append(output)
            branches.append(layout)
        node = self.add_node(_Draft(element.kind, {}, outputs, scope.full(local), element.span, context))
        out.append(LayoutMerge(node, label, tuple(branches), current))
        return node

    def aux_output(self, element: ast.AuxOutput, current: int, scope: _Scope, env: dict, context: tuple,
                   depth: int, out: list, label: str | None) -> int:
        """`aux{ head }`: the head's result becomes an auxiliary output; the chain goes on from
        `current`. Only in a net's own chain, where the net's forward can return it."""
        if depth or context:
            raise NetDSLNameError("aux{ } belongs in a net's own chain, not inside a definition, a "
                                  "repeat, a merge or a labelled group", element.span,
                                  [*_context_notes(context),
                                   "the net returns its auxiliary outputs itself; write the head as a "
                                   "definition and call it inside aux{ }"])
        local = scope.claim("aux", label, element.span)
        inner = _Scope(scope.full(local), scope)
        scope.children[local] = inner
        output, head = self.chain(element.body, current, inner, env, context, depth + 1)
        node = self.add_node(_Draft("aux", {}, [output], scope.full(local), element.span, context))
        out.append(LayoutAux(node, label, head, current))
        return current

    def resolve_ref(self, ref: ast.Ref, scope: _Scope, context: tuple, env: dict | None = None) -> int:
        bound = env.get(ref.label) if env else None
        if isinstance(bound, Tensor):  # a definition's parameter given a reference
            return bound.node
        node = scope.lookup(ref.label)
        if node is None:
            visible = scope.visible_labels()
            notes = _context_notes(context)
            close = suggest(ref.label, visible)
            if close:
                notes.append(f"did you mean @{close}?")
            notes.append("a label is visible after it is defined, in its scope and the scopes inside "
                         "it; reach into a named scope with @scope.label")
            raise NetDSLNameError(f"unknown label @{ref.label}", ref.span, notes)
        return node

    def unknown_name(self, atom: ast.Atom, context: tuple) -> NetDSLNameError:
        notes = _context_notes(context)
        known = [*OPS, *ALIASES, *self.defs]
        close = suggest(atom.name, known)
        for op in ("conv", "deconv"):
            kernel = atom.name[len(op):]
            if atom.name.startswith(op) and (kernel.isdigit() or op == "conv" and _NON_SQUARE.fullmatch(kernel)):
                notes.append(f"{op} needs channels too, as in {atom.name}-64")
                break
        else:
            if close:
                notes.append(f"did you mean {close}?")
        span = Span(atom.span.source, atom.span.start, atom.span.start + len(atom.name))
        return NetDSLNameError(f"unknown op or definition {atom.name}", span, notes)

    # -- definition calls -------------------------------------------------------------------------

    def call(self, atom: ast.Atom, current: int, scope: _Scope, env: dict, context: tuple, depth: int,
             out: list, label: str | None) -> int:
        definition = self.defs[atom.name]
        if atom.name.startswith("_"):  # its scope would be a private or name-mangled attribute
            raise NetDSLNameError(f"a definition's name cannot start with an underscore ({atom.name})",
                                  atom.span, [f"rename it, e.g. to {atom.name.lstrip('_') or 'block'}"])
        if atom.name in self.calls:
            chain = " -> ".join(self.calls[self.calls.index(atom.name):])
            raise NetDSLNameError(f"definition {atom.name} calls itself ({chain} -> {atom.name})",
                                  atom.span, ["definitions cannot recurse; use a repeat: block*3"])
        if len(self.calls) >= self.limits.max_call_depth:
            raise NetDSLLimitError(f"definition calls nested more than {self.limits.max_call_depth} deep",
                                   atom.span, _context_notes(context))
        channels = self.input_channels(current, atom, context) if self.reads_in_channels(definition) else None
        key = (id(atom), id(env), channels)
        called = self.bound_calls.get(key)
        if called is None:
            bound = self.bind_call(definition, atom, env, context, scope, channels)
            shown = ", ".join(_show(bound[param.name]) for param in definition.params)
            # The same call in the same environment binds alike; keeping its `bound` (which also
            # keeps it alive, so its id is not reused) makes the calls inside share their entries
            # in `bound_calls` and `resolved_ops` too.
            called = self.bound_calls[key] = (bound, f"{atom.name}({shown})")
        bound, description = called
        frame = Frame(description, atom.span)
        local = scope.claim(atom.name, label, atom.span)
        inner = scope.child(local)
        self.calls.append(atom.name)
        try:
            current, body = self.chain(definition.body, current, inner, bound, (*context, frame), depth + 1)
        finally:
            self.calls.pop()
        out.append(LayoutScope(local, body, frame.description))
        return current

    def bind_call(self, definition: ast.Def, atom: ast.Atom, env: dict, context: tuple,
                  scope: "_Scope | None", channels: int | None) -> dict:
        """The body's environment: each parameter's value, and `in_channels` (the channel count of
        the call's input) when the body reads it and no parameter has that name."""
        params = definition.params
        values: dict[str, object] = {}
        spans: dict[str, Span] = {}
        positional = [arg for arg in atom.args if arg.name is None]
        if len(positional) > len(params):
            raise NetDSLNameError(
                f"{atom.name} takes {len(params)} argument{'s' * (len(params) != 1)}, "
                f"got {len(positional)}", positional[len(params)].span,
                [*_context_notes(context), f"{atom.name} is defined at {definition.span.location()}"])
        for param, arg in zip(params, positional):
            values[param.name] = self.argument_value(arg, env, context, scope)
            spans[param.name] = arg.span
        names = [param.name for param in params]
        for arg in atom.args:
            if arg.name is None:
                continue
            if arg.name not in names:
                raise NetDSLNameError(f"{atom.name} has no parameter {arg.name}", arg.span,
                                      [f"its parameters are: {', '.join(names) or 'none'}"])
            if arg.name in values:
                raise NetDSLNameError(f"{arg.name} is given twice", arg.span,
                                      [f"first given at {spans[arg.name].location()}"])
            values[arg.name] = self.argument_value(arg, env, context, scope)
            spans[arg.name] = arg.span
        bound: dict[str, object] = {}
        for param in params:
            if param.name in values:
                bound[param.name] = values[param.name]
            elif param.default is not None:
                scope_of_default = bound if channels is None else {IN_CHANNELS: channels, **bound}
                bound[param.name] = self.evaluate(param.default, scope_of_default, context)
            else:
                raise NetDSLNameError(f"{atom.name} needs a value for {param.name}", atom.span,
                                      [*_context_notes(context),
                                       f"{atom.name} is defined at {definition.span.location()}"])
        if channels is not None:
            bound[IN_CHANNELS] = channels
        return bound

    def reads_in_channels(self, definition: ast.Def) -> bool:
        """Whether the body (or a parameter's default) reads `in_channels` as its own: the calls
        inside it read their own inputs' counts when they bind."""
        known = self.reads_channels.get(definition.name)
        if known is None:
            known = (all(param.name != IN_CHANNELS for param in definition.params)
                     and _reads_name(definition, IN_CHANNELS))
            self.reads_channels[definition.name] = known
        return known

    def input_channels(self, node: int, atom: ast.Atom, context: tuple) -> int:
        """The channel count of node `node`'s tensor (the features of a vector, of each token of a
        token tensor), from the op records' shape rules run on the nodes built so far."""
        if self.input_shape is None:
            raise NetDSLShapeError(f"{atom.name} reads in_channels, which needs the net's input shape",
                                   atom.span, [*_context_notes(context),
                                               "add `input 3x224x224` to the file or the net, or pass --input"])
        while len(self.shapes) <= node:
            i = len(self.shapes)
            draft = self.nodes[i]
            inputs = [self.shapes[j] for j in draft.inputs] or [tuple(self.input_shape)]
            built = Node(i, draft.op, freeze_attrs(draft.attrs), tuple(draft.inputs), draft.name,
                         draft.span, draft.context)
            try:
                shape = OPS[draft.op].shape(built, inputs, ShapeChecks())
            except ShapeProblem as problem:
                raise NetDSLShapeError(problem.message, draft.span,
                                       [*problem.notes, *_context_notes(draft.context)]) from None
            self.shapes.append(tuple(shape))
        shape = self.shapes[node]
        channels = shape[-1] if len(shape) == 2 else shape[0]
        if not isinstance(channels, int):
            raise NetDSLShapeError(
                f"{atom.name} reads in_channels, but its input ({format_shape(shape)}) has a channel "
                f"count that is a formula in the input's size", atom.span,
                [*_context_notes(context), "give the input size as numbers (--input 3x224x224)"])
        return channels
    def argument_value(self, arg: ast.Arg, env: dict, context: tuple, scope: "_Scope | None"):
        if isinstance(arg.value, ast.Ref):  # resolved where the call is written
            if scope is None:  # sizing a call before expanding it: which tensor does not matter
                return Tensor(-1, arg.value.label)
            return Tensor(self.resolve_ref(arg.value, scope, context, env), _ref_text(arg.value, env))
        return self.evaluate(arg.value, env, context)

    # -- ops --------------------------------------------------------------------------------------

    def op(self, atom: ast.Atom, current: int, scope: _Scope, env: dict, context: tuple,
           label: str | None) -> int:
        key = (id(atom), id(env))
        resolved = self.resolved_ops.get(key)
        if resolved is None:
            resolved = self.resolve_op(atom, scope, env, context)
            if not any(isinstance(arg.value, ast.Ref) for arg in atom.args):  # refs depend on scope
                self.resolved_ops[key] = resolved
        op_name, attrs, inputs = resolved
        local = scope.claim(op_name, label, atom.span)
        return self.add_node(_Draft(op_name, dict(attrs), [current, *inputs], scope.full(local),
                                    atom.span, context))

    def resolve_op(self, atom: ast.Atom, scope: _Scope, env: dict, context: tuple):
        """The op, its attributes and its reference inputs, every value checked. The same atom in the
        same environment resolves alike, so `op` keeps the answer: a definition called fifty times
        with four argument lists checks its layers' attributes four times."""
        op_name, preset = ALIASES.get(atom.name, (atom.name, {}))
        spec = OPS[op_name]
        if not spec.writable:
            hint = (f"write {spec.merge_word}{{ a | b }}" if spec.merge_word
                    else "use @input to start a branch from the input")
            raise NetDSLNameError(f"{atom.name} is not written as a layer", atom.span, [hint])
        given: dict[str, tuple[object, Span]] = {key: (value, atom.span) for key, value in preset.items()}

        def give(name: str, value, span: Span) -> None:
            if name in given and name not in preset:
                raise NetDSLNameError(f"{name} is given twice", span,
                                      [f"first given at {given[name][1].location()}"])
            given[name] = (value, span)

        if atom.slide is not None:
            slide = atom.slide
            for name, expr in (("k", slide.kernel), ("kh", slide.kernel_h), ("kw", slide.kernel_w),
                               ("c", slide.channels), ("stride", slide.stride)):
                if expr is not None and spec.attr(name) is not None:
                    give(name, self.evaluate(expr, env, context), expr.span)
        positional = list(spec.positional)
        for arg in atom.args:
            value = arg.value
            if arg.name is not None:
                if spec.attr(arg.name) is None:
                    raise NetDSLNameError(
                        f"{op_name} has no argument {arg.name}", arg.span,
                        [f"its arguments are: {', '.join(spec.attr_names) or 'none'}"])
                give(arg.name, self.value_or_ref(value, scope, env, context), arg.span)
                continue
            # A bare name that is a boolean argument is a flag: maxpool3/2(ceil).
            if isinstance(value, ast.Var) and value.name not in env:
                flag = spec.attr(value.name)
                if flag is not None and flag.kind == "bool":
                    give(value.name, True, arg.span)
                    continue
            while positional and positional[0] in given:
                positional.pop(0)
            if not positional:
                raise NetDSLNameError(f"too many positional arguments for {op_name}", arg.span,
                                      [f"name them instead: {op_name}({', '.join(f'{n}=...' for n in spec.attr_names)})"
                                       if spec.attrs else f"{op_name} takes no arguments"])
            give(positional.pop(0), self.value_or_ref(value, scope, env, context), arg.span)
        attrs: dict[str, object] = {}
        inputs = []
        for attr in spec.attrs:
            if attr.name in given:
                value, span = given[attr.name]
                value = self.coerce(op_name, attr, value, span, context)
            elif attr.default is REQUIRED:
                raise NetDSLNameError(f"{op_name} needs {attr.name} ({attr.doc})", atom.span,
                                      _context_notes(context))
            else:
                value = attr.default
            if attr.kind == "ref":
                if value is not None:  # an optional reference not given (upsample's like)
                    inputs.append(value)
            else:
                attrs[attr.name] = value
        try:
            spec.derive(attrs)
        except MissingAttribute as missing:
            doc = spec.attr(missing.name).doc
            raise NetDSLNameError(f"{op_name} needs {missing.name} ({doc})", atom.span,
                                  _context_notes(context)) from None
        except AttributeProblem as problem:
            raise NetDSLNameError(problem.message, atom.span, _context_notes(context)) from None
        return op_name, attrs, tuple(inputs)

    def value_or_ref(self, value, scope: _Scope, env: dict, context: tuple):
        if isinstance(value, ast.Ref):
            return ("ref", self.resolve_ref(value, scope, context, env), value.span)
        return self.evaluate(value, env, context)

    def coerce(self, op: str, attr, value, span: Span, context: tuple):
        """The value of one attribute, checked against its kind and bounds."""
        try:
            return self._coerce(op, attr, value, span)
        except NetDSLError as error:
            # The calls that led here are described only on failure: formatting them for every
            # attribute of every layer was a third of the time of expanding a large network.
            raise type(error)(error.message, error.span,
                              [*_context_notes(context), *error.notes]) from None

    def _coerce(self, op: str, attr, value, span: Span):
        if attr.kind == "ref":
            if isinstance(value, tuple) and value and value[0] == "ref":
                return value[1]
            raise NetDSLNameError(f"{op} {attr.name} must be a reference such as @p3", span)
        if isinstance(value, tuple):
            raise NetDSLNameError(f"{op} {attr.name} takes a value, not a reference", value[2])
        if attr.kind == "bool":
            if isinstance(value, Symbol) and value.name in ("true", "false"):
                return value.name == "true"
            if isinstance(value, bool):
                return value
            raise NetDSLNameError(f"{op} {attr.name} must be true or false, got {_show(value)}", span)
        if attr.kind == "symbol":
            if isinstance(value, Symbol) and value.name in attr.choices:
                return value.name
            raise NetDSLNameError(f"{op} {attr.name} must be one of {', '.join(attr.choices)}, "
                                  f"got {_show(value)}", span)
        if isinstance(value, Symbol):
            raise NetDSLNameError(f"unknown name {value.name}", value.span,
                                  [f"{IN_CHANNELS} is a definition's input channel count: read it inside a def"
                                   if value.name == IN_CHANNELS else f"{op} {attr.name} takes a number"])
        if attr.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                raise NetDSLNameError(f"{op} {attr.name} must be a whole number, got {_show(value)}",
                                      span, _whole_number_notes(value))
            if value > self.limits.max_dimension:
                raise NetDSLLimitError(f"{op} {attr.name}={value:,} is over the limit of "
                                       f"{self.limits.max_dimension:,}", span,
                                       ["raise Limits.max_dimension to accept it"])
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise NetDSLNameError(f"{op} {attr.name} must be a number, got {_show(value)}", span)
            value = float(value)
        if attr.minimum is not None and value < attr.minimum:
            raise NetDSLNameError(f"{op} {attr.name} must be at least {_show(attr.minimum)}, "
                                  f"got {_show(value)}", span)
        if attr.maximum is not None and value >= attr.maximum:
            raise NetDSLNameError(f"{op} {attr.name} must be below {_show(attr.maximum)}, "
                                  f"got {_show(value)}", span)
        return value

    # -- expressions ------------------------------------------------------------------------------

    def evaluate(self, expr: ast.Expr, env: dict, context: tuple):
        """The value of an expression: a number, or a Symbol for a bare name that is not a parameter.

        Iterative (an explicit stack, operands before their operator), so a chain of thousands of
        operators cannot exhaust Python's stack.
        """
        values: list = []
        stack: list[tuple[ast.Expr, bool]] = [(expr, False)]
        while stack:
            node, operands_done = stack.pop()
            if isinstance(node, ast.Num):
                values.append(self.finite(node.value, node, context))
            elif isinstance(node, ast.Var):
                values.append(env[node.name] if node.name in env else Symbol(node.name, node.span))
            elif not operands_done:
                stack.append((node, True))
                if isinstance(node, (ast.Neg, ast.Not)):
                    stack.append((node.operand, False))
                elif isinstance(node, ast.Call):
                    stack.extend((arg, False) for arg in reversed(node.args))
                else:
                    stack.append((node.right, False))
                    stack.append((node.left, False))
            elif isinstance(node, ast.Neg):
                values.append(-self.number(values.pop(), node.operand, context))
            elif isinstance(node, ast.Not):
                values.append(not self.truth(values.pop(), node.operand, context))
            elif isinstance(node, ast.Call):
                args = [self.number(v, a, context) for v, a in zip(values[-len(node.args):], node.args)]
                del values[-len(node.args):]
                values.append(self.function_call(node, args, context))
            elif node.op in _LOGIC:
                right = self.truth(values.pop(), node.right, context)
                left = self.truth(values.pop(), node.left, context)
                values.append(left and right if node.op == "and" else left or right)
            else:
                right = self.number(values.pop(), node.right, context)
                left = self.number(values.pop(), node.left, context)
                values.append(self.arithmetic(node, left, right, context))
        return values[0]

    def condition(self, expr: ast.Expr, env: dict, context: tuple) -> bool:
        """A choice's condition: true or false, nothing else."""
        return self.truth(self.evaluate(expr, env, context), expr, context)

    def truth(self, value, expr: ast.Expr, context: tuple) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, Symbol) and value.name in ("true", "false"):
            return value.name == "true"
        if isinstance(value, Symbol):
            notes = ([f"{IN_CHANNELS} is a definition's input channel count: read it inside a def"]
                     if value.name == IN_CHANNELS else [])
            raise NetDSLNameError(f"unknown name {value.name}", value.span, [*_context_notes(context), *notes])
        raise NetDSLNameError(f"a condition must be true or false, got {_show(value)}", expr.span,
                              [*_context_notes(context), "compare it, as in s == 1 or n != 0"])

    def arithmetic(self, expr: ast.BinOp, left, right, context: tuple):
        if expr.op in _COMPARISONS:
            return _COMPARISONS[expr.op](left, right)
        if expr.op in ("/", "//", "%"):
            if right == 0:
                raise NetDSLNameError("division by zero", expr.span, _context_notes(context))
            if expr.op == "/":  # true division, as Python's: a decimal even when exact (4/2 is 2.0)
                result = left / right
            else:
                result = left // right if expr.op == "//" else left % right
        elif expr.op == "+":
            result = left + right
        elif expr.op == "-":
            result = left - right
        else:
            result = left * right
        result = self.finite(result, expr, context)
        if abs(result) > _MAX_MAGNITUDE:
            raise NetDSLLimitError("number too large", expr.span, _context_notes(context))
        return result

    def function_call(self, expr: ast.Call, args: list, context: tuple):
        """The integer functions families need (docs/language.md, section 7)."""
        function = FUNCTIONS.get(expr.name)
        if function is None:
            close = suggest(expr.name, FUNCTIONS)
            raise NetDSLNameError(f"unknown function {expr.name}", expr.span,
                                  [*_context_notes(context), f"did you mean {close}?" if close else
                                   f"the functions: {', '.join(FUNCTIONS)}"])
        arity, apply = function
        if not arity[0] <= len(args) <= arity[1]:
            wanted = str(arity[0]) if arity[0] == arity[1] else f"{arity[0]} to {arity[1]}"
            raise NetDSLNameError(f"{expr.name} takes {wanted} arguments, got {len(args)}", expr.span,
                                  _context_notes(context))
        try:
            result = apply(*args)
        except (ValueError, ZeroDivisionError, OverflowError) as error:
            raise NetDSLNameError(f"{expr.name}: {error}", expr.span, _context_notes(context)) from None
        return self.finite(result, expr, context)

    def finite(self, value, expr: ast.Expr, context: tuple):
        """`value`, refusing NaN and infinity (which no attribute means and no backend can print)."""
        if isinstance(value, float) and not math.isfinite(value):
            word = "not a number" if math.isnan(value) else "infinite"
            raise NetDSLNameError(f"this expression is {word}", expr.span,
                                  [*_context_notes(context), "numbers must be finite"])
        return value

    def number(self, value, expr: ast.Expr, context: tuple) -> int | float:
        if isinstance(value, Tensor):
            raise NetDSLNameError(f"{expr.name if isinstance(expr, ast.Var) else 'this'} is a tensor "
                                  f"(@{value.label}), not a number", expr.span,
                                  [*_context_notes(context), "use it as @name: a branch start or like=@name"])
        if isinstance(value, Symbol):
            notes = ([f"{IN_CHANNELS} is a definition's input channel count: read it inside a def"]
                     if value.name == IN_CHANNELS else ["only definition parameters can be used in arithmetic"])
            raise NetDSLNameError(f"unknown name {value.name}", value.span, [*_context_notes(context), *notes])
        if isinstance(value, bool):
            raise NetDSLNameError("a condition is not a number", expr.span, _context_notes(context))
        return value  # parameters are numbers or symbols: nothing else reaches arithmetic


_COMPARISONS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
                ">": operator.gt, ">=": operator.ge}
_LOGIC = ("and", "or")


def _reads_name(definition: ast.Def, name: str) -> bool:
    """Whether `name` appears as a variable anywhere in the definition (its body, its parameters'
    defaults), calls to other definitions not followed."""
    return _mentions(name, [definition.body, *(param.default for param in definition.params
                                               if param.default is not None)])


def _mentions(name: str, pending: list) -> bool:
    """Whether `name` appears as a variable in any of the AST nodes `pending` (calls not followed)."""
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Var):
            if node.name == name:
                return True
        elif isinstance(node, ast.Chain):
            pending.extend(node.items)
        elif isinstance(node, ast.Atom):
            if node.slide is not None:
                slide = node.slide
                pending.extend(e for e in (slide.kernel, slide.channels, slide.stride, slide.kernel_h,
                                           slide.kernel_w) if e is not None)
            pending.extend(arg.value for arg in node.args if not isinstance(arg.value, ast.Ref))
        elif isinstance(node, ast.Group):
            pending.append(node.body)
        elif isinstance(node, ast.Merge):
            pending.extend(node.branches)
        elif isinstance(node, ast.Repeat):
            pending.extend((node.body, node.count))
        elif isinstance(node, ast.Labelled):
            pending.append(node.body)
        elif isinstance(node, ast.Choice):
            pending.extend(n for n in (node.condition, node.then, node.otherwise) if n is not None)
        elif isinstance(node, ast.AuxOutput):
            pending.append(node.body)
        elif isinstance(node, ast.BinOp):
            pending.extend((node.left, node.right))
        elif isinstance(node, (ast.Neg, ast.Not)):
            pending.append(node.operand)
        elif isinstance(node, ast.Call):
            pending.extend(node.args)
    return False


def index_problem(name: str, env: dict) -> str | None:
    """Why `body*n for NAME` cannot bind NAME where `env` holds the names in scope, or None."""
    if name == IN_CHANNELS:
        return f"the repeat index cannot be called {IN_CHANNELS} (a definition's input channel count)"
    if name in RESERVED:
        return f"{name} is a reserved word and cannot be a repeat index"
    if name in env:
        return (f"the repeat index {name} would hide the {name} already defined here "
                f"(a parameter or an outer repeat's index)")
    return None


def _whole_number_notes(value) -> list[str]:
    """A decimal that is whole, 2.0 or 4/2, where a whole number is needed: say how to get one."""
    if isinstance(value, float) and value.is_integer():
        return ["/ divides to a decimal even when it comes out whole (4/2 is 2.0): "
                "write // for whole-number division (4//2 is 2)"]
    return []


def _ceil(x) -> int:
    if isinstance(x, float) and not math.isfinite(x):
        raise ValueError("not a finite number")
    return math.ceil(x)


def _floor(x) -> int:
    if isinstance(x, float) and not math.isfinite(x):
        raise ValueError("not a finite number")
    return math.floor(x)


def _ceildiv(a, b) -> int:
    if b == 0:
        raise ZeroDivisionError("division by zero")
    return -(-a // b) if isinstance(a, int) and isinstance(b, int) else math.ceil(a / b)


def make_divisible(value, divisor, min_value=None) -> int:
    """torchvision's `_make_divisible` (MobileNet-v2/v3, EfficientNet, MNASNet widths): the nearest
    multiple of `divisor`, at least `min_value` (default `divisor`), never below 90% of `value`."""
    if divisor <= 0:
        raise ValueError("the divisor must be positive")
    if min_value is None:
        min_value = divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return int(rounded)


#: name -> ((fewest, most arguments), function): what an expression may call.
FUNCTIONS: dict = {
    "min": ((2, 16), min), "max": ((2, 16), max), "ceil": ((1, 1), _ceil), "floor": ((1, 1), _floor),
    "ceildiv": ((2, 2), _ceildiv), "make_divisible": ((2, 3), make_divisible),
}


def _ref_text(ref: ast.Ref, env: dict | None) -> str:
    """How a reference is written where its tensor is labelled: a parameter given `@s4` is `s4`."""
    bound = env.get(ref.label) if env else None
    return bound.label if isinstance(bound, Tensor) else ref.label


def _show(value) -> str:
    if isinstance(value, Tensor):
        return f"@{value.label}"
    if isinstance(value, Symbol):
        return value.name
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, tuple):
        return "a reference"
    return str(value)


# -- implicit activations -------------------------------------------------------------------------

_EXPLICIT_ACTIVATIONS = frozenset({*ACTIVATIONS, "softmax"})


def _assign_activations(nodes: list[_Draft], activation: str) -> None:
    """Resolve every `act=implicit` (docs/language.md, "Implicit activations").

    1. conv, deconv and fc get the net's activation, except the output layers: those with no other
       weight layer between them and the net's output.
    2. A bn read only by such a layer's output takes the activation instead (conv-bn-relu).
    3. If the layer (or its bn) is read only by an explicit activation, none is added.
    """
    readers: list[list[int]] = [[] for _ in nodes]
    for i, node in enumerate(nodes):
        for position, source in enumerate(node.inputs):
            if position not in OPS[node.op].shape_only_inputs:  # crop's `like` reads only the size
                readers[source].append(i)
    # reaches_output[i]: node i's value reaches the output through non-weight ops only.
    reaches_output = [False] * len(nodes)
    reaches_output[-1] = True
    for node in nodes:
        if node.op == "aux":  # an auxiliary head's last layers are output layers too
            reaches_output[node.inputs[0]] = True
    for i in range(len(nodes) - 1, -1, -1):
        if reaches_output[i] and nodes[i].op not in WEIGHT_OPS:
            shape_only = OPS[nodes[i].op].shape_only_inputs
            for position, source in enumerate(nodes[i].inputs):
                if position not in shape_only:
                    reaches_output[source] = True

    def sole_reader(i: int) -> _Draft | None:
        return nodes[readers[i][0]] if len(readers[i]) == 1 else None

    for i, node in enumerate(nodes):
        if node.op not in WEIGHT_OPS or node.attrs["act"] != IMPLICIT:
            continue
        node.attrs["act"] = "none"
        if activation == "none" or reaches_output[i]:
            continue
        target = node
        reader = sole_reader(i)
        if reader is not None and reader.op == "bn" and reader.attrs["act"] == IMPLICIT:
            target = reader
            reader = sole_reader(readers[i][0])
        if reader is not None and reader.op in _EXPLICIT_ACTIVATIONS:
            continue
        target.attrs["act"] = activation
    for node in nodes:
        if node.attrs.get("act") == IMPLICIT:
            node.attrs["act"] = "none"


__all__ = ["expand_net", "ExpandedNet", "net_activation"]
