"""The summary of a network as text (`netdsl summary`) and as JSON (`netdsl summary --json`).

Layers are grouped by definition call (and labelled group), each group with its subtotals, so a
152-layer ResNet reads as stem, stages and head; `depth` hides what is nested deeper.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from .ir import Graph, LayoutAux, LayoutChain, LayoutMerge, LayoutOp, LayoutScope, LayoutVisitor, node_ids
from .ops import slide_notation
from .shapes import format_shape


@dataclass(frozen=True, slots=True)
class Row:
    kind: str  # "layer" or "group"
    name: str
    depth: int
    nodes: tuple[int, ...]  # the node itself, or every node in the group


def layout_rows(graph: Graph, layout: LayoutChain) -> list[Row]:
    """Rows in program order: each group row is followed by the rows inside it."""
    rows = _Rows(graph)
    rows.rows.append(Row("layer", "input", 0, (0,)))
    rows.visit(layout, "", 0)
    return rows.rows


class _Rows(LayoutVisitor):
    def __init__(self, graph: Graph):
        self.graph = graph
        self.rows: list[Row] = []
        self.ids: list[int] = []  # the node ids met so far, in node order (as ir.node_ids lists them)
        # One dispatch table for the walk instead of a getattr per item: a ResNet-152 has 3,700.
        self.methods = {type_: getattr(self, name) for type_, name in self._METHODS.items()}

    def visit(self, item, *args):
        return self.methods[type(item)](item, *args)

    def visit_op(self, item: LayoutOp, prefix: str, depth: int):
        self.rows.append(Row("layer", self.graph[item.node].name, depth, (item.node,)))
        self.ids.append(item.node)

    def visit_scope(self, item: LayoutScope, prefix: str, depth: int):
        path = prefix + item.name
        at, first = len(self.rows), len(self.ids)
        self.rows.append(Row("group", path, depth, ()))
        self.visit(item.body, path + ".", depth + 1)
        self.rows[at] = Row("group", path, depth, tuple(self.ids[first:]))

    def visit_merge(self, item: LayoutMerge, prefix: str, depth: int):
        name = self.graph[item.node].name
        for i, branch in enumerate(item.branches, 1):
            self.visit(branch, f"{name}.b{i}.", depth)
        self.rows.append(Row("layer", name, depth, (item.node,)))
        self.ids.append(item.node)

    def visit_aux(self, item: LayoutAux, prefix: str, depth: int):
        """One group row for the auxiliary head (its `aux` node is only a marker)."""
        path = self.graph[item.node].name
        at, first = len(self.rows), len(self.ids)
        self.rows.append(Row("group", path, depth, ()))
        self.visit(item.head, path + ".", depth + 1)
        self.ids.append(item.node)
        self.rows[at] = Row("group", path, depth, tuple(self.ids[first:]))


def notation(node) -> str:
    """conv3-64+relu: the slide notation with the layer's activation."""
    text = slide_notation(node.op, node.attrs)
    act = node.attrs.get("act", "none")
    return f"{text}+{act}" if act != "none" else text


def _number(value: Fraction | int | None) -> int | float | str:
    if value is None:
        return "input"  # the whole input, whose size is a formula (3xHxW)
    return value.numerator if value.denominator == 1 else float(value)  # ints have both too


def _count(value, valid=None) -> str:
    """34,944; or a formula in the input's size names, written with / where that is exact."""
    return f"{value:,}" if isinstance(value, int) else value.format(valid)


def _shape(shape, valid=None) -> str:
    return "x".join(str(d) if isinstance(d, int) else _bracketed(d.format(valid)) for d in shape)


def _bracketed(text: str) -> str:
    return text if text.isidentifier() else f"({text})"


def _sets(network) -> dict:
    return network.strict_sizes if network.strict else network.valid_sizes


def _human(value: float, unit: str = "") -> str:
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if value >= scale:
            return f"{value / scale:.2f} {suffix}{unit}"
    return f"{value:.0f} {unit}".rstrip()


