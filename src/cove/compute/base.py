"""The compute driver contract: what Cove asks of the place an instance runs in.

A driver plays Nova's part for Cove. For each instance it provides a place to run (a directory,
a pod, a VM), makes the instance's address reachable, and runs the guest agent there. The task
manager is its only caller.

* ``create`` is idempotent: calling it again for the same spec repairs what is missing and
  (re)starts the guest agent if it is not running. It returns once the agent has been started,
  not once the database is ready (the agent reports that over the bus).
* ``ensure_running`` is the re-attach step: it is called for every live instance when the task
  manager starts and then periodically; it starts the agent again when it died and says so.
  It must be cheap when everything runs.
* ``state`` is a quick look (no waiting) at the place: ACTIVE while the agent runs.
* ``reconcile`` puts a running instance's place back as its settings say (limits the kernel
  could not apply yet, processes found outside the instance's limits); the monitor calls it
  for every running instance, so it must be cheap when all holds.
* ``update`` rewrites the guest's settings (flavor sizes, volume size, configuration overrides)
  of a placed instance without restarting anything; the task manager then asks the guest agent to
  reload them (``apply_configuration``). A driver that sizes the place itself (a cgroup, a
  volume) resizes it here; a volume only ever grows.
* ``destroy`` is idempotent and leaves nothing behind: processes, files and the volume.
* ``serve_endpoints`` and ``guard`` are given the whole wanted state of the host's endpoints
  (groups, clusters, published instances) and of its filter on who may connect, every 0.2 s by
  the task manager's coordinator: cheap when nothing changed, False when the driver has
  neither to offer.
* Drivers raise ``ConfigurationError`` at construction when they cannot work on this host,
  naming what is missing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from cove.compute.endpoints import ClusterEndpoint, GroupEndpoint, PublishedEndpoint
from cove.compute.firewall import Guarded
from cove.domain.guest import GuestSettings
from cove.domain.status import ComputeState


class ComputeDriver(ABC):
    name: str = ""

    @abstractmethod
    def create(self, spec: GuestSettings) -> None:
        """Place the instance and start its guest agent."""

    @abstractmethod
    def update(self, spec: GuestSettings) -> GuestSettings | None:
        """Rewrite the settings of a placed instance; starts and restarts nothing. Returns the
        settings it replaced (None when they could not be read), so a caller whose change the
        guest refuses can put them back."""

    @abstractmethod
    def ensure_running(self, instance_id: str) -> bool:
        """Start the guest agent again if it is not running; True if it had to."""

    @abstractmethod
    def state(self, instance_id: str) -> ComputeState:
        """What the place looks like right now."""

    def reconcile(self, instance_id: str) -> None:
        """Make the running instance's place hold what its settings say; the base class has
        nothing to hold."""
        return None

    @abstractmethod
    def destroy(self, instance_id: str) -> None:
        """Stop everything of the instance and remove it."""

    def fence(self, instance_id: str) -> bool:
        """Stop the instance's database server and guest agent at once and for good, as a
        failover needs of an old primary: no graceful shutdown (it could wait on a paused
        process), so a process under SIGSTOP ends too. The monitor starts the agent again
        later, which then finds its place taken and leaves the server stopped. Idempotent;
        False when the driver cannot reach the place (the epoch fences it then: its agent's
        next renewal of the lease is refused)."""
        return False

    def serve_endpoints(
        self,
        groups: Sequence[GroupEndpoint],
        clusters: Sequence[ClusterEndpoint] = (),
        published: Sequence[PublishedEndpoint] = (),
    ) -> bool:
        """Make this host's endpoints forward exactly for ``groups``, ``clusters`` and
        ``published`` (``compute/endpoints.py``): cheap when nothing changed, a new primary
        without dropping other connections.
        False when the driver has no endpoints to offer. Raises OSError or
        subprocess.SubprocessError when they cannot be served (asked again soon)."""
        return False

    def guard(self, guarded: Sequence[Guarded]) -> bool:
        """Make this host refuse connections to each of ``guarded`` from outside its networks,
        and filter no other instance (``compute/firewall.py``): cheap when nothing changed.
        False when the driver cannot filter here. Raises OSError when the filter cannot be
        set (asked again soon)."""
        return False

    def close(self) -> None:
        """Give back what the driver holds for creates to come (spare places); instances run
        on. Idempotent; the base class holds nothing."""
        return None

    def address_usable(self, address: str, port: int) -> bool:
        """Whether nothing outside Cove's records already holds ``address:port``."""
        return True
