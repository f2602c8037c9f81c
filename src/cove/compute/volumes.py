"""The local driver's volumes: one XFS filesystem per instance, in an image file of the
volume's size, loop-mounted on the instance's directory (``docs/architecture.md``, "Limits").

XFS rather than ext4: both grow while mounted, but ext4's online resize needs
CAP_SYS_RESOURCE, which containers and sandboxes often withhold from root, where XFS's needs
only CAP_SYS_ADMIN, which mounting needs anyway.

The whole instance directory is the volume, as a Trove VM's disk holds its data, configuration
and logs: a server's files can then be removed and renamed inside it freely (data directories
are emptied and replaced by restores and replicas), and nothing of the instance outside it
grows. Images live in ``<data>/volumes/<id>.img`` (root's, mode 0600), out of the service
user's reach; the filesystem is mounted ``nosuid,nodev``, and its root is given to the
service user.

* :func:`detect` looks once at the host: a :class:`LoopVolumes` when volumes can be made here
  (root, the tools, loop devices), otherwise None and the reason, for the operator's log.
* :meth:`LoopVolumes.ensure` is idempotent: it makes the image and its filesystem when they
  are missing, mounts it when it is not mounted (a host that restarted), and grows it online
  when the size asked for is larger than the image (a volume never shrinks); a grow cut short
  (``<id>.grow`` marks one under way) is finished by the next call. A few tens of milliseconds
  when it makes one; two stats when all holds.
* :meth:`LoopVolumes.remove` removes the image first (the mount keeps it while it lasts, and
  no other task manager of the host can mount it again meanwhile), then unmounts (lazily when
  a process still holds a file) and waits a while for the loop device to let go;
  idempotent.
* :func:`move_mount` moves a mounted volume to another directory (``MS_MOVE``: what runs in
  it keeps its files and working directory); a spare place's volume becomes its instance's.
* Images are sparse: a host whose filesystem fills up before its volumes do fails their
  writes with I/O errors. Keep the data directory's filesystem larger than the volumes sold.

Raises VolumeError naming what failed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from cove.common.errors import VolumeError

LOG = logging.getLogger(__name__)

GIB = 1 << 30
TOOLS = ("mount", "umount", "losetup", "mkfs.xfs", "xfs_growfs")
TIMEOUT = 120
#: Seconds a removal waits for a lazily unmounted volume's loop device to go.
DETACH_WAIT = 30.0


def _run(*argv: str) -> str:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VolumeError(f"{argv[0]} failed: {exc}") from exc
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise VolumeError(f"{argv[0]} failed: {said[-1] if said else done.returncode}")
    return done.stdout


def mounted_device(path: Path) -> str | None:
    """The device mounted on ``path`` (from /proc/self/mountinfo), None when none is."""
    target = str(path)
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            # mount id, parent, major:minor, root, mount point, options..., "-", type, source
            point = fields[4].replace("\\040", " ") if len(fields) > 4 else ""
            if point == target and "-" in fields:
                after = fields[fields.index("-") + 1 :]
                return after[1] if len(after) > 1 else None
    return None


#: mount(2)'s flag to move a mount elsewhere.
MS_MOVE = 8192


class MountNotMovable(VolumeError):
    """The kernel moves no mount here: the mount below it is shared (systemd's default
    propagation)."""


def move_mount(source: Path, target: Path) -> None:
    """Move the mount on ``source`` onto the existing directory ``target``. Raises
    MountNotMovable where the mount holding them is shared (the kernel's ``EINVAL``),
    VolumeError otherwise."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(bytes(source), bytes(target), None, MS_MOVE, None) != 0:
        code = ctypes.get_errno()
        kind = MountNotMovable if code == errno.EINVAL else VolumeError
        raise kind(
            f"cannot move the volume on {source.name} to {target.name}: "
            f"{os.strerror(code)} ({errno.errorcode.get(code, code)})"
        )


def backing_file(device: str) -> str | None:
    """The file a loop device reads (``/dev/loopN``), None when it is no loop device or
    reads nothing."""
    if not device.startswith("/dev/loop"):
        return None
    try:
        return (
            (Path("/sys/block") / Path(device).name / "loop" / "backing_file").read_text().strip()
        )
    except OSError:
        return None


def shared_mount(path: Path, mountinfo: str | None = None) -> str | None:
    """The mount point of the mount holding ``path`` when that mount is shared (its
    propagation: ``shared:N`` in ``mountinfo``, /proc/self/mountinfo's text by default),
    else None."""
    target = str(path.resolve())
    if mountinfo is None:
        try:
            mountinfo = Path("/proc/self/mountinfo").read_text()
        except OSError:
            return None
    best: tuple[str, bool] | None = None
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 7 or "-" not in fields:
            continue
        point = fields[4].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):
            optional = fields[6 : fields.index("-")]
            best = (point, any(f.startswith("shared:") for f in optional))
    return best[0] if best is not None and best[1] else None