def summary_text(network, depth: int | None = None, width: int | None = None,
                 explain: bool = False) -> str:
    """The table; with `width`, long layer names are shortened from the left (..ck3.conv2) so
    that every row fits in that many columns. With `explain`, each layer's worked arithmetic
    (netdsl.explain) follows its row."""
    graph, stats = network.graph, network.stats
    valid = _sets(network)
    rows = layout_rows(graph, network.layout)
    header = ("layer", "op", "output", "params", "MACs", "rf", "stride")
    table: list[tuple[str, ...]] = []
    explained: dict[int, list[str]] = {}  # table row -> the lines under it
    if explain:
        from .explain import explain_network
        explanations = explain_network(network)
    layers = stats.layers
    params = [layer.params for layer in layers]
    macs = [layer.macs for layer in layers]
    shapes: dict = {}  # shape -> its text: most layers share their shape with a neighbour
    for row in rows:
        if depth is not None and row.depth > depth:
            continue
        indent = "  " * row.depth
        if explain and row.kind == "layer":
            explained[len(table)] = explanations[row.nodes[0]].body(indent + "    ")
        last = layers[row.nodes[-1]] if row.nodes else None
        shape = ""
        if last is not None:
            known = shapes.get(last.shape)
            if known is None:
                known = shapes[last.shape] = _shape(last.shape, valid)
            shape = known
        if row.kind == "group":
            table.append((indent + row.name, "", shape,
                          _count(sum(map(params.__getitem__, row.nodes)), valid),
                          _count(sum(map(macs.__getitem__, row.nodes)), valid),
                          str(_number(last.rf)) if last else "", str(_number(last.stride)) if last else ""))
        else:
            layer = layers[row.nodes[0]]
            table.append((indent + row.name, notation(graph[row.nodes[0]]), shape,
                          _count(layer.params, valid), _count(layer.macs, valid), str(_number(layer.rf)),
                          str(_number(layer.stride))))
    widths = [max(len(title), *map(len, column)) for title, column in zip(header, zip(*table))]
    excess = sum(widths) + 2 * (len(widths) - 1) - width if width else 0
    if excess > 0:
        widths[0] = max(len(header[0]), 12, widths[0] - excess)
        table = [(_shorten(cells[0], widths[0]), *cells[1:]) for cells in table]
    right = {3, 4, 5, 6}
    template = "  ".join(f"{{:{'>' if i in right else '<'}{w}}}" for i, w in enumerate(widths))

    def line(cells) -> str:
        return template.format(*cells).rstrip()

    rule = "-" * len(line(["x" * w for w in widths]))
    out = [f"{network.name} ({network.path}): {_shape(network.input_shape)} -> "
           f"{_shape(network.output_shape, valid)}", "", line(header), rule]
    if explain and network.symbolic:
        out[1:1] = [f"(the arithmetic under each layer is worked at {format_shape(network.example_shape())}, "
                    f"the example size; the table's formulas hold at every valid size)"]
    for at, cells in enumerate(table):
        out.append(line(cells))
        out.extend(explained.get(at, ()))
    out.append(rule)
    if network.symbolic:
        out.extend(_symbolic_totals(network, stats, valid))
        return "\n".join(out) + "\n"
    out.append(f"params       {stats.params:>17,}" + (
        f"   ({stats.aux_params:,} in the auxiliary heads)" if stats.aux_params else ""))
    if stats.buffers:
        out.append(f"buffers      {stats.buffers:>17,}   (BN running statistics, fixed weights)")
    out.append(f"MACs         {stats.macs:>17,}   ({_human(stats.macs)}MAC, {_human(2 * stats.macs)}FLOP)")
    if stats.aux_macs:
        out.append(f"             {'':>17}   (in eval mode; the auxiliary heads add {stats.aux_macs:,} "
                   f"in training)")
    out.append(f"activations  {stats.activations:>17,}   ({stats.activation_bytes / 1e6:.1f} MB in "
               f"float32, one input, forward)")
    return "\n".join(out) + "\n"


def _symbolic_totals(network, stats, valid) -> list[str]:
    """The totals of a net with size names: formulas, and the sizes it takes."""
    out = [f"params       {_count(stats.params, valid)}"]
    for node in network.size_dependent_weights:
        what = ("one embedding per token, and the tokens follow the size"
                if network.graph.node(node).op == "pos_embedding"
                else "its weights follow the size of the tensor it flattens")
        out.append(f"             (depends on the input size from {node}: {what})")
    if stats.buffers:
        out.append(f"buffers      {_count(stats.buffers, valid)}")
    out.append(f"MACs         {_count(stats.macs, valid)}")
    out.append(f"activations  {_count(stats.activations, valid)}")
    out.append("")
    out.extend(size_lines(network))
    return out


