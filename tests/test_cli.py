"""The netdsl command: exit statuses, output, and that the front-end commands never import torch."""
import json
import subprocess
import sys

import pytest

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
    assert status == 0 and err == ""
    assert "vgg.net: E: ok, 3x224x224 -> 1000, 143,667,240 params" in out
    assert len(out.splitlines()) == 36


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
    assert result.returncode == 0 and result.stdout.strip() == "netdsl 0.1.0"


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
