"""Every distinct diagnostic, rendered exactly (golden files in tests/golden/errors/).

Regenerate after an intended change with NETDSL_UPDATE_GOLDEN=1 and review the diff.
"""
import pytest

import netdsl
from conftest import GOLDEN, check_golden
from netdsl import Limits

# (name, source, keyword arguments of netdsl.parse)
CASES = [
    # syntax
    ("syntax_unexpected_token", "conv3-64 - - pool", {}),
    ("syntax_unexpected_end", "conv3-64 - (relu", {}),
    ("syntax_unexpected_character", "conv3-64 - relu $ pool", {}),
    ("syntax_brace_outside_layer", "conv3-64 - {4*c}", {}),
    ("syntax_empty_braces", "conv1-{} - relu", {}),
    ("syntax_incomplete_braces", "def f(c) = conv1-{4*} - relu\nf(2)", {}),
    ("syntax_fc_stride", "fc10/2", {}),
    ("syntax_net_setting_twice", "net a input 3 input 4 = fc10", {}),
    ("syntax_input_twice", "input 3x8x8\ninput 3x8x8\nrelu", {}),
    ("syntax_activation_twice", "activation relu\nactivation tanh\nrelu", {}),
    ("syntax_two_unnamed", "conv3-8\n\nconv3-8", {}),
    ("syntax_named_and_unnamed", "net a = conv3-8\nconv3-8", {}),
    ("name_def_twice", "def a = relu\ndef a = tanh\na", {}),
    ("name_net_twice", "net a = relu\nnet a = tanh", {}),
    # names, definitions, arguments
    ("name_unknown_op", "conv3-64 - reul - fc10", {}),
    ("name_conv_without_channels", "conv3 - fc10", {}),
    ("name_unknown_label", "p3: conv3-8 - add{ id | @p4 }", {}),
    ("name_label_reserved", "relu: conv3-8", {}),
    ("name_used_twice", "(x: conv3-8)*2", {}),
    ("name_unknown_activation", "activation swish\nconv3-8", {}),
    ("name_id_arguments", "id(2)", {}),
    ("name_repeat_not_integer", "def f(n) = relu*n\nf(1.5)", {}),
    ("name_repeat_negative", "def f(n) = relu*n\nf(-1)", {}),
    ("name_merge_one_branch", "add{ conv3-8 }", {}),
    ("name_recursion", "def block(c) = conv3-c - block(c)\nblock(8)", {}),
    ("syntax_arguments_twice", "def block(c) = conv3-c\nconv3-8 - block(8)(pad=1)", {}),
    ("name_too_many_def_args", "def block(c) = conv3-c\nblock(8, 16)", {}),
    ("name_unknown_def_param", "def block(c) = conv3-c\nblock(8, k=3)", {}),
    ("name_def_arg_twice", "def block(c) = conv3-c\nblock(8, c=16)", {}),
    ("name_def_missing_arg", "def block(c, n) = conv3-c*n\nblock(8)", {}),
    ("name_def_reference_arg", "def block(c) = conv3-c\nx: relu - block(@x)", {}),
    ("name_not_a_layer", "conv3-8 - add", {}),
    ("name_op_arg_twice", "conv3-8/2(stride=2)", {}),
    ("name_op_unknown_arg", "conv3-8(padding=1)", {}),
    ("name_op_too_many_positional", "dropout(0.5, 0.2)", {}),
    ("name_op_missing_arg", "conv(k=3)", {}),
    ("name_op_needs_reference", "crop(0, like=3)", {}),
    ("name_op_reference_for_value", "x: relu - conv3-8(stride=@x)", {}),
    ("name_op_bool", "conv3-8(bias=1)", {}),
    ("name_op_symbol", "deconv4-8/2(init=kaiming)", {}),
    ("name_op_unknown_name_value", "conv3-c", {}),
    ("name_op_whole_number", "conv3-8(stride=1.5)", {}),
    ("name_op_number", "dropout(p=true)", {}),
    ("name_op_minimum", "conv3-8(groups=0)", {}),
    ("name_op_maximum", "dropout(1.5)", {}),
    ("name_division_by_zero", "def f(c) = conv1-{c // 0}\nf(4)", {}),
    ("name_true_division_by_zero", "def f(n) = dropout(0.2*n/(n - 4))\nf(4)", {}),
    ("name_true_division_not_whole", "conv(k=3, c=8, stride=4/2)", {}),
    ("name_repeat_index_hides_parameter", "def f(c, i) = conv3-c*2 for i\nf(8, 1)", {}),
    ("name_arithmetic_unknown", "def f(c) = conv1-{c * d}\nf(4)", {}),
    ("name_arithmetic_bool", "def f(c) = conv1-{c * 2}\nf(true)", {}),
    ("name_error_inside_call_and_repeat", "def block(c) = conv3-c - reul\nconv3-8 - block(16)*2", {}),
    # use
    ("use_absolute", 'use "/etc/passwd.net"\nrelu', {}),
    ("use_parent", 'use "../secret.net"\nrelu', {}),
    ("use_not_net", 'use "notes.txt"\nrelu', {}),
    ("use_missing", 'use "nowhere.net"\nrelu', {}),
    ("use_too_many", 'use "resnet.net"\nrelu', {"limits": Limits(max_uses=0)}),
    # net selection and input
    ("select_no_such_net", "net a = relu", {"net": "b"}),
    ("select_definitions_only", "def a = relu", {}),
    ("select_several", "net a = relu\nnet b = relu", {}),
    ("input_missing", "conv3-8", {"input": None}),
    ("input_rank", "input 3x8\nconv3-8", {"input": None}),
    ("input_zero", "input 3x0x8\nconv3-8", {"input": None}),
    # shapes
    ("shape_empty", "input 3x32x32\ndef block(n, c) = (conv3-c)*n - pool\n"
                    "block(2, 64) - block(2, 128) - block(3, 256) - block(3, 512)*2 - pool", {"input": None}),
    ("shape_flat_conv", "fc100 - conv3-8", {}),
    ("shape_groups_in", "conv3-6 - conv3-8(groups=4)", {}),
    ("shape_groups_out", "conv3-8(groups=3)", {}),
    ("shape_output_pad", "deconv4-8/2(output_pad=2)", {}),
    ("shape_pool_pad", "maxpool3/2(pad=2)", {}),
    ("shape_crop", "x: pool - conv3-8 - crop(4, like=@x)", {"input": "3x8x8"}),
    ("shape_add_mismatch", "conv3-8 - add{ conv3-8/2 | id }", {}),
    ("shape_cat_mismatch", "conv3-8 - cat{ pool | id }", {}),
    ("shape_lrn_flat", "fc10 - lrn", {}),
    ("shape_doesnt_fit_strict", "conv3-8/3(pad=0)", {"input": "1x7x7", "strict": True}),
    # limits
    ("limit_source", "relu - relu - relu", {"limits": Limits(max_source_chars=10)}),
    ("limit_nesting", "((((relu))))", {"limits": Limits(max_nesting=3)}),
    ("limit_call_depth", "def a = relu\ndef b = a\ndef c = b\nc", {"limits": Limits(max_call_depth=2)}),
    ("limit_repeat", "relu*100", {"limits": Limits(max_repeat=10)}),
    ("limit_nodes", "conv3-8*10 - relu", {"limits": Limits(max_nodes=5)}),
    ("limit_steps", "(id*0)*100", {"limits": Limits(max_expansion_steps=50)}),
    ("limit_dimension", "conv3-2000000", {}),
    ("limit_tensor", "conv3-1000000 - conv3-1000000", {}),
    ("limit_weights", "fc1000000 - fc100000", {"input": "8"}),
    ("limit_number", "def f(c) = conv1-{c*c*c*c*c*c*c*c}\nf(1000)", {}),
    ("limit_literal_digits", "conv3-" + "9" * 5000, {}),
    ("limit_depth", "def a = ((((relu))))\ndef b = ((((a))))\nb", {"limits": Limits(max_depth=6)}),
    ("number_infinite_literal", "bn(eps=1e999)", {}),
    ("number_nan", "dropout(p=1e308*10-1e308*10)", {}),
    # typos get a did-you-mean
    ("typo_slide_letters", "conv3-8 - cnov3-64", {}),
    ("typo_slide_case", "Conv3-64", {}),
    ("typo_slide_square_kernel", "deconv3x3-64", {}),
    ("typo_slide_rectangular_kernel", "deconv1x7-8", {}),
    ("typo_slide_three_sided_kernel", "conv1x7x7-8", {}),
    ("name_conv_kernel_width_only", "conv(kw=7, c=8)", {}),
    ("name_conv_kernel_overridden_on_both_axes", "conv1x7-8(k=3)", {}),
    ("name_unknown_non_square_without_channels", "conv1x7 - relu", {}),
    ("typo_dwconv_with_channels", "dwconv3-64", {}),
    ("typo_slide_pool", "maxpol2/2", {}),
    ("typo_op_case", "conv3-8 - Relu", {}),
    ("typo_definition", "def block(c) = conv3-c\nbolck(8)", {}),
    ("typo_label", "s1: conv3-8 - add{ id | @s2 }", {}),
    ("typo_merge_word", "conv3-8 - mull{ id | relu }", {}),
    ("typo_merge_arguments", "conv3-8 - cat{ id | relu }(groups=2)", {}),
    ("typo_net_name", "net stage = relu", {"net": "stag"}),
    # hostile text is shown, not obeyed: clipped and with control characters escaped
    ("excerpt_long_line", "relu - " + "x" * 1_000_000 + " - relu", {}),
    ("excerpt_terminal_escape", "relu - \x1b]0;pwned\x07\x1b[2J", {}),
    ("excerpt_crlf_and_bom", "\ufeffconv3-8 -\r\n\r\nreul\r\n", {}),
    ("excerpt_cr_only", "conv3-8 -\r\rreul\r", {}),
]