def size_lines(network) -> list[str]:
    """'valid sizes: H = 16k + 12, H >= 188' and the exactly fitting ones, per size name."""
    out: list[str] = []
    shown: dict[tuple, str] = {}  # W described as H was: said once, for both names
    for name, sizes in network.valid_sizes.items():
        strict = network.strict_sizes[name]
        key = (sizes.modulus, tuple(sizes.first), tuple(sizes.last), strict.modulus,
               tuple(strict.first), tuple(strict.last))
        if key in shown:
            out[-2] += f" (and the same for {name})" if len(shown) == 1 else ""
            continue
        shown[key] = name
        out.append(f"valid sizes  {sizes.describe()}")
        same = strict.describe() == sizes.describe()
        out.append(f"  fits exactly (--strict): {'the same' if same else strict.describe()}")
    return out


def _shorten(name: str, width: int) -> str:
    """`name` in at most `width` columns, keeping its indent and its last (most telling) part."""
    if len(name) <= width:
        return name
    indent = len(name) - len(name.lstrip(" "))
    keep = max(1, width - indent - 2)
    return name[:indent] + ".." + name[len(name) - keep:]


def summary_dict(network, groups: bool = True) -> dict:
    """The summary as JSON-ready data; `groups=False` leaves out the definition-call groups."""
    graph, stats = network.graph, network.stats
    valid = _sets(network)

    def shape(value) -> list:  # concrete sizes stay ints; formulas are strings
        return [d if isinstance(d, int) else d.format(valid) for d in value]

    def count(value):
        return value if isinstance(value, int) else value.format(valid)

    layers = []
    for node, layer in zip(graph.nodes, stats.layers):
        layers.append({
            "name": node.name, "op": node.op, "notation": slide_notation(node.op, node.attrs),
            "act": node.attrs.get("act", "none"), "shape": shape(layer.shape),
            "params": count(layer.params), "buffers": count(layer.buffers), "macs": count(layer.macs),
            "activations": count(layer.activations), "rf": _number(layer.rf), "stride": _number(layer.stride),
            "inputs": [graph[i].name for i in node.inputs],
        })
    group_rows = []
    for row in layout_rows(graph, network.layout) if groups else ():
        if row.kind == "group":
            members = [stats.layers[i] for i in row.nodes]
            group_rows.append({"name": row.name, "depth": row.depth,
                               "params": count(sum(l.params for l in members)),
                               "macs": count(sum(l.macs for l in members)),
                               "layers": [graph[i].name for i in row.nodes]})
    summary = {
        "schema": SCHEMA_VERSION,
        "network": network.name, "file": network.path, "input": shape(network.input_shape),
        "output": shape(network.output_shape), "params": count(stats.params),
        "buffers": count(stats.buffers), "macs": count(stats.macs),
        "activations": count(stats.activations), "activation_bytes": count(stats.activation_bytes),
        **({"aux_params": count(stats.aux_params), "aux_macs": count(stats.aux_macs)}
           if network.graph.aux_outputs else {}),
        "layers": layers, "groups": group_rows,
        "warnings": [w.render() for w in network.warnings],
    }
    if not groups:
        del summary["groups"]
    if network.symbolic:
        summary["sizes"] = {
            name: {"valid": sizes.describe(), "strict": network.strict_sizes[name].describe(),
                   "smallest": sizes.smallest(), "modulus": sizes.modulus}
            for name, sizes in network.valid_sizes.items()}
        summary["constraints"] = [
            {"layer": graph[node_id].name, "condition": f"{c.expr} {'>=' if c.kind == 'ge' else '=='} 0",
             "strict_only": c.fit, "reason": str(c.reason)}
            for node_id, c in network.conditions]
        summary["size_dependent_weights"] = network.size_dependent_weights
    return summary


#: `summary --json`'s layout version: 2 added "schema", and for nets with size names (3xHxW)
#: formulas as strings, "sizes", "constraints" and "size_dependent_weights".
SCHEMA_VERSION = 2
