"""The README's commands and transcripts are the real ones."""
import subprocess

from conftest import ROOT


def _blocks(lang: str) -> list[str]:
    """The fenced code blocks of the README whose info string is `lang`."""
    blocks, current, info = [], None, None
    for line in (ROOT / "README.md").read_text().splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current, info = [], line[3:].strip()
            else:
                if info == lang:
                    blocks.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_quick_start_is_two_commands_and_ci_runs_the_second():
    install, tests = [block.strip() for block in _blocks("sh")[:2]]
    assert install == "pip install -e . && netdsl compile networks/vgg16.net"
    ci = (ROOT / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


def test_error_transcript_is_what_netdsl_prints():
    transcript = next(b for b in _blocks("") if "error:" in b)
    result = subprocess.run(["netdsl", "check", "examples/too_deep.net"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr == transcript
