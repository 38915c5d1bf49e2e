"""Every `python -m clap_train ...` command shown in the README and docs/ parses when pasted into bash:
bash's word splitting (shlex), then Hydra's override grammar for each `key=value` argument (a brace
pattern without Hydra quotes fails here with "mismatched input '{'")."""

import re
import shlex
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
HYDRA_ENTRIES = ("clap_train", "clap_train.evaluate")


def shell_commands(path: Path) -> list[str]:
    """Commands of the ```bash blocks, continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.DOTALL):
        for command in block.replace("\\\n", " ").splitlines():
            command = command.strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


def hydra_overrides(command: str) -> list[str] | None:
    words = shlex.split(command, comments=True)
    for index, word in enumerate(words[:-2]):
        if word.endswith("python") and words[index + 1] == "-m" and words[index + 2] in HYDRA_ENTRIES:
            rest = words[index + 3:]
            return [w for w in rest if "=" in w and not w.startswith("-") and "..." not in w and "&&" not in w]
    return None


COMMANDS = [(path.relative_to(REPO), command) for path in DOCS for command in shell_commands(path)
            if hydra_overrides(command)]


def test_docs_show_hydra_commands():
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize("where, command", COMMANDS, ids=[f"{w}:{i}" for i, (w, _) in enumerate(COMMANDS)])
def test_pasted_command_parses(where, command):
    overrides = hydra_overrides(command)
    parsed = OverridesParser.create().parse_overrides(overrides)
    assert len(parsed) == len(overrides)
