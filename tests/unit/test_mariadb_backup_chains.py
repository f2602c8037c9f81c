"""MariaDB incremental backups without a server: the checkpoints read, the chains a restore
accepts, and the order in which the engine runs mariadb-backup and mbstream (stand-ins that
record their arguments) over a chain's streams, leaving no temporary directory behind."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.common.errors import GuestError
from cove.domain.guest import GuestSettings
from cove.guestagent.datastores.base import RestoreSource
from cove.guestagent.datastores.mariadb.backup import (
    FORMAT,
    FULL,
    INCREMENTAL,
    RESTORE_DIR,
    MariadbBackups,
    backup_type,
    check_chain,
    check_extracted,
    parent_lsn,
    read_checkpoints,
)
from cove.guestagent.datastores.mariadb.server import MariaServer

FULL_META = {"format": FORMAT, "version": "10.11", "type": FULL, "to_lsn": "44388"}
INC1_META = {
    "format": FORMAT,
    "version": "10.11",
    "type": INCREMENTAL,
    "from_lsn": "44388",
    "to_lsn": "44404",
}
INC2_META = {**INC1_META, "from_lsn": "44404", "to_lsn": "45000"}

# A stand-in for mariadb-backup: logs its arguments (and, for a prepare with an incremental,
# the files it finds there), writes the checkpoints a backup leaves in --extra-lsndir and
# streams a few bytes; fails a prepare of the incremental directory named in FAIL_ON.
FAKE_TOOL = """
import json, os, pathlib, sys
args = sys.argv[1:]
opts = dict(a[2:].split("=", 1) for a in args if a.startswith("--") and "=" in a)
entry = {"tool": "mariadb-backup", "args": args}
if "incremental-dir" in opts:
    entry["found"] = sorted(p.name for p in pathlib.Path(opts["incremental-dir"]).iterdir())
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(entry) + "\\n")
if "--backup" in args:
    start = opts.get("incremental-lsn")
    kind = "incremental" if start else "full-backuped"
    pathlib.Path(opts["extra-lsndir"], "xtrabackup_checkpoints").write_text(
        f"backup_type = {kind}\\nfrom_lsn = {start or 0}\\nto_lsn = 45000\\nlast_lsn = 45100\\n"
    )
    sys.stdout.buffer.write(b"xbstream bytes")
elif opts.get("incremental-dir", "").endswith(os.environ.get("FAIL_ON", "//")):
    sys.stderr.write("error: cannot apply\\n")
    sys.exit(1)
