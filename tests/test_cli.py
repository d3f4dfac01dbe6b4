"""The netdsl command: exit statuses, output, and that the front-end commands never import torch."""
import json
import subprocess
import sys

import pytest

import netdsl

from conftest import NETWORKS
from netdsl.cli import main


def run(capsys, *argv):
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_compile_vgg16_prints_the_summary(capsys):
    status, out, err = run(capsys, "compile", str(NETWORKS / "vgg16.net"))
    assert status == 0 and err == ""
    totals = {line.split()[0]: line.split()[1] for line in out.splitlines()[-3:]}
    assert totals == {"params": "138,357,544", "MACs": "15,470,264,320", "activations": "15,237,608"}
    assert "(61.0 MB in float32" in out
    assert ["block1.conv1", "conv3-64+relu", "64x224x224", "1,792", "86,704,128", "3", "1"] in \
        [line.split() for line in out.splitlines()]


def test_shipped_networks_by_name(capsys):
    status, out, _ = run(capsys, "summary", "vgg16", "--depth", "0")
    assert status == 0 and out.splitlines()[0].startswith("vgg16 (")
    assert "block1.conv1" not in out and "block1 " in out
    status, out, _ = run(capsys, "summary", "vgg:E", "--depth", "0")
    assert "143,667,240" in out


def test_check_every_net_of_every_file(capsys):
    status, out, err = run(capsys, "check", *sorted(str(p) for p in NETWORKS.glob("*.net")))
    # torchvision's SqueezeNet really leaves its last input row unread at 224 (tests/test_zoo.py)
    assert status == 0 and [line for line in err.splitlines() if ": warning: " in line] == [
        f"{NETWORKS / 'squeezenet.net'}:11:21: warning: conv7-96/2 leaves 1 row and 1 column of the "
        "input unused: (224 + 2*0 - 7) is not a multiple of stride 2",
        f"{NETWORKS / 'squeezenet.net'}:17:21: warning: conv3-64/2 leaves 1 row and 1 column of the "
        "input unused: (224 + 2*0 - 3) is not a multiple of stride 2"]
    assert "vgg.net: E: ok, 3x224x224 -> 1000, 143,667,240 params" in out
    assert len(out.splitlines()) == 63


def test_summary_json(capsys):
    status, out, _ = run(capsys, "summary", "resnet50", "--json")
    data = json.loads(out)
    assert status == 0
    assert (data["network"], data["input"], data["output"]) == ("resnet50", [3, 224, 224], [1000])
    assert (data["params"], data["buffers"], data["macs"]) == (25_557_032, 53_120, 4_089_184_256)
    assert data["activations"] > 0
    first = data["layers"][1]
    assert {"name", "op", "shape", "params", "macs", "rf", "stride"} <= set(first)
    assert (first["name"], first["op"], first["shape"], first["rf"], first["stride"]) == \
        ("stem1.cbr1.conv1", "conv", [64, 112, 112], 7, 2)
    assert [g["name"] for g in data["groups"] if g["depth"] == 0] == \
        ["stem1", "stage1", "stage2", "stage3", "stage4", "head1"]


def test_input_override_and_net_option(capsys):
    status, out, _ = run(capsys, "check", str(NETWORKS / "vgg.net"), "--net", "A", "--input", "3x32x32")
    assert status == 0 and "A: ok, 3x32x32 -> 1000" in out


def test_user_error_exit_status_and_format(capsys, tmp_path):
    bad = tmp_path / "bad.net"
    bad.write_text("input 3x32x32\nconv3-64 - pool*6 - fc10\n")
    status, out, err = run(capsys, "check", str(bad))
    assert status == 1 and out == ""
    lines = err.splitlines()
    assert lines[0] == f"{bad}:2:12: error: maxpool2/2 makes the tensor empty: 64x1x1 -> 64x0x0"
    assert lines[1:3] == ["    conv3-64 - pool*6 - fc10", "               ^^^^"]
    assert "note: in repeat iteration 6 of 6" in err
    assert "Traceback" not in err


def test_strict_turns_warnings_into_errors(capsys, tmp_path):
    file = tmp_path / "fit.net"
    file.write_text("input 1x7x7\nconv3-8/3(pad=0) - fc10\n")
    status, _, err = run(capsys, "check", str(file))
    assert status == 0 and "warning: conv3-8/3 leaves" in err
    status, _, err = run(capsys, "check", str(file), "--strict")
    assert status == 1 and "error: conv3-8/3 leaves" in err


