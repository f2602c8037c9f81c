"""A MariaDB server as a member of a Galera cluster: its recorded membership and the settings
it runs with ("Clusters" in docs/architecture.md).

The membership (the cluster's id and its members' addresses) is kept in ``conf/cluster.json``
(``cove.guestagent.datastores.membership``) so every later start finds its cluster; whether
a start begins a new cluster is never recorded: only the first start of a new cluster's
first member does, and a member that started a cluster once must join it afterwards
(starting another would split it in two). A
member that stopped uncleanly (killed, crashed) has its position read back from its own data
before it starts, as Galera's own start scripts do, so it catches up by an incremental
transfer rather than a whole copy.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from cove.common.errors import CommandFailed, GuestError
from cove.domain.guest import ClusterMember, GuestSettings
from cove.domain.parameters import Value
from cove.guestagent import process
from cove.guestagent.datastores.mariadb import conf

LOG = logging.getLogger(__name__)

#: Galera's own ports, on each member's own address: group communication, incremental state
#: transfer, and (the state transfer script's listener) a whole copy.
GROUP_PORT = 4567
IST_PORT = 4568
SST_PORT = 4444

#: How long a member's start may take to answer: a joiner first copies a peer's whole data.
JOIN_TIMEOUT = 3600.0
#: How long reading back the position of a member that stopped uncleanly may take.
RECOVER_TIMEOUT = 300.0

#: Where Debian's galera-4 puts the provider library.
PROVIDERS = (
    Path("/usr/lib/galera/libgalera_smm.so"),
    Path("/usr/lib/libgalera_smm.so"),
    Path("/usr/lib64/galera-4/libgalera_smm.so"),
)


def provider() -> Path:
    """The Galera provider library; raises GuestError when none is installed."""
    for path in PROVIDERS:
        if path.is_file():
            return path
    raise GuestError("Galera is not installed (no libgalera_smm.so; Debian's package is galera-4)")


def settings(config: GuestSettings, member: ClusterMember, admin_password: str) -> dict[str, Value]:
    """The [mysqld] settings of a member. Every address Galera opens is named explicitly on
    the member's own address: left to themselves, they would bind all addresses or the
    host's first one, where another member's would collide on loopback aliases."""
    address = config.address
    options = ";".join(
        [
            f"gmcast.listen_addr=tcp://{address}:{GROUP_PORT}",
            f"ist.recv_addr={address}:{IST_PORT}",
            # A member that was down this long catches up by an incremental transfer.
            f"gcache.size={gcache_mb(config.volume_gb)}M",
        ]
    )
    return {
        "wsrep_on": True,
        "wsrep_provider": str(provider()),
        "wsrep_cluster_name": group_name(member.cluster_id),
        "wsrep_cluster_address": "gcomm://"
        + ",".join(f"{peer}:{GROUP_PORT}" for peer in sorted(member.peers)),
        "wsrep_node_name": config.instance_id,
        "wsrep_node_address": address,
        "wsrep_node_incoming_address": f"{address}:{config.port}",
        "wsrep_provider_options": options,
        "wsrep_sst_method": "mariabackup",
        "wsrep_sst_receive_address": f"{address}:{SST_PORT}",
        # The donor's copying tool signs in as the donor's own agent account (the script
        # hands the password over in its environment, never in argv).
        "wsrep_sst_auth": f"{conf.ADMIN_USER}:{admin_password}",
        # What Galera requires of the servers it replicates between.
        "binlog_format": "ROW",
        # Whole rows in each write-set, as Galera is documented with (and tested here).
        "binlog_row_image": "FULL",
        "default_storage_engine": "InnoDB",
        "innodb_autoinc_lock_mode": 2,
        # Every member writes the cluster's transactions under its own server id: their
        # order across ids is Galera's, not the binary log's.
        "gtid_strict_mode": False,
    }


def group_name(cluster_id: str) -> str:
    """The cluster's name between its servers: Galera's handshake carries at most 31
    characters (a longer name lets the first member begin the cluster alone and fails every
    join), so the id's hexadecimal digits, shortened."""
    return "c" + cluster_id.replace("-", "")[:30]


def sst_section(config: GuestSettings) -> str:
    """The [sst] section: the copy's listener binds the member's own address."""
    return f'[sst]\nsockopt = ",bind={config.address}"\n'


def gcache_mb(volume_gb: int) -> int:
    """The write-set cache: a tenth of the volume, between 64 MB and 1 GB."""
    return max(64, min(1024, volume_gb * 1024 // 10))


#: The state file Galera keeps in the data directory.
STATE_FILE = "grastate.dat"
#: What a server started with ``--wsrep-recover`` logs.
_RECOVERED = re.compile(r"WSREP: Recovered position: ([0-9a-f-]{36}:-?[0-9]+)")


def needs_recovery(data_dir: Path) -> bool:
    """Whether the member's last stop was not clean: its state file names its cluster but no
    position (Galera writes it only at a clean shutdown), so a start would take a whole copy
    from a peer unless the position is recovered from its own data first."""
    try:
        text = (data_dir / STATE_FILE).read_text()
    except OSError:
        return False
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in text.splitlines())
    )
    uuid = fields.get("uuid", "")
    return fields.get("seqno") == "-1" and bool(uuid) and set(uuid) != {"0", "-"}


def recover_position(argv: list[str], log: Path) -> str | None:
    """The position the member's own data holds (``uuid:seqno``), from a run of the server
    with ``--wsrep-recover`` (``argv``: the server's command without it); None when it does
    not say. The run's log goes to ``log``, which is removed afterwards."""
    try:
        process.run([*argv, "--wsrep-recover", f"--log-error={log}"], timeout=RECOVER_TIMEOUT)
        found = _RECOVERED.findall(log.read_text(errors="replace"))
    except (CommandFailed, OSError) as exc:
        LOG.warning("cannot recover the member's position: %s", exc)
        return None
    finally:
        log.unlink(missing_ok=True)
    return found[-1] if found else None