"""

# A stand-in for mbstream --extract: the stream is a JSON object of file names and contents.
FAKE_EXTRACT = """
import json, os, pathlib, sys
target = pathlib.Path([a for a in sys.argv if a.startswith("--directory=")][0].split("=", 1)[1])
for name, text in json.loads(sys.stdin.buffer.read()).items():
    (target / name).write_text(text)
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({"tool": "mbstream", "into": str(target)}) + "\\n")
"""


def checkpoints(kind: str, start: str, end: str) -> str:
    return f"backup_type = {kind}\nfrom_lsn = {start}\nto_lsn = {end}\nlast_lsn = {end}\n"


def test_checkpoints_are_read_as_keys_and_values() -> None:
    text = checkpoints("incremental", "44388", "44404") + "recover_binlog_info = 0\nnoise\n"
    assert read_checkpoints(text) == {
        "backup_type": "incremental",
        "from_lsn": "44388",
        "to_lsn": "44404",
        "last_lsn": "44404",
        "recover_binlog_info": "0",
    }
    assert read_checkpoints("") == {}


def test_a_backup_without_a_type_is_a_full_one() -> None:
    assert backup_type({"format": FORMAT}) == FULL
    assert backup_type(INC1_META) == INCREMENTAL
    with pytest.raises(GuestError, match="unknown MariaDB backup type 'differential'"):
        backup_type({"type": "differential"})


def test_an_incremental_starts_at_its_parent_s_to_lsn() -> None:
    assert parent_lsn(FULL_META, "10.11") == "44388"
    assert parent_lsn(INC1_META, "10.11") == "44404"
    for parent in ({"format": FORMAT, "version": "10.11"}, {**FULL_META, "to_lsn": "soon"}):
        with pytest.raises(GuestError, match="recorded no to_lsn"):
            parent_lsn(parent, "10.11")
    with pytest.raises(GuestError, match="not a MariaDB backup"):
        parent_lsn({"format": "pg_basebackup-tar", "to_lsn": "1"}, "10.11")


@pytest.mark.parametrize(
    "chain",
    [
        [FULL_META],
        [{"format": FORMAT, "version": "10.11"}],  # a full backup made before incrementals
        [FULL_META, INC1_META],
        [FULL_META, INC1_META, INC2_META],
    ],
)
def test_a_full_backup_and_the_incrementals_that_follow_it_make_a_chain(
    chain: list[dict[str, str]],
) -> None:
    check_chain(chain, "10.11")


@pytest.mark.parametrize(
    ("chain", "why"),
    [
        ([], "at least one backup"),
        ([INC1_META], "does not start with a full backup"),
        ([FULL_META, FULL_META], "backup 2 of the chain is a full backup"),
        (
            [FULL_META, INC2_META],
            "broken: backup 2 starts at LSN 44404, the backup before it ends at LSN 44388",
        ),
        ([FULL_META, INC2_META, INC1_META], "broken: backup 2 starts at LSN 44404"),
        (
            [{"format": FORMAT, "version": "10.11"}, INC1_META],
            "the backup before it ends at LSN None",
        ),
        ([FULL_META, {**INC1_META, "from_lsn": ""}], "broken: backup 2 starts at LSN "),
        ([FULL_META, {**INC1_META, "version": "10.6"}], "made by MariaDB 10.6"),
    ],
)
def test_a_chain_that_does_not_hold_together_is_refused(
    chain: list[dict[str, str]], why: str
) -> None:
    with pytest.raises(GuestError, match=re.escape(why)):
        check_chain(chain, "10.11")


def test_what_was_extracted_must_be_what_the_meta_says() -> None:
    check_extracted(read_checkpoints(checkpoints("full-backuped", "0", "44388")), FULL_META)
    check_extracted(read_checkpoints(checkpoints("incremental", "44388", "44404")), INC1_META)
    with pytest.raises(GuestError, match="of type incremental, not full"):
        check_extracted(read_checkpoints(checkpoints("incremental", "1", "2")), FULL_META)
    with pytest.raises(GuestError, match="starts at LSN 1, not at the 44388 it recorded"):
        check_extracted(read_checkpoints(checkpoints("incremental", "1", "2")), INC1_META)


# -- the engine with stand-in tools -----------------------------------------------------------


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[MariadbBackups, Path]]:
    """An engine whose tools are the stand-ins; yields it and the log they write."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("mariadb-backup", FAKE_TOOL), ("mbstream", FAKE_EXTRACT)):
        tool = bin_dir / name
        tool.write_text(f"#!{sys.executable}\n{body}")
        tool.chmod(0o755)
    root = tmp_path / "instance"
    for sub in ("conf", "log", "run"):
        (root / sub).mkdir(parents=True)
    (root / "conf" / "admin.secret").write_text("agent-Pw\n")
    log = tmp_path / "tools.log"
    log.touch()
    monkeypatch.setenv("FAKE_LOG", str(log))
    config = GuestSettings(
        instance_id="m1",
        datastore="mariadb",
        datastore_version="10.11",
        bin_dir=str(bin_dir),
        address="127.42.0.8",
        port=3306,
        ram_mb=256,
        vcpus=1,
        volume_gb=1,
        transport_url="redis+socket:///x",
        heartbeat_interval=5,
        instance_dir=str(root),
    )
    yield MariadbBackups(MariaServer(config, lambda _code: None)), log