def test_missing_file(capsys):
    status, _, err = run(capsys, "summary", "no/such.net")
    assert status == 1 and err.startswith("error: no/such.net: no such file")


def test_command_line_mistakes_exit_1_with_the_commands_usage(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["summary", "vgg16", "--input", "3xx"])
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("usage: netdsl summary ") and "netdsl summary: error: argument --input" in err
    with pytest.raises(SystemExit) as caught:
        main(["compile", "vgg16", "-o", "x.txt"])  # found after parsing
    assert caught.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("usage: netdsl compile ") and "netdsl compile: error: -o x.txt: write .py" in err
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 1
    assert "netdsl: error: the following arguments are required: COMMAND" in capsys.readouterr().err


def test_help_on_every_command(capsys):
    for command in ("check", "summary", "expand", "compile"):
        with pytest.raises(SystemExit) as caught:
            main([command, "--help"])
        assert caught.value.code == 0
        assert "--input" in capsys.readouterr().out


def test_expand_output_checks(capsys, tmp_path):
    status, out, _ = run(capsys, "expand", "lenet5")
    assert status == 0 and "conv(k=5, c=6, stride=1, pad=0" in out and "act=tanh" in out
    (tmp_path / "e.net").write_text(out)
    status, out, _ = run(capsys, "check", str(tmp_path / "e.net"))
    assert status == 0 and "61,706 params" in out


