"""netdsl compile -o: standalone PyTorch source (bit-identical), ONNX (checked, and run by
onnxruntime when installed), weights files, torchvision import and fine-tuning from the CLI."""
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

import netdsl
from conftest import NETWORKS, ROOT, shipped_networks
from netdsl.cli import main

torch = pytest.importorskip("torch")


def _import_file(path, name="generated_model"):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path,name,shape", shipped_networks())
def test_generated_source_is_bit_identical_to_the_module(tmp_path, path, name, shape):
    from netdsl.backends.torch_codegen import class_name, generate_source
    net = netdsl.load(path, net=name, input=shape)
    source = generate_source(net)
    file = tmp_path / "model.py"
    file.write_text(source)
    generated = getattr(_import_file(file), class_name(net.name))()  # no arguments
    model = net.compile("torch", seed=0).eval()
    generated.load_state_dict(model.state_dict())
    generated.eval()
    x = torch.randn(2, *net.input_shape)
    with torch.no_grad():
        assert torch.equal(generated(x), model(x))
    assert "import torch\n" in source and "netdsl" not in source.split("import torch")[1]


def test_generated_source_reads_like_the_network(tmp_path):
    from netdsl.backends.torch_codegen import generate_source
    source = generate_source(netdsl.load("vgg16"))
    assert "class Block_2_64(nn.Module):\n    # block(2, 64)\n    # vgg16.net:7: def block(n, c) = (conv3-c)*n - pool" in source
    assert "        self.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1" in source
    # a chain as torch code is written by hand: each layer's output takes the name x
    assert "        x = F.relu(self.conv1(x), inplace=True)  # 64x224x224" in source
    assert "        x = self.block1(x)  # 64x112x112" in source
    assert "lambda" not in source


@pytest.mark.parametrize("target", ["lenet5", str(ROOT / "tests" / "data" / "every_op.net")])
def test_onnx_export_is_checked_and_runs_at_any_batch_size(tmp_path, capsys, target):
    """torch's current exporter (dynamo=True) on every op of the language; onnxruntime gives
    torch's output at batch sizes other than the one exported with."""
    out = tmp_path / "model.onnx"
    assert main(["compile", target, "-o", str(out), "--seed", "3"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    onnxruntime = pytest.importorskip("onnxruntime")
    session = onnxruntime.InferenceSession(str(out))
    net = netdsl.load(target)
    model = net.compile("torch", seed=3).eval()
    assert [i.name for i in session.get_inputs()] == ["input"]
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, *net.input_shape)).astype(np.float32)
        expected = model(torch.from_numpy(x)).detach().numpy()
        assert np.allclose(session.run(None, {"input": x})[0], expected, rtol=1e-4, atol=1e-5)


def test_onnx_export_of_adaptive_maxpool_is_refused_with_a_place(tmp_path, capsys):
    source = tmp_path / "pool.net"
    source.write_text("input 3x9x5\nconv3-4 - adaptive_maxpool(2) - fc2\n")
    assert main(["compile", str(source), "-o", str(tmp_path / "model.onnx")]) == 1
    err = capsys.readouterr().err
    assert "pool.net:2:11: error: adaptive_maxpool1 (adaptive_maxpool(2)) cannot be written as ONNX" in err
    assert not (tmp_path / "model.onnx").exists()


def test_compile_saves_and_loads_weights(tmp_path, capsys):
    saved = tmp_path / "w.safetensors"
    assert main(["compile", "mlp:mlp2", "--seed", "4", "--save-weights", str(saved)]) == 0
    reference = netdsl.load("mlp:mlp2").compile("torch", seed=4).state_dict()
    from netdsl.weights_io import read_weights
    stored = read_weights(saved)
    assert all(np.array_equal(stored[k], reference[k].numpy()) for k in stored)
    again = tmp_path / "again.npz"
    assert main(["compile", "mlp:mlp2", "--weights", str(saved), "-o", str(again)]) == 0
    assert np.array_equal(read_weights(again)["fc1.weight"], stored["fc1.weight"])


def test_compile_imports_torchvision_and_fine_tunes(tmp_path, capsys):
    from conftest import torchvision_resnet18_state
    pth = tmp_path / "resnet18.pth"
    torch.save(torchvision_resnet18_state(), pth)
    saved = tmp_path / "ft.safetensors"
    status = main(["compile", "resnet:resnet18", "--torchvision", str(pth), "--head", "10",
                   "--freeze", "basic_stage2", "--save-weights", str(saved)])
    out = capsys.readouterr().out
    assert status == 0
    assert any(line.split()[:2] == ["head1.fc1", "fc10"] for line in out.splitlines())
    assert "trainable" in out and "frozen" in out
    from netdsl.weights_io import read_weights
    assert read_weights(saved)["head1.fc1.weight"].shape == (10, 512)


def test_compile_errors_are_clean(tmp_path, capsys):
    with pytest.raises(SystemExit) as caught:
        main(["compile", "lenet5", "-o", str(tmp_path / "x.txt")])
    assert caught.value.code == 1
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk")
    assert main(["compile", "lenet5", "--weights", str(bad)]) == 1
    assert "bad.safetensors: not a safetensors file" in capsys.readouterr().err


def test_generated_file_runs_as_a_script(tmp_path, capsys):
    out = tmp_path / "lenet.py"
    assert main(["compile", "lenet5", "-o", str(out)]) == 0
    result = subprocess.run([sys.executable, str(out)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "torch.Size([1, 10])"
