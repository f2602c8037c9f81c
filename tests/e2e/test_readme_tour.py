"""The README's five-minute tour, run as written: every command of its console blocks, in
order, in one shell, against a running Cove, as a user who ran `make run` in the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from harness import ControlPlane

README = Path(__file__).resolve().parents[2] / "README.md"


def tour_commands(text: str) -> list[str]:
    """The commands (``$ `` lines with their ``\\`` continuations) of the tour's console
    blocks, up to the `openstack` command's part (which installs clients from PyPI)."""
    section = text.split("## A five-minute tour", 1)[1].split("\n## ", 1)[0]
    section = section.split("### The same with the `openstack` command", 1)[0]
    commands = []
    for block in re.findall(r"```console\n(.*?)```", section, re.S):
        lines = block.splitlines()
        at = 0
        while at < len(lines):
            if lines[at].startswith("$ "):
                command = lines[at][2:]
                while command.endswith("\\"):
                    at += 1
                    command += "\n" + lines[at]
                commands.append(command)
            at += 1
    return commands


def test_the_tour_finds_its_commands() -> None:
    commands = tour_commands(README.read_text())
    assert commands[0].startswith("export PATH=")
    assert any(c.startswith("cove instance create orders") for c in commands)
    assert any("--datastore mariadb" in c for c in commands)
    assert any("--datastore redis" in c for c in commands)


def test_the_readme_tour_runs_as_written(cove_up: ControlPlane, tmp_path: Path) -> None:
    commands = tour_commands(README.read_text())
    # The repository as `make run` leaves it: the virtualenv, and .cove/ with clouds.yaml.
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / ".venv").symlink_to(Path(sys.prefix))
    (repo / ".cove").symlink_to(cove_up.data_dir)
    script = ["set -euo pipefail"]
    for n, command in enumerate(commands):
        script += [f"echo '### {n}' >&2", command]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OS_", "COVE_", "VIRTUAL_ENV", "PG", "MYSQL", "REDISCLI"))
    }
    env["HOME"] = str(tmp_path / "home")
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        stdin=subprocess.DEVNULL,
    )
    ran = re.findall(r"^### (\d+)$", done.stderr, re.M)
    last = commands[int(ran[-1])] if ran else "(none)"
    assert done.returncode == 0, (
        f"the tour stopped at `{last}`:\n{done.stderr[-3000:]}\n{done.stdout[-3000:]}"
    )
    assert len(ran) == len(commands)
    out = done.stdout
    assert "current_user" in out and " app\n" in out  # psql logged in as app
    assert "PONG" in out  # redis-cli as app
    assert re.search(r'^"orders","postgresql [0-9.]+","ACTIVE', out, re.M), out
    # The user made from standard input, granted audit afterwards: `user access` lists both.
    assert re.search(r"^Name\naudit\norders$", out, re.M), out