WARNINGS = [
    ("warning_doesnt_fit", "conv3-8/3(pad=0) - fc10", {"input": "1x7x7"}),
    ("warning_doesnt_fit_rows", "maxpool3/2 - fc10", {"input": "1x8x9"}),
]


def _render(text: str, kwargs: dict) -> str:
    kwargs = {"input": "3x16x16", **kwargs}
    try:
        net = netdsl.parse(text, path="case.net", **kwargs)
    except netdsl.NetDSLError as error:
        assert isinstance(error.line, int) or error.span is None
        return "\n".join([w.render() for w in error.warnings] + [str(error)]) + "\n"
    return "\n".join(w.render() for w in net.warnings) + "\n"


@pytest.mark.parametrize("name,text,kwargs", CASES, ids=[c[0] for c in CASES])
def test_error_message(name, text, kwargs):
    rendered = _render(text, kwargs)
    assert "error:" in rendered
    check_golden(GOLDEN / "errors" / f"{name}.txt", rendered)


@pytest.mark.parametrize("name,text,kwargs", WARNINGS, ids=[c[0] for c in WARNINGS])
def test_warning_message(name, text, kwargs):
    rendered = _render(text, kwargs)
    assert "warning:" in rendered and "error:" not in rendered
    check_golden(GOLDEN / "errors" / f"{name}.txt", rendered)


def test_every_golden_file_has_a_case():
    names = {c[0] for c in CASES + WARNINGS}
    files = {p.stem for p in (GOLDEN / "errors").glob("*.txt")}
    assert files == names


def test_errors_carry_their_span():
    with pytest.raises(netdsl.NetDSLShapeError) as caught:
        netdsl.parse("fc100 - conv3-8", input="8")
    error = caught.value
    assert (error.line, error.column, error.span.text) == (1, 9, "conv3-8")
    assert isinstance(error, netdsl.NetDSLError)
