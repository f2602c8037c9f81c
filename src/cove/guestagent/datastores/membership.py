"""A cluster member's record of its cluster (``conf/cluster.json``: the cluster's id and its
members' addresses), kept by every datastore that clusters, so each later start of its
server finds its cluster. What a start does with it is the datastore's."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from cove.common.errors import GuestError
from cove.domain.guest import ClusterMember

#: The membership file, in the instance's conf directory.
MEMBERSHIP_FILE = "cluster.json"


def record(conf_dir: Path, member: ClusterMember) -> None:
    """Keep ``member``'s cluster and peers (not whether it begins the cluster, nor its
    secret), written whole (a 0600 temporary file renamed). Raises GuestError."""
    text = json.dumps({"cluster_id": member.cluster_id, "peers": sorted(member.peers)})
    try:
        fd, tmp = tempfile.mkstemp(dir=conf_dir, prefix=f".{MEMBERSHIP_FILE}.")  # mode 0600
        with os.fdopen(fd, "w") as fh:
            fh.write(text + "\n")
        os.replace(tmp, conf_dir / MEMBERSHIP_FILE)
    except OSError as exc:
        raise GuestError(f"cannot record the cluster membership: {exc.strerror}") from exc


def read(conf_dir: Path) -> ClusterMember | None:
    """The recorded membership; None when the server is no cluster member. Raises
    GuestError when the record cannot be read."""
    path = conf_dir / MEMBERSHIP_FILE
    try:
        data = json.loads(path.read_text())
        return ClusterMember(cluster_id=str(data["cluster_id"]), peers=list(data["peers"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GuestError(f"cannot read the cluster membership {path}: {exc}") from exc


def is_member(conf_dir: Path) -> bool:
    """Whether the server is a cluster member: its membership is recorded."""
    return (conf_dir / MEMBERSHIP_FILE).is_file()
