"""Names a label cannot take, because labels become Python attributes of the torch module.

Every label names a layer or a scope, and the torch backend makes it an attribute of its block's
nn.Module (`self.p3 = ...`). A label equal to a Python keyword, to an nn.Module attribute
(`training`, `forward`, `to`) or to the backend contract on the root module (`weights`, `run`),
or starting with an underscore (nn.Module's internals, Python's name mangling of `__x`), would
break the module or silently rename a weight. The checker refuses them, naming an alternative.
This list is plain text so that the front end needs no torch; a test compares it with
`dir(torch.nn.Module)`.
"""
from __future__ import annotations

import keyword

NN_MODULE_ATTRIBUTES = frozenset({
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children",
    "compile", "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward",
    "get_buffer", "get_extra_state", "get_parameter", "get_submodule", "half", "ipu",
    "load_state_dict", "modules", "mtia", "named_buffers", "named_children", "named_modules",
    "named_parameters", "parameters", "register_backward_hook", "register_buffer",
    "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
    "register_full_backward_pre_hook", "register_load_state_dict_post_hook",
    "register_load_state_dict_pre_hook", "register_module", "register_parameter",
    "register_state_dict_post_hook", "register_state_dict_pre_hook", "requires_grad_",
    "set_extra_state", "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train",
    "training", "type", "xpu", "zero_grad",
})

#: The backend contract's names on a compiled module (netdsl/backend.py) and the torch root's extras.
CONTRACT_ATTRIBUTES = frozenset({"network", "run", "weights", "load_weights", "save_weights", "freeze",
                                 "trainable", "gradients", "backward", "grads", "source", "trace"})


def label_problem(label: str) -> str | None:
    """Why `label` cannot be a label, or None."""
    if label.startswith("_"):
        return f"a label cannot start with an underscore ({label})"
    if keyword.iskeyword(label) or keyword.issoftkeyword(label):
        return f"{label} is a Python keyword and cannot be a label"
    if label in NN_MODULE_ATTRIBUTES:
        return f"{label} is an nn.Module attribute and cannot be a label"
    if label in CONTRACT_ATTRIBUTES:
        return f"{label} is a compiled module's attribute and cannot be a label"
    return None


def suggested_label(label: str) -> str:
    """A label close to `label` that is allowed: `training` -> `training_`, `_x` -> `x`."""
    stripped = label.lstrip("_") or "layer"
    candidate = stripped if stripped != label else label + "_"
    while label_problem(candidate):
        candidate += "_"
    return candidate