class LoopVolumes:
    def __init__(self, images: Path) -> None:
        self.images = images

    def image(self, instance_id: str) -> Path:
        if not instance_id or "/" in instance_id or instance_id in (".", ".."):
            raise ValueError(f"bad instance id {instance_id!r}")
        return self.images / f"{instance_id}.img"

    def exists(self, instance_id: str) -> bool:
        return self.image(instance_id).exists()

    def ensure(self, instance_id: str, base: Path, size_gb: int) -> None:
        """``base`` must be an existing directory in a directory only root may change (the
        caller gives the mounted filesystem's root to the instance's user). Raises
        VolumeError."""
        image = self.image(instance_id)
        if not image.exists():
            self._make(image, size_gb)
        if not os.path.ismount(base):
            if any(base.iterdir()):
                raise VolumeError(f"{base} is not empty; not mounting the volume over it")
            _run("mount", "-o", "loop,nosuid,nodev", str(image), str(base))
            LOG.info("mounted the volume of instance %s (%d GB)", instance_id, size_gb)
        marker = image.with_suffix(".grow")
        if image.stat().st_size < size_gb * GIB or marker.exists():
            self._grow(instance_id, image, marker, base, size_gb)

    def _make(self, image: Path, size_gb: int) -> None:
        partial = image.with_suffix(".new")
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                os.ftruncate(fd, size_gb * GIB)  # sparse: blocks are taken as they are written
            finally:
                os.close(fd)
            _run("mkfs.xfs", "-q", "-f", str(partial))
            os.replace(partial, image)
        except OSError as exc:
            raise VolumeError(f"cannot make the volume image {image.name}: {exc}") from exc
        finally:
            partial.unlink(missing_ok=True)

    def _grow(self, instance_id: str, image: Path, marker: Path, base: Path, size_gb: int) -> None:
        device = mounted_device(base)
        if device is None or not device.startswith("/dev/loop"):
            raise VolumeError(f"the volume of {instance_id} is not mounted from a loop device")
        try:
            marker.touch()  # until the filesystem has grown too
            if image.stat().st_size < size_gb * GIB:
                os.truncate(image, size_gb * GIB)
        except OSError as exc:
            raise VolumeError(f"cannot grow the volume image: {exc.strerror}") from exc
        _run("losetup", "--set-capacity", device)
        _run("xfs_growfs", str(base))
        marker.unlink(missing_ok=True)
        LOG.info("grew the volume of instance %s to %d GB", instance_id, size_gb)

    def remove(self, instance_id: str, base: Path) -> None:
        """Raises VolumeError when the volume stays mounted."""
        device = mounted_device(base)
        # The image goes first: the mount keeps it until it ends, and no other task manager
        # of the host mounts it again meanwhile (they mount what they find unmounted).
        image = self.image(instance_id)
        for path in (image, image.with_suffix(".new"), image.with_suffix(".grow")):
            path.unlink(missing_ok=True)
        if os.path.ismount(base):
            try:
                _run("umount", str(base))
            except VolumeError:
                # A process of the instance still holds a file: it goes once that ends.
                _run("umount", "--lazy", str(base))
        if os.path.ismount(base):
            raise VolumeError(f"the volume of {instance_id} is still mounted")
        if device is not None and device.startswith("/dev/loop"):
            self._await_detach(instance_id, device)

    @staticmethod
    def _await_detach(instance_id: str, device: str) -> None:
        """Wait (up to DETACH_WAIT) for the loop device to let go of the removed image; the
        kernel does once its last user is gone (a lazily unmounted file still open)."""
        attached = Path("/sys/block") / Path(device).name / "loop" / "backing_file"
        deadline = time.monotonic() + DETACH_WAIT
        while attached.exists():
            if time.monotonic() > deadline:
                LOG.warning(
                    "%s still holds the removed volume of instance %s; the kernel frees it "
                    "once the last process using it ends",
                    device,
                    instance_id,
                )
                return
            time.sleep(0.1)


def detect(images: Path) -> tuple[LoopVolumes | None, str]:
    """The host's volumes, or None and why they cannot be had here."""
    if os.geteuid() != 0:
        return None, "Cove does not run as root, and only root mounts volumes here"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return None, f"{', '.join(missing)} missing (Debian's xfsprogs and mount packages)"
    if not Path("/dev/loop-control").exists():
        return None, "the kernel offers no loop devices (/dev/loop-control)"
    images.mkdir(parents=True, exist_ok=True, mode=0o700)
    images.chmod(0o700)
    return LoopVolumes(images), "loop-mounted XFS images"
