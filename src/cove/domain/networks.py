"""The rules an address pool of the local driver obeys, shared by the ``address_pool`` setting
and the networks an operator adds."""

from __future__ import annotations

import ipaddress

from cove.common.text import shown

MIN_ADDRESSES = 4


def loopback_pool(cidr: str) -> ipaddress.IPv4Network:
    """The network ``cidr`` names, if the local driver can use it: an IPv4 loopback network
    (no host bits set) of at least MIN_ADDRESSES addresses, not containing 127.0.0.1 (where
    system services listen).

    Raises ValueError with a message fit for the user.
    """
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise ValueError(f"'{shown(cidr)}' is not a network in CIDR notation: {exc}") from exc
    if not isinstance(net, ipaddress.IPv4Network) or not net.is_loopback:
        raise ValueError(f"{net} is not an IPv4 loopback network (127.0.0.0/8)")
    if ipaddress.ip_address("127.0.0.1") in net:
        raise ValueError(f"{net} must not contain 127.0.0.1")
    if net.num_addresses < MIN_ADDRESSES:
        raise ValueError(f"{net} is too small: it needs at least {MIN_ADDRESSES} addresses")
    return net
