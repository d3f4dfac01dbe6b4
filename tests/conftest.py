import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NETWORKS = ROOT / "networks"
GOLDEN = Path(__file__).resolve().parent / "golden"
#: Set NETDSL_UPDATE_GOLDEN=1 to rewrite golden files from the current output (then review the diff).
UPDATE_GOLDEN = os.environ.get("NETDSL_UPDATE_GOLDEN") == "1"


def check_golden(path: Path, actual: str) -> None:
    if UPDATE_GOLDEN or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        if not UPDATE_GOLDEN:
            pytest.fail(f"golden file {path.name} was missing and has been written; review it")
    assert actual == path.read_text(encoding="utf-8")


#: Small inputs that still fit every shipped network (AlexNet's stride-4 conv needs more than 32).
SMALL_INPUTS = {"alexnet": "3x67x67", "zfnet": "3x67x67", "lenet5": None, "mlp": None}


def shipped_networks(inputs: dict | None = None, default: str = "3x32x32") -> list:
    """pytest params (path, net name, small input) for every net of every shipped file."""
    import netdsl
    inputs = SMALL_INPUTS if inputs is None else inputs
    params = []
    for path in sorted(NETWORKS.glob("*.net")):
        for net in netdsl.parse_all(path.read_text(), path=str(path)):
            params.append(pytest.param(str(path), net.name, inputs.get(path.stem, default),
                                       id=f"{path.stem}:{net.name}"))
    return params


# Hypothesis profiles: the default runs in CI, derandomized so that a submission's result does not
# depend on luck; `pytest --hypothesis-profile=thorough` explores 10x more examples at random
# (add every failure it finds as an @example).
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=300, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("thorough", max_examples=3000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("ci")
