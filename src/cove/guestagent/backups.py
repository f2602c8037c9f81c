"""Backups and restores in the guest agent: the pipeline and the jobs.

A backup streams the engine's tool output (``BackupEngine.open_backup``) through compression
and sealing (``cove.storage.sealed``) straight into the store: nothing of it is kept on local
disk or in memory beyond one chunk and one upload part. It runs in a thread of its own, one at
a time per instance, while the server keeps serving; the task manager starts it, asks how it
goes and, when it gives up on it, cancels it (``start``, ``progress``, ``cancel``).

A backup is recorded in the agent's own directory when it starts and again when it ends, so a
task manager taking over after the end still learns the outcome, and a backup that was running
when the agent died reads FAILED there: it is never started a second time.

A backup ends cleanly whatever happens: past its deadline, or when cancelled, its tool
processes are killed (every child process its worker thread started, found through
``/proc/<agent>/task/<worker>/children``, so the database server, another child of the agent,
is never touched) and what it stored is discarded; the same kill runs after every backup, so
no tool process outlives its backup.

A restore reads each artifact of the chain back through the same seal, which checks every
frame and the recorded checksum, and hands the engine the opened streams; any damage fails the
restore before the server starts on it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path

from cove.common.errors import (
    ArtifactMissing,
    CoveError,
    GuestError,
    OperationNotSupported,
)
from cove.common.ids import utcnow
from cove.domain.backups import (
    RAW_SIZE,
    BackupJob,
    BackupProgress,
    BackupResult,
    JobState,
    RestoreJob,
    RestorePiece,
)
from cove.guestagent.datastores.base import BackupEngine, RestoreSource, WalEngine
from cove.rpc import codec
from cove.storage import open_store
from cove.storage.sealed import Sealed, unsealed

LOG = logging.getLogger(__name__)

#: How long ``cancel`` waits for the backup to end before it answers.
CANCEL_WAIT = 10.0
#: How often a backup being stopped has its tool processes killed, until it ended.
KILL_ROUND = 0.2

#: Why a backup recorded as started but never as ended failed.
AGENT_DIED = "the guest agent stopped while the backup ran"
CANCELLED = "it was cancelled by the task manager"
OVERDUE = "it did not finish by its deadline"


class _Run:
    """One backup running in this agent."""

    def __init__(self, job: BackupJob) -> None:
        self.job = job
        self.sealed: Sealed | None = None
        #: The worker thread's native id, once it runs: its child processes are the backup's.
        self.worker: int | None = None
        #: Why the backup is being stopped; empty while it is not.
        self.reason = ""
        self.done = threading.Event()
        self.timer: threading.Timer | None = None


class BackupJobs:
    """The backups of one instance: at most one running, outcomes kept in ``state_dir``."""

    def __init__(self, engine: BackupEngine | None, state_dir: Path) -> None:
        self.engine = engine
        self.state_dir = state_dir
        self._lock = threading.Lock()
        self._running: dict[str, _Run] = {}
        #: Outcomes of this agent's lifetime, for when the state directory cannot be written.
        self._ended: dict[str, BackupProgress] = {}

    def start(self, job: BackupJob) -> BackupProgress:
        """Start ``job`` unless it ran or runs already (then its progress, as ``progress``).

        Raises OperationNotSupported (no backups here, or no incrementals), GuestError when
        another backup runs or the backup cannot be recorded.
        """
        if self.engine is None:
            raise OperationNotSupported("This datastore has no backups.")
        if job.parent_meta is not None and not self.engine.incremental:
            raise OperationNotSupported("This datastore has no incremental backups.")
        with self._lock:
            known = self._progress(job.backup_id)
            if known.state is not JobState.UNKNOWN:
                return known
            if self._running:
                raise GuestError(
                    f"backup {next(iter(self._running))} is still running on this instance"
                )
            if job.deadline is not None and job.deadline <= utcnow():
                late = BackupProgress(JobState.FAILED, error=f"the backup was stopped: {OVERDUE}")
                self._remember(job.backup_id, late)
                return late
            try:
                # Recorded first: an agent that dies from here on leaves a backup that reads
                # FAILED, never one that could be started again.
                self._write(job.backup_id, BackupProgress(JobState.RUNNING))
            except OSError as exc:
                raise GuestError(f"cannot record the backup: {exc.strerror}") from None
            run = self._running[job.backup_id] = _Run(job)
        if job.deadline is not None:
            left = (job.deadline - utcnow()).total_seconds()
            run.timer = threading.Timer(max(left, 0.0), self._stop, (run, OVERDUE))
            run.timer.daemon = True
            run.timer.start()
        worker = threading.Thread(
            target=self._run, args=(run,), name=f"backup-{job.backup_id[:8]}", daemon=True
        )
        worker.start()
        return BackupProgress(JobState.RUNNING)

    def progress(self, backup_id: str) -> BackupProgress:
        with self._lock:
            return self._progress(backup_id)

    def cancel(self, backup_id: str, wait: float = CANCEL_WAIT) -> BackupProgress:
        """Stop the backup if it runs (its tool killed, what it stored discarded) and answer
        its outcome once it ended, or its progress after ``wait`` seconds. A backup this agent
        does not know is recorded FAILED, so a late ``start`` never runs it."""
        with self._lock:
            run = self._running.get(backup_id)
            if run is None:
                known = self._progress(backup_id)
                if known.state is JobState.UNKNOWN:
                    known = BackupProgress(
                        JobState.FAILED, error=f"the backup was stopped: {CANCELLED}"
                    )
                    self._remember(backup_id, known)
                return known
        self._stop(run, CANCELLED)
        run.done.wait(wait)
        return self.progress(backup_id)

    def stop_all(self, reason: str) -> None:
        """Stop every running backup (the agent is stopping): none leaves a tool behind."""
        with self._lock:
            runs = list(self._running.values())
        for run in runs:
            self._stop(run, reason)

    # -- the record ----------------------------------------------------------------------------

    def _progress(self, backup_id: str) -> BackupProgress:
        run = self._running.get(backup_id)
        if run is not None:
            return BackupProgress(JobState.RUNNING, stored=run.sealed.size if run.sealed else 0)
        if backup_id in self._ended:
            return self._ended[backup_id]
        try:
            data = json.loads(self._outcome(backup_id).read_text())
        except FileNotFoundError:
            return BackupProgress(JobState.UNKNOWN)
        except (OSError, ValueError) as exc:
            return BackupProgress(JobState.FAILED, error=f"its outcome is unreadable: {exc}")
        progress: BackupProgress = codec.from_wire(BackupProgress, data, "outcome")
        if progress.state is JobState.RUNNING:
            # Recorded as started, never as ended, and not running here: an earlier agent
            # died while it ran.
            return BackupProgress(JobState.FAILED, error=AGENT_DIED)
        return progress

    def _outcome(self, backup_id: str) -> Path:
        if not backup_id.replace("-", "").isalnum():
            raise ValueError("a backup id is letters, digits and hyphens")
        return self.state_dir / f"{backup_id}.json"

    def _write(self, backup_id: str, progress: BackupProgress) -> None:
        """Raises OSError."""
        path = self._outcome(backup_id)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.new")
        tmp.write_text(json.dumps(codec.to_wire(progress)))
        tmp.replace(path)

    def _remember(self, backup_id: str, outcome: BackupProgress) -> None:
        """Keep an outcome (in memory too: it holds for this agent's lifetime even when the
        state directory cannot be written)."""
        self._ended[backup_id] = outcome
        try:
            self._write(backup_id, outcome)
        except OSError as exc:
            LOG.error("could not record the outcome of backup %s: %s", backup_id, exc)

    # -- running and stopping ------------------------------------------------------------------

    def _stop(self, run: _Run, reason: str) -> None:
        """Have the backup stop for ``reason``: its tool processes are killed until its worker
        ended (a tool started just after a kill is killed in the next round)."""
        with self._lock:
            if run.done.is_set() or run.reason:
                return
            run.reason = reason
        LOG.warning("stopping backup %s: %s", run.job.backup_id, reason)
        threading.Thread(
            target=self._kill_until_done,
            args=(run,),
            name=f"stop-{run.job.backup_id[:8]}",
            daemon=True,
        ).start()

    @staticmethod
    def _kill_until_done(run: _Run) -> None:
        while True:
            if run.worker is not None:
                kill_children(run.worker)
            if run.done.wait(KILL_ROUND):
                return

    def _run(self, run: _Run) -> None:
        job = run.job
        worker = run.worker = threading.get_native_id()
        outcome = BackupProgress(JobState.FAILED, error="the guest agent is stopping")
        try:
            outcome = self._outcome_of(run)
        finally:
            if run.timer is not None:
                run.timer.cancel()
            # Whatever happened, nothing the backup started outlives it.
            for pid in kill_children(worker):
                LOG.warning("killed process %d left by backup %s", pid, job.backup_id)
            self._end(run, outcome)

    def _end(self, run: _Run, outcome: BackupProgress) -> None:
        job = run.job
        if outcome.state is JobState.COMPLETED:
            LOG.info("backup %s done: %d bytes stored", job.backup_id, outcome.stored)
        else:
            LOG.warning("backup %s failed: %s", job.backup_id, outcome.error)
        with self._lock:
            self._remember(job.backup_id, outcome)
            self._running.pop(job.backup_id, None)
            run.done.set()

    def _outcome_of(self, run: _Run) -> BackupProgress:
        job = run.job
        try:
            result = self._back_up(run)
        except Exception as exc:
            behind = _cove_error_behind(exc)
            if run.reason:
                message = f"the backup was stopped: {run.reason}"
            elif behind is not None:
                if behind is not exc:
                    LOG.warning("backup %s: %s", job.backup_id, behind.message, exc_info=exc)
                message = behind.message
            else:
                LOG.exception("backup %s failed", job.backup_id)
                message = f"an unexpected {type(exc).__name__} in the guest agent (see its log)"
            self._discard(job, stored=False)
            return BackupProgress(JobState.FAILED, error=message)
        if run.reason:
            # It ended as it was being stopped: a stopped backup leaves nothing in the store.
            self._discard(job, stored=True)
            return BackupProgress(JobState.FAILED, error=f"the backup was stopped: {run.reason}")
        return BackupProgress(JobState.COMPLETED, result=result, stored=result.size)

    def _back_up(self, run: _Run) -> BackupResult:
        assert self.engine is not None
        job = run.job
        store = open_store(job.store)
        LOG.info("backing up to %s as %s", store.describe(), job.artifact)
        if run.reason:
            raise GuestError(f"the backup was stopped: {run.reason}")
        if job.wal is not None and isinstance(self.engine, WalEngine):
            # Before the base backup starts, so the WAL a replay on top of it needs is kept.
            self.engine.archive_to(job.wal)
        with self.engine.open_backup(job.parent_meta) as source:
            # The tool's first output waits in its pipe meanwhile. (A backup never runs twice
            # here, so only an earlier agent whose record of it was lost leaves a partial.)
            store.discard_partial(job.artifact)
            sealed = Sealed(_until_stopped(run, source.chunks()), job.seal)
            with self._lock:
                run.sealed = sealed
            size = store.put(job.artifact, sealed)
            meta = dict(source.meta)
            # What the artifact holds once unsealed: what a restore needs room for.
            meta[RAW_SIZE] = str(sealed.read)
        return BackupResult(
            artifact=job.artifact,
            size=size,
            checksum=sealed.checksum,
            key_id=job.seal.key_id,
            meta=meta,
        )

    @staticmethod
    def _discard(job: BackupJob, stored: bool) -> None:
        """Remove what the backup left in the store, as far as the store lets us now (the task
        manager tidies up again, and later, when it cannot)."""
        try:
            store = open_store(job.store)
            store.discard_partial(job.artifact)
            if stored:
                store.delete(job.artifact)
        except (CoveError, ValueError) as exc:
            message = exc.message if isinstance(exc, CoveError) else str(exc)
            LOG.warning("could not tidy up after backup %s: %s", job.backup_id, message)


def _cove_error_behind(exc: BaseException) -> CoveError | None:
    """``exc`` if it is a Cove error, else the Cove error it was raised while handling, if
    any: a clean-up that fails again (a file closed on a full disk) must not hide why the
    backup failed."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, CoveError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _until_stopped(run: _Run, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """``chunks``, ended with GuestError as soon as the backup is being stopped (so the store
    abandons the upload) even when the tool's output looks complete."""
    for chunk in chunks:
        if run.reason:
            raise GuestError(f"the backup was stopped: {run.reason}")
        yield chunk
    if run.reason:
        raise GuestError(f"the backup was stopped: {run.reason}")


