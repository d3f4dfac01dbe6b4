"""The shipped zoo against torchvision itself: writes docs/zoo.md. Run in the torchvision
environment (.ci/torchvision-env; torchvision does not import beside the main environment's torch):

    "$(bash .ci/torchvision-env | tail -n 1)/bin/python" benchmarks/zoo_table.py -o docs/zoo.md
    ... benchmarks/zoo_table.py --keep docs/zoo.md -o docs/zoo.md    # compare only the models missing

(--keep FILE takes the rows of models already in FILE as they are, and compares the others and
those named on the command line: the whole zoo in float64 takes the better part of an hour on
two cores. tests/test_zoo_torchvision.py compares every model again in CI's heavy tier.)

For every torchvision model that a shipped network reproduces (backends/torchvision_weights.py
ARCHITECTURES), with torchvision's random initialisation (no weights are downloaded):
- params: netdsl's count, and torchvision's meta["num_params"] of the DEFAULT weights;
- MACs at the net's input size (the DEFAULT weights' crop size): netdsl's, counted on the built
  torchvision model by forward hooks on every Conv2d (output elements * in_channels/groups * kh * kw)
  and Linear (in * out), and on MultiheadAttention from its input's shape (4*T*D*D projections +
  2*T*T*D products), and
  meta["_ops"] (torchvision's "GFLOPS", which are these MACs in billions, rounded to 3 decimals);
- outputs: `netdsl.import_torchvision` of the torchvision state_dict with every tensor distinct
  and random (batch-norm statistics too, measured and then moved, variances positive), then both
  in eval mode in float64 on two different inputs: the largest difference relative to the largest
  output, and how far apart the two inputs' outputs are.
tests/test_zoo_torchvision.py asserts the same comparisons (compare() below) for every model.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import torch
import torchvision
from torchvision.models import get_model, get_model_weights

import netdsl

#: (family file, torchvision model), in the order of docs/zoo.md
ZOO = [
    ("alexnet", "alexnet"),
    *[("vgg", f"vgg{n}{bn}") for bn in ("", "_bn") for n in (11, 13, 16, 19)],
    *[("resnet", f"resnet{n}") for n in (18, 34, 50, 101, 152)],
    *[("resnet", name) for name in ("resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
                                    "wide_resnet50_2", "wide_resnet101_2")],
    ("googlenet", "googlenet"),
    *[("densenet", f"densenet{n}") for n in (121, 161, 169, 201)],
    ("squeezenet", "squeezenet1_0"), ("squeezenet", "squeezenet1_1"),
    *[("mnasnet", f"mnasnet{w}") for w in ("0_5", "0_75", "1_0", "1_3")],
    *[("shufflenet", f"shufflenet_v2_{w}") for w in ("x0_5", "x1_0", "x1_5", "x2_0")],
    *[("regnet", f"regnet_{xy}_{size}") for xy in ("y", "x")
      for size in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf")],
    *[("convnext", f"convnext_{size}") for size in ("tiny", "small", "base", "large")],
    ("inception", "inception_v3"),
    *[("mobilenet", name) for name in ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small")],
    *[("efficientnet", f"efficientnet_{v}")
      for v in ("b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7", "v2_s", "v2_m", "v2_l")],
    *[("vit", name) for name in ("vit_b_16", "vit_b_32", "vit_l_16")],
    ("deeplabv3", "deeplabv3_resnet50"),
]
#: torchvision's keyword arguments: googlenet and inception_v3 with their auxiliary classifiers (as
#: netdsl ships them, aux{ } outputs), without the input re-normalisation, initialised without
#: scipy's help
#: models whose meta["num_params"] leaves the auxiliary classifiers out (inception_v3's counts them)
META_WITHOUT_AUX = {"googlenet"}
MODEL_KWARGS = {"googlenet": {"aux_logits": True, "transform_input": False, "init_weights": True},
                # with its auxiliary classifier, as torchvision's figure counts it and netdsl ships it
                "inception_v3": {"aux_logits": True, "transform_input": False, "init_weights": True}}
# with its auxiliary FCN head (as the DEFAULT weights and meta["num_params"] have it), and no
# ImageNet backbone weights to download
MODEL_KWARGS["deeplabv3_resnet50"] = {"aux_loss": True, "weights_backbone": None}
#: models whose torchvision forward runs the auxiliary head in eval mode too (DeepLabV3 returns
#: {"out", "aux"}), so that the hooks and meta["_ops"] count its MACs; netdsl's eval forward does
#: not run an aux{ } head, and reports its MACs apart (stats.aux_macs)
META_MACS_WITH_AUX = {"deeplabv3_resnet50"}
#: outputs agree when the largest difference is within this fraction of the largest output
TOLERANCE = 1e-9
#: two inputs give different outputs when they differ by more than this fraction of the largest
DISTINGUISHED = 1e-3


@dataclass
class Comparison:
    arch: str
    network: str  # FILE:NET of the net the bare name `arch` finds (docs/language.md section 8)
    params: int
    torchvision_params: int  # counted on the built model
    meta_params: int
    macs: int
    torchvision_macs: int  # counted by hooks on the built model
    meta_gflops: float
    relative_error: float
    input_difference: float  # between the outputs of the two inputs, relative to the largest
    aux_params: int = 0  # of the auxiliary heads, when meta["num_params"] leaves them out (googlenet)
    aux_macs: int = 0  # of the auxiliary heads, when torchvision's eval forward runs them (deeplabv3)

    @property
    def inputs_distinguished(self) -> bool:
        return self.input_difference > DISTINGUISHED

    @property
    def exact(self) -> bool:
        return (self.params == self.torchvision_params == self.meta_params + self.aux_params
                and self.macs + self.aux_macs == self.torchvision_macs
                and round((self.macs + self.aux_macs) / 1e9, 3) == self.meta_gflops
                and self.relative_error <= TOLERANCE and self.inputs_distinguished)


def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every state_dict tensor distinct and random: torchvision's initialisation keeps the
    multi-dimensional weights (random, scaled so the signal survives a deep net), and the constant
    ones (batch-norm and layer-norm scales, shifts and statistics, zero biases, ConvNeXt's layer
    scales of C x 1 x 1 all at 1e-6) are redrawn, variances and scales in [0.5, 1.5), the rest in
    [-0.1, 0.1): constants would hide two swapped tensors."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if not value.is_floating_point() or (value.dim() > 1 and not _constant(value)):
                continue
            scales = ("running_var", "weight", "layer_scale")
            low, high = (0.5, 1.5) if name.endswith(scales) else (-0.1, 0.1)
            value.copy_(torch.rand(value.shape, generator=generator, dtype=value.dtype)
                        * (high - low) + low)
    return model


def _constant(value: torch.Tensor) -> bool:
    return bool((value == value.flatten()[0]).all())


def calibrated(model: torch.nn.Module, seed: int = 0, size: int = 224) -> torch.nn.Module:
    """Batch-norm statistics measured on random size x size inputs (in training mode, so an
    auxiliary head runs too), then each moved by its own random amount:
    statistics drawn blind would shrink or blow up the signal over fifty layers until every input
    gives the same output, and then the outputs would not show a misplaced tensor."""
    generator = torch.Generator().manual_seed(seed + 1)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average over the batches seen
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, size, size, generator=generator))
        for norm in norms:
            scale = torch.rand(norm.running_var.shape, generator=generator) * 0.2 + 0.9
            shift = (torch.rand(norm.running_mean.shape, generator=generator) - 0.5) * 0.2
            norm.running_mean.add_(shift * norm.running_var.sqrt())
            norm.running_var.mul_(scale)
    return model.eval()


def assert_distinct(state_dict: dict) -> None:
    """No tensor is constant and no two tensors are equal: a swap would show in the outputs."""
    seen: dict = {}
    for name, value in state_dict.items():
        if not value.is_floating_point():
            continue
        assert value.numel() == 1 or bool((value != value.flatten()[0]).any()), f"{name} is constant"
        for other in seen.get(tuple(value.shape), []):
            assert not torch.equal(value, state_dict[other]), f"{name} equals {other}"
        seen.setdefault(tuple(value.shape), []).append(name)


def forward_counting_macs(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(output, MACs per sample) of Conv2d and Linear, counted on the tensors they produce, and of
    MultiheadAttention: it calls F.multi_head_attention_forward with its projections' weights, so
    no Linear hook sees them; from the query it is given (N, T, D, batch first), it counts the
    Q, K, V and output projections (4*T*D*D) and the two T x T products (2*T*T*D)."""
    counted = [0]
    batch = x.shape[0]

    def attention(module, inputs, output):
        assert module.batch_first and module._qkv_same_embed_dim
        _, t, d = inputs[0].shape
        counted[0] += 4 * t * d * d + 2 * t * t * d

    def conv(module, inputs, output):
        kh, kw = module.kernel_size
        counted[0] += output.numel() // batch * (module.in_channels // module.groups) * kh * kw

    def linear(module, inputs, output):
        counted[0] += output.numel() // batch * module.in_features

    hooks = [m.register_forward_hook(conv if isinstance(m, torch.nn.Conv2d) else linear)
             for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    hooks += [m.register_forward_hook(attention) for m in model.modules()
              if isinstance(m, torch.nn.MultiheadAttention)]
    try:
        with torch.no_grad():
            output = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return output, counted[0]


def main_output(output):
    """The output netdsl's eval forward gives: a segmentation model's "out" (torchvision's
    segmentation models return a dict, {"out": scores, "aux": the auxiliary head's})."""
    return output["out"] if isinstance(output, dict) else output


def _file_and_net(name: str) -> str:
    from pathlib import Path

    from netdsl.network import resolve_path
    path, net = resolve_path(name)
    return f"{Path(path).stem}:{net}" if net else Path(path).stem


def compare(arch: str, batch: int = 2, seed: int = 0) -> Comparison:
    """Build torchvision's `arch` once and compare it with the shipped network of the same name."""
    torch.manual_seed(seed)
    reference = get_model(arch, weights=None, **MODEL_KWARGS.get(arch, {}))
    size = netdsl.load(arch).input_shape[-1]  # the net's own: Inception-v3's auxiliary head needs 299
    reference = calibrated(randomised(reference, seed), seed, size).double().eval()
    state_dict = reference.state_dict()
    assert_distinct(state_dict)
    meta = get_model_weights(arch).DEFAULT.meta
    network, weights = netdsl.import_torchvision(state_dict, arch)  # onto ARCHITECTURES[arch]
    by_name = netdsl.load(arch)  # the bare name: the same network (vgg:vgg11 beside vgg:A)
    assert [w.shape for w in by_name.weight_specs] == [w.shape for w in network.weight_specs]
    model = network.compile("torch", dtype="float64", weights=weights).eval()
    x = torch.randn(batch, *network.input_shape, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(seed))
    expected, torchvision_macs = forward_counting_macs(reference, x)
    expected = main_output(expected)
    with torch.no_grad():
        got = model(x)
    scale = float(expected.abs().max())
    return Comparison(
        arch=arch, network=_file_and_net(arch), params=by_name.params,
        torchvision_params=sum(p.numel() for p in reference.parameters()),
        meta_params=meta["num_params"], macs=by_name.macs, torchvision_macs=torchvision_macs,
        meta_gflops=meta["_ops"], relative_error=float((got - expected).abs().max()) / scale,
        input_difference=float((got[0] - got[1]).abs().max()) / scale,
        aux_params=by_name.stats.aux_params if arch in META_WITHOUT_AUX else 0,
        aux_macs=by_name.stats.aux_macs if arch in META_MACS_WITH_AUX else 0)


def table(rows: list[tuple[str, Comparison]]) -> str:
    lines = [
        "# The zoo: torchvision's models in netdsl",
        "",
        "Written by `benchmarks/zoo_table.py` in the torchvision environment (torch "
        f"{torch.__version__.split('+')[0]}, torchvision {torchvision.__version__.split('+')[0]}); "
        "do not edit by hand. Every",
        "model is built by torchvision with random weights (nothing is downloaded) and compared with",
        "the shipped network of the same name: `netdsl summary resnext101_32x8d` finds it.",
        "",
        "- **params**: netdsl's count; torchvision's is counted on the built model and given by",
        "  `get_model_weights(name).DEFAULT.meta[\"num_params\"]` (shown when it differs: never).",
        "- **MACs** at the net's input size (the crop size of the DEFAULT weights' transforms: 224, and",
        "  240-600 for EfficientNet, 384-480 for EfficientNet-v2, 299 for Inception-v3; DeepLabv3's",
        "  resize size, 520): netdsl's;",
        "  torchvision's counted exactly on the built model by forward hooks on Conv2d (output",
        "  elements x in_channels/groups x kh x kw), Linear (in x out) and MultiheadAttention (4 x T x",
        "  D x D projections + 2 x T x T x D products, from its input's shape: its projections are not",
        "  Linear calls); **GFLOPS** is `meta[\"_ops\"]`, the same MACs in billions to 3 decimals.",
        "- **outputs**: the torchvision state_dict with every tensor distinct and random (batch-norm",
        "  statistics too) imported by `netdsl.import_torchvision`, both models in eval mode in",
        "  float64 on two different inputs: the largest difference between netdsl's and",
        f"  torchvision's outputs relative to the largest output (at most {TOLERANCE:g}), and between",
        f"  the outputs of the two inputs (more than {DISTINGUISHED:g}: the outputs depend on the input).",
        "  Batch-norm statistics are measured on random inputs and then moved by a random amount",
        "  each, so that the signal neither dies nor explodes over the depth of the network.",
        "",
        "| family | model | netdsl net | params | MACs | torchvision MACs | GFLOPS | outputs | exact |",
        "|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for family, c in rows:
        if isinstance(c, str):  # a row kept from an earlier table
            lines.append(c)
            continue
        if c.aux_params and c.params == c.torchvision_params == c.meta_params + c.aux_params:
            params = f"{c.params:,} ({c.meta_params:,} without the auxiliary heads, as meta)"
        else:
            params = f"{c.params:,}" + ("" if c.params == c.torchvision_params == c.meta_params
                                        else f" (torchvision {c.torchvision_params:,}, meta {c.meta_params:,})")
        outputs = f"{c.relative_error:.1e} apart; inputs {c.input_difference:.2f} apart"
        macs = f"{c.macs:,}" + (f" ({c.macs + c.aux_macs:,} with the auxiliary head, as torchvision runs it)"
                                if c.aux_macs else "")
        lines.append(f"| {family} | {c.arch} | `{c.network}` | {params} | {macs} | "
                     f"{c.torchvision_macs:,} | {c.meta_gflops:.3f} | {outputs} | "
                     f"{'yes' if c.exact else '**no**'} |")
    exact = sum(c.endswith("| yes |") if isinstance(c, str) else c.exact for _, c in rows)
    lines += ["", f"{exact} of {len(rows)} models exact.", "",
              "Names: see [the naming rule](language.md#8-several-nets-several-files). GoogLeNet and "
              "Inception-v3 have their",
              "auxiliary classifiers, as `aux{ }` outputs (torchvision's defaults, `aux_logits=True`; "
              "meta[\"num_params\"] leaves",
              "GoogLeNet's out and counts Inception-v3's); their outputs in training mode are compared "
              "in",
              "tests/test_zoo_torchvision.py. Both models' pretrained weights expect torchvision's "
              "`transform_input`",
              "re-normalisation, which is not a layer here: importing them warns and says what to feed "
              "instead.",
              "DeepLabv3's FCN head on layer3 is an `aux{ }` output too, but torchvision runs it in eval "
              "mode as well",
              "(its forward returns `{\"out\", \"aux\"}`), so its MACs and GFLOPS include the head's; "
              "netdsl's eval forward",
              "does not run it: the MACs column gives both. Its outputs compare torchvision's \"out\", "
              "and in training mode",
              "the auxiliary head's too (tests/test_zoo_torchvision.py).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", help="write the Markdown table here (default: stdout)")
    parser.add_argument("--keep", metavar="FILE",
                        help="keep the rows of FILE (an earlier docs/zoo.md) for the models not named")
    parser.add_argument("models", nargs="*", help="only these torchvision models (with --keep: "
                                                  "compare these again, keep the others)")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    kept: dict[str, str] = {}
    if args.keep:
        with open(args.keep, encoding="utf-8") as earlier:
            for line in earlier:
                cells = [cell.strip() for cell in line.split("|")]
                if len(cells) > 3 and any(cells[2] == arch for _, arch in ZOO):
                    kept[cells[2]] = line.rstrip("\n")
    rows: list = []
    for family, arch in ZOO:
        if args.keep and arch in kept and arch not in args.models:
            rows.append((family, kept[arch]))
            continue
        if args.models and not args.keep and arch not in args.models:
            continue
        rows.append((family, compare(arch)))
        print(f"{arch}: {'exact' if rows[-1][1].exact else 'DIFFERS'}", file=sys.stderr)
    text = table(rows)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        print(text, end="")
    return 0 if all(c.endswith("| yes |") if isinstance(c, str) else c.exact for _, c in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
