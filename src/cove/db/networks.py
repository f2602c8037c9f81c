"""Networks: for the local driver, named loopback address pools; one of them is the default.

This module owns the ``networks`` table: creating, listing, choosing the default and deleting
networks, keeping the network named ``default`` in step with the ``address_pool`` setting, and
turning a create request's Trove ``nics`` into the network the instance attaches to.

Networks are shared by every project (as an operator's provider networks are): any project may
list them and attach instances to them. Networks never overlap, so an address belongs to at
most one of them and address allocations need no network column.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cove.common.errors import BadRequest, ConfigurationError, Conflict, NetworkNotFound
from cove.common.ids import new_id, utcnow
from cove.common.settings import Settings
from cove.common.text import shown
from cove.db.models import Instance, Network
from cove.domain import names
from cove.domain.networks import loopback_pool

LOG = logging.getLogger(__name__)

#: The network made from ``address_pool`` at first start; its CIDR follows that setting.
DEFAULT_NAME = "default"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_UUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_NET_KEYS = ("net-id", "network_id")
_NIC_KEYS = frozenset({*_NET_KEYS, "subnet_id", "ip_address"})


# -- validation --------------------------------------------------------------------------------


def check_cidr(cidr: str) -> ipaddress.IPv4Network:
    """The network ``cidr`` names, if the local driver can use it (see
    cove.domain.networks.loopback_pool). Raises BadRequest."""
    try:
        return loopback_pool(cidr)
    except ValueError as exc:
        raise BadRequest(f"Invalid network: {exc}.") from exc


def _text(value: str, what: str) -> str:
    """``value``, if it is valid Unicode text (JSON and argv can carry lone surrogates, which
    can be neither stored nor shown). Raises BadRequest, whose message never echoes it."""
    try:
        return names.unicode_text(value, what)
    except ValueError as exc:
        raise BadRequest(f"{exc}.") from None


def _check_name(name: str) -> str:
    _text(name, "A network name")
    if not _NAME.fullmatch(name):
        raise BadRequest(
            f"Invalid network name '{shown(name)}': 1 to 64 letters, digits, '_', '.' "
            "or '-', starting with a letter or digit."
        )
    if _UUID.fullmatch(name):
        raise BadRequest(f"Invalid network name '{name}': a name must not look like an id.")
    return name


def _overlapping(
    s: Session, net: ipaddress.IPv4Network, exclude_id: str | None = None
) -> Network | None:
    for other in s.scalars(select(Network).order_by(Network.name)):
        if other.id != exclude_id and ipaddress.ip_network(other.cidr).overlaps(net):
            return other
    return None


# -- queries -----------------------------------------------------------------------------------


def list_networks(s: Session) -> list[Network]:
    """Every network, by name."""
    return list(s.scalars(select(Network).order_by(Network.name)))


def find_network(s: Session, ref: str) -> Network:
    """The network whose id or name is ``ref``. Raises NetworkNotFound, or BadRequest for a
    ``ref`` that is not valid Unicode text."""
    _text(ref, "A network id or name")
    network = s.get(Network, ref) or s.scalar(select(Network).where(Network.name == ref))
    if network is None:
        raise NetworkNotFound(f"Network '{shown(ref)}' cannot be found.")
    return network


def default_network(s: Session) -> Network | None:
    return s.scalar(select(Network).where(Network.is_default.is_(True)).order_by(Network.name))


def network_name(s: Session, network_id: str | None) -> str | None:
    """The name of the network an instance row names (the default one for a row that names
    none); None when there is no such network. Reads through the session's identity map, so
    a page of instances costs one query per network."""
    network = s.get(Network, network_id) if network_id else default_network(s)
    return network.name if network else None


def address_pool(s: Session, network_id: str | None, settings: Settings) -> str:
    """The CIDR an instance's address is allocated from: its network's, or for a row that
    names none, the default network's (``address_pool`` before any network exists)."""
    network = s.get(Network, network_id) if network_id else default_network(s)
    return network.cidr if network else settings.address_pool


def _users(s: Session, network: Network) -> int:
    """How many live instances are attached to ``network``."""
    query = select(func.count()).where(
        Instance.network_id == network.id, Instance.deleted.is_(False)
    )
    return int(s.scalar(query) or 0)


# -- changes -----------------------------------------------------------------------------------


def create_network(s: Session, name: str, cidr: str, default: bool = False) -> Network:
    """Add a network; with ``default`` it becomes the default one.

    Raises BadRequest (invalid name or CIDR) or Conflict (the name is taken, or the CIDR
    overlaps another network's).
    """
    _check_name(name)
    net = check_cidr(cidr)
    if s.scalar(select(Network.id).where(Network.name == name)) is not None:
        raise Conflict(f"A network named '{name}' already exists.")
    clash = _overlapping(s, net)
    if clash is not None:
        raise Conflict(f"Network {net} overlaps network '{clash.name}' ({clash.cidr}).")
    network = Network(id=new_id(), name=name, cidr=str(net), is_default=False, created=utcnow())
    try:
        with s.begin_nested():
            s.add(network)
    except IntegrityError as exc:  # a concurrent create took the name or the CIDR
        raise Conflict(f"A network named '{name}' or with CIDR {net} already exists.") from exc
    if default:
        set_default_network(s, network.id)
    return network


