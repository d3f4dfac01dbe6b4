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
    assert "replicas identical: True; parameters changed: True" in results[0][0]
    for process, (out, err) in zip(processes, results):
        # After the check, both ranks passed the final barrier and destroyed the process group;
        # gloo's worker thread may still abort the process as the interpreter exits (a known
        # gloo/torch teardown race, pytorch/pytorch#190489: "terminate called without an active
        # exception", SIGABRT; it happened once in a CI run on 2026-11-26, while 6 local runs
        # passed). That exit says nothing of the replicas, which the line above checked; any other
        # failure does.
        teardown_abort = process.returncode == -6 and \
            err.strip().endswith("terminate called without an active exception")
        assert process.returncode == 0 or teardown_abort, err[-2000:]
    assert results[0][0].count("step ") == 3
