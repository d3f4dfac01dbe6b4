"""DistributedDataParallel: two gloo processes on the CPU train a netdsl module on different data,
and their parameters stay identical (examples/train_ddp.py, launched as torchrun would)."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT

pytest.importorskip("torch")


def test_ddp_replicas_stay_identical(tmp_path):
    store = tmp_path / "rendezvous"  # a file store: no port to race for
    processes = []
    for rank in range(2):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
        processes.append(subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "train_ddp.py"), "--net", "lenet5", "--steps", "3",
             "--check", "--init-method", f"file://{store}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=180) for p in processes]
    for process, (out, err) in zip(processes, results):
        assert process.returncode == 0, err[-2000:]
    assert "replicas identical: True; parameters changed: True" in results[0][0]
    assert results[0][0].count("step ") == 3