@pytest.mark.parametrize("command", ["check", "summary", "expand", "compile"])
def test_front_end_commands_do_not_import_torch(command):
    code = ("import sys; from netdsl.cli import main; main([%r, 'resnet50']); "
            "sys.exit(3 if 'torch' in sys.modules else 0)" % command)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_console_script_is_installed():
    result = subprocess.run(["netdsl", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == f"netdsl {netdsl.__version__}" == "netdsl 0.3.0"


def test_run_prints_shape_checksum_and_time(capsys):
    status, out, err = run(capsys, "run", "lenet5", "--batch", "4", "--seed", "3", "--backward")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == "lenet5 on numpy (float32), batch 4"
    assert lines[1] == "output    4x10"
    assert lines[2].startswith("checksum  sum ") and "forward" in lines[3] and "backward" in lines[4]
    _, again, _ = run(capsys, "run", "lenet5", "--batch", "4", "--seed", "3")
    assert again.splitlines()[2] == lines[2]  # seeded: the same checksum every time


def test_run_with_a_weights_file(capsys, tmp_path):
    import netdsl
    path = tmp_path / "w.safetensors"
    netdsl.load("mlp:mlp2").compile("numpy", seed=5).save(path)
    status, out, _ = run(capsys, "run", "mlp:mlp2", "--weights", str(path), "--seed", "1")
    assert status == 0
    _, seeded, _ = run(capsys, "run", "mlp:mlp2", "--seed", "5")
    status, _, err = run(capsys, "run", "lenet5", "--weights", str(path))
    assert status == 1 and "w.safetensors: " in err and "Traceback" not in err


def test_run_unknown_backend_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["run", "lenet5", "--backend", "nope"])
    assert caught.value.code == 1 and "installed backends: jax, numpy, torch" in capsys.readouterr().err


# -- hardening (issue 13): every mistake on the command line is one clean line and exit 1 ------------

@pytest.mark.parametrize("argv,message", [
    (["run", "lenet5", "--seed", "-1"], "argument --seed: must be 0 or more, got -1"),
    (["compile", "lenet5", "--seed", "x"], "argument --seed: a seed is a whole number, got 'x'"),
    (["compile", "lenet5", "--head", "0"], "argument --head: must be 1 or more, got 0"),
    (["compile", "lenet5", "--head", "-3"], "argument --head: must be 1 or more, got -3"),
    (["run", "lenet5", "--batch", "0"], "argument --batch: must be 1 or more, got 0"),
    (["check", "lenet5", "--input", "1x1x2000000000"],
     "argument --input: 1x1x2000000000: 2,000,000,000 is over the limit of 1,000,000 for one dimension"),
    (["run", "lenet5", "--batch", "1000000000"],
     "--batch 1,000,000,000: lenet5's largest tensor would hold 4,704,000,000,000 values, over the "
     "limit of 2,147,483,647"),
    (["summary", "lenet5", "--deph", "1"], "unrecognized arguments: --deph 1\ndid you mean --depth?"),
])
def test_bad_options_name_the_option(capsys, argv, message):
    with pytest.raises(SystemExit) as caught:
        main(argv)
    _, err = capsys.readouterr()
    assert caught.value.code == 1
    assert err.endswith(message + "\n") and "Traceback" not in err


def test_outputs_that_cannot_be_written(capsys, tmp_path):
    status, out, err = run(capsys, "compile", "lenet5", "-o", str(tmp_path / "missing" / "m.py"))
    assert (status, out) == (1, "")
    assert err == f"error: cannot write {tmp_path / 'missing' / 'm.py'}: there is no folder " \
                  f"{tmp_path / 'missing'}\n"
    status, _, err = run(capsys, "draw", "lenet5", "-o", str(tmp_path / "missing" / "m.svg"))
    assert status == 1 and err.startswith("error: cannot write") and err.count("\n") == 1
    (tmp_path / "d.npz").mkdir()
    with pytest.raises(SystemExit) as caught:
        main(["compile", "lenet5", "--save-weights", str(tmp_path / "d.npz")])
    assert caught.value.code == 1 and "d.npz is a directory; name a file to write" in capsys.readouterr()[1]


@pytest.mark.skipif(not __import__("os").path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("name", ["m.py", "w.npz", "w.safetensors"])
def test_a_full_disk_is_one_line(capsys, tmp_path, name):
    (tmp_path / name).symlink_to("/dev/full")
    option = "-o" if name.endswith(".py") else "--save-weights"
    status, _, err = run(capsys, "compile", "lenet5", "-q", option, str(tmp_path / name))
    assert status == 1
    assert err.strip().endswith("No space left on device") and err.startswith("error: cannot write")
    assert err.count("\n") == 1


def test_channels_last_input_gets_a_hint(capsys):
    status, out, err = run(capsys, "check", "resnet50", "--input", "224x224x3")
    assert status == 0
    assert err == "warning: inputs are CxHxW: did you mean 3x224x224? (--input 224x224x3 reads as " \
                  "224 channels)\n"
    assert run(capsys, "check", "lenet5", "--input", "64x32x32")[2] == ""  # 64 channels is plausible


def test_quiet_compile_prints_only_what_was_written(capsys, tmp_path):
    status, out, err = run(capsys, "compile", "lenet5", "-q", "-o", str(tmp_path / "m.py"),
                           "-o", str(tmp_path / "w.npz"))
    assert status == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == f"wrote {tmp_path / 'm.py'} ({(tmp_path / 'm.py').stat().st_size:,} bytes)"
    assert lines[1] == f"wrote {tmp_path / 'w.npz'} ({(tmp_path / 'w.npz').stat().st_size:,} bytes)"
    assert lines[2] == ("the weights are random (seed 0); start from trained ones with --weights "
                        "or --torchvision")
    assert len(lines) == 3


def test_summary_fits_100_columns_and_json_honours_depth(capsys):
    status, out, _ = run(capsys, "summary", "resnet:resnet152")
    assert status == 0 and max(len(line) for line in out.splitlines()) <= 100
    assert "      .._down1.add1.b1.cbr1.conv1  conv1-64  " in out  # shortened from the left
    _, out, _ = run(capsys, "summary", "resnet50", "--json", "--depth", "1")
    summary = json.loads(out)
    assert summary["depth"] == 1 and {g["depth"] for g in summary["groups"]} == {0, 1}
    assert all(layer["name"].count(".") <= 1 for layer in summary["layers"])
    _, out, _ = run(capsys, "summary", "resnet50", "--json")
    assert len(json.loads(out)["layers"]) > len(summary["layers"])


@pytest.mark.parametrize("argv", [["run", "lenet5", "--backend", "torch"],
                                  ["compile", "lenet5", "-o", "x.onnx"]])
def test_missing_torch_says_what_to_install(argv, tmp_path):
    blocked = "import sys; sys.modules['torch'] = None; from netdsl.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run([sys.executable, "-c", blocked, *argv], capture_output=True, text=True,
                            cwd=tmp_path, timeout=120)
    assert result.returncode == 1, result.stderr
    assert result.stderr.splitlines()[-1] == "error: this needs torch: pip install 'netdsl[torch]'"


# -- every CLI path through the backend contract, with each built-in backend ----------------------

BUILT_IN = ["numpy", "torch", "jax"]


def _needs(backend):
    if backend != "numpy":
        pytest.importorskip(backend)


@pytest.mark.parametrize("backend", BUILT_IN)
def test_run_with_each_backend_gives_the_same_output(capsys, backend, tmp_path):
    """`netdsl run lenet5 --backend torch` once exited 70: the CLI fed NumPy to a torch module."""
    _needs(backend)
    weights = tmp_path / "w.safetensors"
    netdsl.load("lenet5").compile("numpy", dtype="float64", seed=4).save_weights(weights)
    status, out, err = run(capsys, "run", "lenet5", "--backend", backend, "--dtype", "float64",
                           "--batch", "3", "--weights", str(weights), "--backward")
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0] == f"lenet5 on {backend} (float64), batch 3"
    assert lines[1] == "output    3x10"
    assert "forward+backward" in lines[-1]
    reference = netdsl.load("lenet5").compile("numpy", dtype="float64", weights=str(weights)).eval()
    x = __import__("numpy").random.default_rng(0).standard_normal((3, 1, 32, 32))
    assert lines[2] == (f"checksum  sum {float(reference.run(x).sum()):.6e}, "
                        f"mean |y| {float(abs(reference.run(x)).mean()):.6e}")


