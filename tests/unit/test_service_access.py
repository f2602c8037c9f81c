"""scripts/check-service-access.sh, which ``make test`` and ``make run`` run first: as root, a
clone the service user cannot reach stops there, with one line saying what to open up.

Runs the script against a small clone (a virtualenv of the system Python whose path leads to a
``cove`` package) inside a real private directory, as ``mktemp -d`` makes one.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check-service-access.sh"
SERVICE_USER = "cove"


def _service_user_exists() -> bool:
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return False
    return True


pytestmark = pytest.mark.skipif(
    os.geteuid() != 0
    or not _service_user_exists()
    or shutil.which("runuser") is None
    or not os.access("/usr/bin/python3", os.X_OK),
    reason="needs root, the service user and runuser",
)


@pytest.fixture
def private() -> Iterator[Path]:
    """A directory of mode 0700 (what mktemp -d makes) holding a clone with its virtualenv."""
    base = Path(tempfile.mkdtemp(prefix="cove-private-"))
    assert base.stat().st_mode & 0o777 == 0o700
    clone = base / "clone"
    package = clone / "src" / "cove" / "guestagent"
    package.mkdir(parents=True)
    for name in ("__init__.py", "guestagent/__init__.py", "guestagent/main.py"):
        (clone / "src" / "cove" / name).touch()
    subprocess.run(
        ["/usr/bin/python3", "-m", "venv", "--without-pip", str(clone / ".venv")],
        check=True,
        timeout=120,
    )
    # The editable install's path entry, as pip writes one.
    purelib = subprocess.run(
        [str(clone / ".venv" / "bin" / "python"), "-c", PURELIB],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    Path(purelib, "cove-src.pth").write_text(f"{clone / 'src'}\n")
    subprocess.run(["chmod", "-R", "a+rX", str(clone)], check=True, timeout=60)
    yield base
    shutil.rmtree(base, ignore_errors=True)


PURELIB = "import sysconfig; print(sysconfig.get_paths()['purelib'])"


def check(clone: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COVE_")}
    return subprocess.run(
        ["bash", str(SCRIPT), str(clone), ".venv"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_a_clone_in_a_private_directory_stops_with_one_line(private: Path) -> None:
    result = check(private / "clone")
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: the service user 'cove' cannot enter {private} ")
    assert f"run 'chmod o+x {private}'" in lines[0]


def test_once_opened_the_clone_passes(private: Path) -> None:
    private.chmod(0o711)
    result = check(private / "clone")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_files_the_service_user_cannot_read_are_named_too(private: Path) -> None:
    private.chmod(0o711)
    (private / "clone" / "src" / "cove" / "__init__.py").chmod(0o600)
    result = check(private / "clone")
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert "Permission denied" in line and f"'chmod -R o+rX {private / 'clone'}'" in line


def test_this_clone_passes() -> None:
    """The clone the tests run from: its virtualenv serves the guest agents of the
    integration tests."""
    result = check(SCRIPT.parents[1])
    assert (result.returncode, result.stderr) == (0, "")