def kill_children(thread_id: int) -> list[int]:
    """SIGKILL every child process that the thread ``thread_id`` of this process started;
    returns their pids. Each is signalled through a pidfd taken while it was still listed as
    that thread's child, so a pid reused meanwhile is never signalled."""
    listing = Path(f"/proc/{os.getpid()}/task/{thread_id}/children")

    def listed() -> set[str]:
        try:
            return set(listing.read_text().split())
        except OSError:  # the thread ended: its children went to another thread or were reaped
            return set()

    killed = []
    for pid in sorted(listed()):
        try:
            pidfd = os.pidfd_open(int(pid))
        except OSError:
            continue  # gone meanwhile
        try:
            if pid in listed():
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                killed.append(int(pid))
        except OSError:
            pass  # it ended meanwhile
        finally:
            os.close(pidfd)
    return killed


def restore(engine: BackupEngine | None, job: RestoreJob) -> None:
    """Rebuild the server's data from ``job``'s chain (server stopped).

    Raises OperationNotSupported, ArtifactMissing, ArtifactDamaged, StoreUnavailable and what
    the engine raises.
    """
    if engine is None:
        raise OperationNotSupported("This datastore has no backups to restore.")
    if len(job.chain) > 1 and not engine.incremental:
        raise OperationNotSupported("This datastore has no incremental backups.")
    store = open_store(job.store)
    LOG.info("restoring %d backup(s) from %s", len(job.chain), store.describe())
    for piece in job.chain:  # a missing piece fails the restore before any data is written
        if store.size(piece.artifact) is None:
            raise ArtifactMissing(f"the artifact {piece.artifact} is not in the {store.describe()}")

    def opened(piece: RestorePiece) -> Generator[bytes]:
        # Each piece is opened only when the engine reaches it: a chain's later pieces do not
        # hold connections to the store while the earlier ones are applied.
        with unsealed(store.get(piece.artifact), piece.seal, piece.checksum) as stream:
            yield from stream

    streams = [opened(piece) for piece in job.chain]
    pieces = [
        RestoreSource(chunks=c, meta=dict(p.meta)) for c, p in zip(streams, job.chain, strict=True)
    ]
    try:
        if isinstance(engine, WalEngine):
            engine.restore_with_wal(pieces, job.wal)
        elif job.wal is not None:
            raise OperationNotSupported("This datastore has no point-in-time restore.")
        else:
            engine.restore(pieces)
    finally:
        for stream in streams:  # stops the decoding threads of a piece left unfinished
            stream.close()