@pytest.mark.parametrize("backend,suffixes", [("numpy", [".safetensors", ".npz"]),
                                              ("jax", [".safetensors", ".npz"]),
                                              ("torch", [".py", ".onnx", ".safetensors", ".npz"])])
def test_compile_writes_each_suffix_of_each_backend(capsys, tmp_path, backend, suffixes):
    _needs(backend)
    outputs = [tmp_path / f"out{suffix}" for suffix in suffixes]
    argv = ["compile", "lenet5", "-q", "--backend", backend, "--seed", "2"]
    for out in outputs:
        argv += ["-o", str(out)]
    status, out, err = run(capsys, *argv)
    assert status == 0, err
    assert [line.split(" (")[0] for line in out.splitlines()[:len(outputs)]] == [f"wrote {o}" for o in outputs]
    from netdsl.weights_io import read_weights
    expected = netdsl.load("lenet5").compile(backend, seed=2).weights
    for out_file in outputs:
        if out_file.suffix in (".safetensors", ".npz"):
            saved = read_weights(out_file)
            assert set(saved) == set(expected)
            assert __import__("numpy").allclose(saved["conv1.weight"], __import__("numpy").asarray(expected["conv1.weight"]))


def test_compile_refuses_a_suffix_the_backend_does_not_write(capsys, tmp_path):
    with pytest.raises(SystemExit) as caught:
        main(["compile", "lenet5", "--backend", "numpy", "-o", str(tmp_path / "m.py")])
    assert caught.value.code == 1
    assert "the numpy backend writes .safetensors, .npz (.py and .onnx come from --backend torch)" \
        in capsys.readouterr().err


@pytest.mark.parametrize("backend", BUILT_IN)
def test_fine_tuning_from_the_command_line_with_each_backend(capsys, tmp_path, backend):
    _needs(backend)
    weights = tmp_path / "w.npz"
    netdsl.load("lenet5").compile("numpy", seed=1).save_weights(weights)
    status, out, err = run(capsys, "compile", "lenet5", "--backend", backend, "--weights", str(weights),
                           "--head", "3", "--freeze", "conv2", "--save-weights", str(tmp_path / "ft.npz"))
    assert status == 0, err
    # lenet5: conv1 156 + conv2 2,416 frozen; conv3 48,120 + fc1 10,164 + the head fc2, now 84*3+3
    assert f"trainable    {58_539:>17,}\nfrozen       {2_572:>17,}\n" in out
    from netdsl.weights_io import read_weights
    saved, given = read_weights(tmp_path / "ft.npz"), read_weights(weights)
    assert saved["fc2.weight"].shape == (3, 84)
    assert __import__("numpy").allclose(saved["conv2.weight"], given["conv2.weight"])
