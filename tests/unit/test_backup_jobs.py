"""The guest's backup jobs end cleanly: past their deadline, cancelled, failed or cut short by
the agent's death, with the tool a real child process that is killed (and only it), nothing
left in a filesystem store, and a backup never started twice."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cove.common.ids import utcnow
from cove.domain.backups import BackupJob, BackupProgress, JobState, SealKey, StoreSpec
from cove.guestagent import process
from cove.guestagent.backups import AGENT_DIED, BackupJobs, _cove_error_behind, kill_children
from cove.guestagent.datastores.base import BackupSource, RestoreSource

KEY = SealKey("bk-0000unit", secrets.token_hex(32))

#: Writes 12 MB (several sealed frames), then waits: meanwhile the store holds a partial.
TALKS_THEN_WAITS = [
    sys.executable,
    "-c",
    "import os, sys, time\n"
    "sys.stdout.buffer.write(os.urandom(12_000_000)); sys.stdout.flush(); time.sleep(600)",
]


class _Source:
    def __init__(self, streamed: process.Streamed) -> None:
        self._streamed = streamed
        self.meta: dict[str, str] = {"format": "test"}

    def chunks(self) -> Iterator[bytes]:
        return self._streamed.chunks()


class ToolEngine:
    """A backup engine whose tool is a real process running ``argv``."""

    incremental = False

    def __init__(self, argv: Sequence[str], log: Path) -> None:
        self.argv = list(argv)
        self.log = log
        self.pids: list[int] = []

    @contextlib.contextmanager
    def open_backup(self, parent_meta: dict[str, str] | None) -> Iterator[BackupSource]:
        with process.stream_out(self.argv, errors=self.log) as streamed:
            self.pids.append(streamed.proc.pid)
            yield _Source(streamed)

    def restore(self, pieces: Sequence[RestoreSource]) -> None:
        raise NotImplementedError


def wait_for(check: Callable[[], Any], timeout: float = 30.0, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Still there: a zombie is gone for our purposes only once reaped, which stream_out does.
    return False


@pytest.fixture
def store(tmp_path: Path) -> StoreSpec:
    return StoreSpec(kind="filesystem", location=str(tmp_path / "store"), prefix="c")


def files(store: StoreSpec) -> list[Path]:
    root = Path(store.location)
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def jobs_with(tmp_path: Path, argv: Sequence[str]) -> tuple[BackupJobs, ToolEngine]:
    engine = ToolEngine(argv, tmp_path / "tool.log")
    return BackupJobs(engine, tmp_path / "state"), engine


def job(store: StoreSpec, backup_id: str = "b-1", deadline_in: float | None = None) -> BackupJob:
    deadline = utcnow() + timedelta(seconds=deadline_in) if deadline_in is not None else None
    return BackupJob(backup_id, store, f"i/{backup_id}.cbk", KEY, deadline=deadline)


def ended(jobs: BackupJobs, backup_id: str = "b-1") -> BackupProgress:
    result: BackupProgress = wait_for(
        lambda: (p := jobs.progress(backup_id)).state is not JobState.RUNNING and p,
        what="the backup to end",
    )
    return result


def test_a_backup_completes_and_leaves_no_process(tmp_path: Path, store: StoreSpec) -> None:
    jobs, engine = jobs_with(tmp_path, ["printf", "hello"])
    assert jobs.start(job(store)).state is JobState.RUNNING
    done = ended(jobs)
    assert done.state is JobState.COMPLETED and done.result is not None
    assert [p.name for p in files(store)] == ["b-1.cbk"]
    assert gone(engine.pids[0])
    # Asked again (a task manager that took over): its outcome, not a second run.
    assert jobs.start(job(store)).state is JobState.COMPLETED
    assert len(engine.pids) == 1


def test_past_its_deadline_the_tool_is_killed_and_the_partial_upload_removed(
    tmp_path: Path, store: StoreSpec
) -> None:
    jobs, engine = jobs_with(tmp_path, TALKS_THEN_WAITS)
    jobs.start(job(store, deadline_in=60))
    # Mid-backup: the tool wrote, the store holds a partial upload, nothing more comes.
    wait_for(lambda: any(f.stat().st_size > 0 for f in files(store)), what="a partial upload")
    # The deadline, moved close by (what the timer of a job given it at start does).
    jobs._running["b-1"].timer.cancel()  # type: ignore[union-attr]
    jobs._stop(jobs._running["b-1"], "it did not finish by its deadline")
    failed = ended(jobs)
    assert failed.state is JobState.FAILED
    assert failed.error == "the backup was stopped: it did not finish by its deadline"
    wait_for(lambda: gone(engine.pids[0]), 10, "the tool gone")
    assert files(store) == []


def test_the_deadline_given_at_start_stops_a_backup_by_itself(
    tmp_path: Path, store: StoreSpec
) -> None:
    jobs, engine = jobs_with(tmp_path, ["sleep", "600"])
    jobs.start(job(store, deadline_in=1.0))
    failed = ended(jobs)
    assert failed.state is JobState.FAILED and "deadline" in failed.error
    assert gone(engine.pids[0])
    assert files(store) == []


def test_a_job_past_its_deadline_never_starts(tmp_path: Path, store: StoreSpec) -> None:
    jobs, engine = jobs_with(tmp_path, ["printf", "x"])
    late = jobs.start(job(store, deadline_in=-1))
    assert late.state is JobState.FAILED and "deadline" in late.error
    assert engine.pids == [] and jobs.progress("b-1") == late


def test_cancel_kills_a_stopped_tool_and_no_other_child(tmp_path: Path, store: StoreSpec) -> None:
    jobs, engine = jobs_with(tmp_path, TALKS_THEN_WAITS)
    # Another child of the agent, started by another thread: the database server's place.
    bystander = subprocess.Popen(["sleep", "600"])
    try:
        jobs.start(job(store))
        wait_for(lambda: any(f.stat().st_size > 0 for f in files(store)), what="a partial")
        tool = engine.pids[0]
        os.kill(tool, signal.SIGSTOP)  # it hangs: no output, no exit
        cancelled = jobs.cancel("b-1")
        assert cancelled.state is JobState.FAILED
        assert cancelled.error == "the backup was stopped: it was cancelled by the task manager"
        assert gone(tool)
        assert bystander.poll() is None
        assert files(store) == []
        # Cancelling again, or starting it again, changes nothing.
        assert jobs.cancel("b-1") == cancelled
        assert jobs.start(job(store)) == cancelled and len(engine.pids) == 1
    finally:
        bystander.kill()
        bystander.wait()


def test_a_backup_never_started_cannot_start_once_cancelled(
    tmp_path: Path, store: StoreSpec
) -> None:
    jobs, engine = jobs_with(tmp_path, ["printf", "x"])
    cancelled = jobs.cancel("b-9")
    assert cancelled.state is JobState.FAILED and "cancelled" in cancelled.error
    # A start still on its way arrives after the cancel: it answers the outcome.
    assert jobs.start(job(store, "b-9")) == cancelled
    assert engine.pids == []
    # So does a new agent of the instance.
    assert BackupJobs(engine, tmp_path / "state").start(job(store, "b-9")) == cancelled


def test_a_backup_an_agent_was_running_when_it_died_fails_and_never_runs_again(
    tmp_path: Path, store: StoreSpec
) -> None:
    jobs, engine = jobs_with(tmp_path, ["sleep", "600"])
    jobs.start(job(store))
    wait_for(lambda: engine.pids, what="the tool")
    # A new agent, with the same state directory (the old one died without a word).
    again = BackupJobs(engine, tmp_path / "state")
    progress = again.progress("b-1")
    assert progress.state is JobState.FAILED and progress.error == AGENT_DIED
    assert again.start(job(store)) == progress
    assert len(engine.pids) == 1
    jobs.stop_all("the test ends")
    ended(jobs)
    assert gone(engine.pids[0])


def test_a_failing_tool_fails_the_backup_with_its_reason(tmp_path: Path, store: StoreSpec) -> None:
    jobs, engine = jobs_with(tmp_path, ["sh", "-c", "echo 'no such role' >&2; exit 3"])
    jobs.start(job(store))
    failed = ended(jobs)
    assert failed.state is JobState.FAILED
    assert "status 3" in failed.error and "no such role" in failed.error
    assert gone(engine.pids[0]) and files(store) == []


def test_an_unwritable_store_fails_the_backup_naming_the_store(tmp_path: Path) -> None:
    root = tmp_path / "not-a-directory"  # unwritable even for root
    root.write_text("")
    spec = StoreSpec(kind="filesystem", location=str(root), prefix="c")
    jobs, engine = jobs_with(tmp_path, ["printf", "x"])
    jobs.start(job(spec))
    failed = ended(jobs)
    assert failed.state is JobState.FAILED and "filesystem store" in failed.error
    assert all(gone(pid) for pid in engine.pids)


def test_kill_children_takes_only_the_thread_s_children() -> None:
    import threading

    mine = subprocess.Popen(["sleep", "600"])
    found: list[int] = []
    ready = threading.Event()
    release = threading.Event()

    def worker() -> None:
        child = subprocess.Popen(["sleep", "600"])
        found.append(child.pid)
        ready.set()
        release.wait(30)
        child.wait()

    thread = threading.Thread(target=worker)
    thread.start()
    try:
        ready.wait(30)
        assert kill_children(thread.native_id or 0) == found
        release.set()
        thread.join(30)
        assert mine.poll() is None
    finally:
        release.set()
        mine.kill()
        mine.wait()


def test_a_failing_clean_up_does_not_hide_why_the_backup_failed() -> None:
    from cove.common.errors import StoreUnavailable

    full = StoreUnavailable("cannot write x in the filesystem store /s: it is full")
    try:
        try:
            raise full
        except StoreUnavailable:
            raise OSError(28, "No space left on device") from None  # the file's close
    except OSError as exc:
        assert _cove_error_behind(exc) is full
    assert _cove_error_behind(KeyError("x")) is None