def set_default_network(s: Session, ref: str) -> Network:
    """Make the network named or numbered ``ref`` the default. Raises NetworkNotFound."""
    network = find_network(s, ref)
    s.execute(update(Network).where(Network.id != network.id).values(is_default=False))
    network.is_default = True
    s.flush()
    return network


def delete_network(s: Session, ref: str) -> None:
    """Delete a network no live instance uses.

    Raises NetworkNotFound, or Conflict for the default network or one still in use.
    """
    network = find_network(s, ref)
    if network.is_default:
        raise Conflict(
            f"Network '{network.name}' is the default network; make another one the default first."
        )
    users = _users(s, network)
    if users:
        raise Conflict(f"Network '{network.name}' is in use by {users} instance(s).")
    # Deleted instances keep their rows; they forget the network so the row can go.
    s.execute(
        update(Instance)
        .where(Instance.network_id == network.id, Instance.deleted.is_(True))
        .values(network_id=None)
    )
    s.delete(network)
    s.flush()


def sync_default_network(s: Session, settings: Settings) -> Network:
    """Bring the networks in step with ``address_pool``; run at every start.

    With no network at all, make the network ``default`` from ``address_pool`` and the
    default. Otherwise the network named ``default`` takes ``address_pool`` as its CIDR when
    they differ: the setting is the operator's word for it (another network may have been
    made the default since; that choice is kept). Instances recorded before networks existed
    are attached to it. Returns the default network.

    Raises ConfigurationError when ``address_pool`` overlaps another network.
    """
    pool = ipaddress.IPv4Network(settings.address_pool)
    seeded = s.scalar(select(Network).where(Network.name == DEFAULT_NAME))
    if seeded is None and s.scalar(select(Network.id).limit(1)) is None:
        seeded = create_network(s, DEFAULT_NAME, str(pool), default=True)
        LOG.info("network '%s' created from address_pool %s", DEFAULT_NAME, pool)
    elif seeded is not None and seeded.cidr != str(pool):
        _move(s, seeded, pool)
    current = default_network(s)
    if current is None:  # never left so by Cove; repair rather than refuse every create
        current = set_default_network(s, seeded.id if seeded else list_networks(s)[0].id)
    if seeded is not None:
        s.execute(
            update(Instance)
            .where(Instance.network_id.is_(None), Instance.deleted.is_(False))
            .values(network_id=seeded.id)
        )
    return current


def _move(s: Session, network: Network, pool: ipaddress.IPv4Network) -> None:
    clash = _overlapping(s, pool, exclude_id=network.id)
    if clash is not None:
        raise ConfigurationError(
            f"address_pool {pool} overlaps network '{clash.name}' ({clash.cidr}): choose "
            f"another pool, or delete that network with 'cove-manage network delete'."
        )
    outside = [
        address
        for address in s.scalars(
            select(Instance.address).where(
                Instance.network_id == network.id,
                Instance.deleted.is_(False),
                Instance.address.is_not(None),
            )
        )
        if address and ipaddress.ip_address(address) not in pool
    ]
    LOG.warning(
        "network '%s' follows address_pool: %s -> %s%s",
        network.name,
        network.cidr,
        pool,
        f"; {len(outside)} instance(s) keep addresses outside it" if outside else "",
    )
    network.cidr = str(pool)
    s.flush()


# -- create requests ---------------------------------------------------------------------------


def resolve_network(s: Session, nics: list[Any]) -> Network:
    """The network a create asks for in Trove's ``nics``, or the default one.

    ``[]`` means the default network; ``[{"net-id": ref}]`` or ``[{"network_id": ref}]`` (what
    the OpenStack client sends) names one by id or name. Raises BadRequest for anything else:
    an unknown network, more than one NIC, an item that is not an object, an unknown key, a
    subnet or fixed address (Cove chooses addresses itself), no default network, or a key or
    reference that is not valid Unicode text.
    """
    if not nics:
        network = default_network(s)
        if network is None:
            raise BadRequest("No default network is defined.")
        return network
    if len(nics) > 1:
        raise BadRequest(f"Cove attaches an instance to one network; {len(nics)} NICs were given.")
    ref = _network_ref(nics[0])
    try:
        return find_network(s, ref)
    except NetworkNotFound as exc:
        raise BadRequest(exc.message) from None


def _network_ref(nic: Any) -> str:
    if not isinstance(nic, dict):
        raise BadRequest('Each item of \'nics\' must be an object such as {"net-id": "<network>"}.')
    for key in nic:
        _text(str(key), "A key of 'nics'")
    unknown = sorted(shown(k) for k in nic if k not in _NIC_KEYS)
    if unknown:
        raise BadRequest(
            f"Unknown key(s) in 'nics': {', '.join(unknown)}. "
            "Allowed: net-id, network_id, subnet_id, ip_address."
        )
    if nic.get("subnet_id") not in (None, ""):
        raise BadRequest("Cove does not support choosing a subnet ('subnet_id'); name a network.")
    if nic.get("ip_address") not in (None, ""):
        raise BadRequest(
            "Cove does not support choosing a fixed address ('ip_address'); "
            "an address is allocated from the network."
        )
    refs = [nic[k] for k in _NET_KEYS if k in nic]
    if not refs:
        raise BadRequest('A NIC must name a network: {"net-id": "<network id or name>"}.')
    if not all(isinstance(r, str) and r for r in refs):
        raise BadRequest("A NIC's network must be given as a network id or name (a string).")
    if len(set(refs)) > 1:
        raise BadRequest("'net-id' and 'network_id' name different networks.")
    return str(refs[0])
