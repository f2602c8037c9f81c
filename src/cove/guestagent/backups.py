"""Backups and restores in the guest agent: the pipeline and the jobs.

A backup streams the engine's tool output (``BackupEngine.open_backup``) through compression
and sealing (``cove.storage.sealed``) straight into the store: nothing of it is kept on local
disk or in memory beyond one chunk and one upload part. It runs in a thread of its own, one at
a time per instance, while the server keeps serving; the task manager starts it and asks how it
goes (``start``, ``progress``). An outcome is written to the agent's own directory, so a task
manager taking over after the end still learns it; a backup that was running when the agent
died reads as UNKNOWN there, and the task manager fails it.

A restore reads each artifact of the chain back through the same seal, which checks every
frame and the recorded checksum, and hands the engine the opened streams; any damage fails the
restore before the server starts on it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from cove.common.errors import CoveError, GuestError, OperationNotSupported
from cove.domain.backups import (
    BackupJob,
    BackupProgress,
    BackupResult,
    JobState,
    RestoreJob,
)
from cove.guestagent.datastores.base import BackupEngine, RestoreSource
from cove.rpc import codec
from cove.storage import open_store
from cove.storage.sealed import Sealed, unsealed

LOG = logging.getLogger(__name__)


class BackupJobs:
    """The backups of one instance: at most one running, outcomes kept in ``state_dir``."""

    def __init__(self, engine: BackupEngine | None, state_dir: Path) -> None:
        self.engine = engine
        self.state_dir = state_dir
        self._lock = threading.Lock()
        self._running: dict[str, Sealed | None] = {}

    def start(self, job: BackupJob) -> BackupProgress:
        """Start ``job`` unless it ran or runs already (then its progress, as ``progress``).

        Raises OperationNotSupported (no backups here, or no incrementals), GuestError when
        another backup runs.
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
            self._running[job.backup_id] = None
        worker = threading.Thread(
            target=self._run, args=(job,), name=f"backup-{job.backup_id[:8]}", daemon=True
        )
        worker.start()
        return BackupProgress(JobState.RUNNING)

    def progress(self, backup_id: str) -> BackupProgress:
        with self._lock:
            return self._progress(backup_id)

    def _progress(self, backup_id: str) -> BackupProgress:
        if backup_id in self._running:
            sealed = self._running[backup_id]
            return BackupProgress(JobState.RUNNING, stored=sealed.size if sealed else 0)
        try:
            data = json.loads(self._outcome(backup_id).read_text())
        except FileNotFoundError:
            return BackupProgress(JobState.UNKNOWN)
        except (OSError, ValueError) as exc:
            return BackupProgress(JobState.FAILED, error=f"its outcome is unreadable: {exc}")
        progress: BackupProgress = codec.from_wire(BackupProgress, data, "outcome")
        return progress

    def _outcome(self, backup_id: str) -> Path:
        if not backup_id.replace("-", "").isalnum():
            raise ValueError("a backup id is letters, digits and hyphens")
        return self.state_dir / f"{backup_id}.json"

    def _run(self, job: BackupJob) -> None:
        try:
            result = self._back_up(job)
            outcome = BackupProgress(JobState.COMPLETED, result=result, stored=result.size)
            LOG.info("backup %s done: %d bytes stored", job.backup_id, result.size)
        except Exception as exc:
            message = exc.message if isinstance(exc, CoveError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, CoveError):
                LOG.exception("backup %s failed", job.backup_id)
            else:
                LOG.warning("backup %s failed: %s", job.backup_id, message)
            outcome = BackupProgress(JobState.FAILED, error=message)
        self._record(job.backup_id, outcome)

    def _back_up(self, job: BackupJob) -> BackupResult:
        assert self.engine is not None
        store = open_store(job.store)
        store.discard_partial(job.artifact)
        LOG.info("backing up to %s as %s", store.describe(), job.artifact)
        with self.engine.open_backup(job.parent_meta) as source:
            sealed = Sealed(source.chunks(), job.seal)
            with self._lock:
                self._running[job.backup_id] = sealed
            size = store.put(job.artifact, sealed)
            meta = dict(source.meta)
        return BackupResult(
            artifact=job.artifact,
            size=size,
            checksum=sealed.checksum,
            key_id=job.seal.key_id,
            meta=meta,
        )

    def _record(self, backup_id: str, outcome: BackupProgress) -> None:
        path = self._outcome(backup_id)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_name(f".{path.name}.new")
            tmp.write_text(json.dumps(codec.to_wire(outcome)))
            tmp.replace(path)
        except OSError as exc:
            LOG.error("could not record the outcome of backup %s: %s", backup_id, exc)
        finally:
            with self._lock:
                self._running.pop(backup_id, None)


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

    def opened(index: int) -> Iterator[bytes]:
        piece = job.chain[index]
        return unsealed(store.get(piece.artifact), piece.seal, piece.checksum)

    engine.restore(
        [RestoreSource(chunks=opened(i), meta=dict(p.meta)) for i, p in enumerate(job.chain)]
    )