def calls(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_an_incremental_backup_streams_from_its_parent_s_lsn_and_says_so(
    fake: tuple[MariadbBackups, Path],
) -> None:
    engine, log = fake
    with engine.open_backup(None) as source:
        assert b"".join(source.chunks()) == b"xbstream bytes"
    assert source.meta == {"format": FORMAT, "version": "10.11", "type": FULL, "to_lsn": "45000"}
    with engine.open_backup(dict(FULL_META)) as source:
        b"".join(source.chunks())
    assert source.meta == {
        "format": FORMAT,
        "version": "10.11",
        "type": INCREMENTAL,
        "from_lsn": "44388",
        "to_lsn": "45000",
    }
    full, incremental = (entry["args"] for entry in calls(log))
    assert isinstance(full, list) and isinstance(incremental, list)
    assert not [a for a in full if a.startswith("--incremental")]
    assert incremental == [*full, "--incremental-lsn=44388"]
    assert not (engine.config.conf_dir / "mariadb-backup.cnf").exists()


def test_a_parent_without_its_lsn_is_refused_before_the_tool_runs(
    fake: tuple[MariadbBackups, Path],
) -> None:
    engine, log = fake
    with (
        pytest.raises(GuestError, match="recorded no to_lsn"),
        engine.open_backup({"format": FORMAT, "version": "10.11"}),
    ):
        pass
    assert calls(log) == []


def stream(log: Path, name: str, files: dict[str, str]) -> Iterator[bytes]:
    """A piece's stream that notes in the log when it is first read."""
    with log.open("a") as out:
        out.write(json.dumps({"read": name}) + "\n")
    yield json.dumps(files).encode()


def piece(log: Path, name: str, meta: dict[str, str], kind: str) -> RestoreSource:
    files = {
        "backup-my.cnf": "[mysqld]\n",
        "xtrabackup_checkpoints": checkpoints(kind, meta.get("from_lsn", "0"), meta["to_lsn"]),
        f"{name}.delta" if kind == "incremental" else "ibdata1": name,
    }
    return RestoreSource(chunks=stream(log, name, files), meta=meta)


def chain(log: Path) -> list[RestoreSource]:
    return [
        piece(log, "full", FULL_META, "full-backuped"),
        piece(log, "inc1", INC1_META, "incremental"),
        piece(log, "inc2", INC2_META, "incremental"),
    ]


def test_a_chain_is_restored_full_first_then_each_incremental_in_order(
    fake: tuple[MariadbBackups, Path],
) -> None:
    engine, log = fake
    data = engine.config.data_dir
    engine.restore(chain(log))
    steps = []
    for entry in calls(log):
        if "read" in entry:
            steps.append(f"read {entry['read']}")
        elif entry["tool"] == "mbstream":
            steps.append(f"extract into {Path(str(entry['into'])).name}")
        else:
            args = entry["args"]
            assert isinstance(args, list)
            assert (
                f"--target-dir={data}" in args and f"--defaults-file={data}/backup-my.cnf" in args
            )
            applied = [a.rsplit("/", 1)[1] for a in args if a.startswith("--incremental-dir=")]
            steps.append(f"apply {applied[0]} {entry['found']}" if applied else "prepare")
    assert steps == [
        "read full",
        "extract into data",
        "prepare",
        "read inc1",
        "extract into incremental-1",
        "apply incremental-1 ['backup-my.cnf', 'inc1.delta', 'xtrabackup_checkpoints']",
        "read inc2",
        "extract into incremental-2",
        "apply incremental-2 ['backup-my.cnf', 'inc2.delta', 'xtrabackup_checkpoints']",
    ]
    assert (data / "ibdata1").read_text() == "full"
    assert {p.stat().st_mode & 0o777 for p in data.iterdir()} == {0o600}
    assert not (engine.config.root / "tmp" / RESTORE_DIR).exists()


def test_a_failed_apply_leaves_no_temporary_directory(fake: tuple[MariadbBackups, Path]) -> None:
    engine, log = fake
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FAIL_ON", "incremental-1")
        with pytest.raises(GuestError, match=r"cannot prepare an incremental backup.*cannot apply"):
            engine.restore(chain(log))
    assert not (engine.config.root / "tmp" / RESTORE_DIR).exists()
    # The next piece was never read.
    assert {"read": "inc2"} not in calls(log)


def test_a_broken_chain_touches_nothing(fake: tuple[MariadbBackups, Path]) -> None:
    engine, log = fake
    kept = engine.config.data_dir / "ibdata1"
    kept.parent.mkdir()
    kept.write_bytes(b"x")
    full, _, inc2 = chain(log)
    with pytest.raises(GuestError, match="the backup chain is broken"):
        engine.restore([full, inc2])
    assert kept.read_bytes() == b"x"
    assert calls(log) == []


def test_an_artifact_that_is_not_the_incremental_it_claims_is_refused(
    fake: tuple[MariadbBackups, Path],
) -> None:
    engine, log = fake
    lying = piece(log, "inc1", INC1_META, "full-backuped")
    with pytest.raises(GuestError, match="of type full-backuped, not incremental"):
        engine.restore([chain(log)[0], lying])
    assert not (engine.config.root / "tmp" / RESTORE_DIR).exists()
