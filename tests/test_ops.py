"""Every op has an entry in every per-op table (adding an op touches each table once)."""
import pytest

from netdsl import ops, shapes, stats, weights

TABLES = {
    "shapes.SHAPE_RULES": shapes.SHAPE_RULES,
    "weights.WEIGHT_SHAPES": weights.WEIGHT_SHAPES,
    "stats.MACS": stats.MACS,
    "stats.RECEPTIVE_FIELD": stats.RECEPTIVE_FIELD,
    "stats.COUNTS_ACTIVATION": stats.COUNTS_ACTIVATION,
}


@pytest.mark.parametrize("table", TABLES, ids=list(TABLES))
def test_every_op_is_in_every_table(table):
    assert set(TABLES[table]) == set(ops.OPS)


def test_positional_arguments_name_attributes():
    for spec in ops.OPS.values():
        assert set(spec.positional) <= set(spec.attr_names), spec.name


def test_aliases_name_real_ops_and_attributes():
    for alias, (op, preset) in ops.ALIASES.items():
        assert set(preset) <= set(ops.OPS[op].attr_names), alias
