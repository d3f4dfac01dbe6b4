"""Bare names of the shipped networks: `netdsl summary resnext101_32x8d` finds the net inside
networks/resnet.net. The rule (docs/zoo.md):

1. `FILE:NET` is the net NET of a file: a path, or a shipped file's name (`vgg:D`, `resnet:resnet50`).
2. A bare name that is a shipped file's name is that file, as it always was (`vgg16`, `resnet50`,
   `resnext50`, `lenet5`) - except `googlenet` and `alexnet`, whose files hold the papers'
   networks under those names beside torchvision's: the bare name is torchvision's model
   (TORCHVISION_IN_PAPER_FILES), the paper's keeps its FILE:NET name (`googlenet:googlenet`).
3. Any other bare name is the name of a net: the one shipped net of that name, whichever file
   defines it (`resnext101_32x8d` is `resnet:resnext101_32x8d`).

tests/test_zoo.py checks that every bare name names exactly one net, and that where a file and a
net share a name (vgg16.net beside vgg.net's vgg16) they are the same network.
"""
from __future__ import annotations

import re
from pathlib import Path

from .errors import NetDSLNameError
from .modules import shipped_networks_dir

#: Torchvision's name -> its net inside the file of that name, where the paper's network holds
#: the name within the file (googlenet:googlenet is the paper's GoogLeNet).
TORCHVISION_IN_PAPER_FILES = {"googlenet": "googlenet_tv", "alexnet": "alexnet_tv"}

_NET_STATEMENT = re.compile(r"^net[ \t]+([A-Za-z_][A-Za-z0-9_]*)", re.MULTILINE)
_BARE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def shipped_nets() -> dict[str, list[Path]]:
    """Net name -> the shipped files declaring a net of that name (`net NAME` statements; a file
    of one unnamed chain declares none: its net is found by the file's name)."""
    found: dict[str, list[Path]] = {}
    for path in sorted(shipped_networks_dir().glob("*.net")):
        for name in _NET_STATEMENT.findall(path.read_text(encoding="utf-8")):
            found.setdefault(name, []).append(path)
    return found


def resolve_bare(name: str) -> tuple[str, str | None] | None:
    """(file, net) of the shipped network a bare name means, or None when it means none."""
    stem = name[:-len(".net")] if name.endswith(".net") else name
    if not _BARE_NAME.fullmatch(stem):
        return None
    file = shipped_networks_dir() / f"{stem}.net"
    if file.is_file():
        if stem == name and stem in TORCHVISION_IN_PAPER_FILES:
            return str(file), TORCHVISION_IN_PAPER_FILES[stem]
        return str(file), None
    if stem != name:
        return None
    files = shipped_nets().get(name, [])
    if len(files) > 1:  # tests/test_zoo.py keeps this from happening to a shipped name
        raise NetDSLNameError(f"{len(files)} shipped files define a net named {name}",
                              notes=[f"choose one: {', '.join(f'{f.stem}:{name}' for f in files)}"])
    return (str(files[0]), name) if files else None
