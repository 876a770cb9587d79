"""Which endpoints a node may dial: ``host:port`` over TCP, and nothing else.

Endpoints come from peers (a ``hello`` message, a ``join`` on the registry), so they are
hostile input: gRPC would happily dial ``unix:/run/docker.sock``, ``unix-abstract:...``,
``vsock:...`` or a ``dns://resolver/name`` target given as is. :func:`parse_endpoint` accepts
exactly::

    HOST ":" PORT
    HOST = hostname | IPv4 | "[" IPv6 "]"
    PORT = 1..65535, decimal digits, no sign, no leading zero

where a hostname is LDH labels (letters, digits, inner hyphens; 1..63 characters each, at most
253 in all, not all-numeric at the top level), an IPv4 address is four decimal octets in
canonical form, and an IPv6 address is any form :mod:`ipaddress` parses (no zone id). The
result is the canonical text of the endpoint (a hostname lowercased, an IPv6 address
compressed), so two spellings of one endpoint compare equal.

It does not resolve names nor judge *where* an address points (loopback, private ranges):
nodes on one machine talk over 127.0.0.1. Refusing those is a deployment policy; see
:func:`is_public`.
"""

from __future__ import annotations

import ipaddress
import string
from typing import Final

from fedledger.errors import PeerUnavailable

__all__ = [
    "MAX_ENDPOINT_CHARS",
    "InvalidEndpoint",
    "is_public",
    "parse_endpoint",
    "parse_hostname",
]

MAX_ENDPOINT_CHARS: Final = 256
_LDH: Final = frozenset(string.ascii_lowercase + string.digits + "-")
_DIGITS: Final = frozenset(string.digits)


class InvalidEndpoint(PeerUnavailable, ValueError):
    """An endpoint is not ``host:port`` (hostname, IPv4 or [IPv6]); nothing was dialled."""


def parse_hostname(host: object) -> str:
    """A host name (LDH labels, lowercased; not all-numeric): the names of in-process
    (:class:`fedledger.gossip.memory.MemoryNetwork`) endpoints. Not dialable over gRPC, which
    needs a port. :class:`InvalidEndpoint` otherwise."""
    if type(host) is not str or not host.isascii():
        raise InvalidEndpoint(f"not a host name: {str(host)[:40]!r}")
    return _hostname(host)


def _hostname(host: str) -> str:
    name = host.lower()
    if len(name) > 253:
        raise InvalidEndpoint(f"hostname longer than 253 characters: {host[:40]!r}...")
    labels = name.split(".")
    for label in labels:
        if not 1 <= len(label) <= 63 or not _LDH.issuperset(label):
            raise InvalidEndpoint(f"not a hostname or IP address: {host!r}")
        if label[0] == "-" or label[-1] == "-":
            raise InvalidEndpoint(f"not a hostname or IP address: {host!r}")
    if _DIGITS.issuperset(labels[-1]):
        # All-numeric top label: an IPv4 address in a non-canonical form (010.0.0.1,
        # 127.1, 2130706433) that resolvers read differently. Only canonical IPv4 passes.
        raise InvalidEndpoint(f"not a canonical IPv4 address: {host!r}")
    return name


def parse_endpoint(text: object) -> str:
    """The canonical ``host:port`` form of ``text``; :class:`InvalidEndpoint` otherwise."""
    if type(text) is not str:
        raise InvalidEndpoint(f"endpoint: expected a string, got {type(text).__name__}")
    if not 3 <= len(text) <= MAX_ENDPOINT_CHARS or not text.isascii():
        raise InvalidEndpoint(f"endpoint: expected 3..{MAX_ENDPOINT_CHARS} ASCII characters")
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise InvalidEndpoint(f"endpoint: expected host:port, got {text[:80]!r}")
    if not port_text or not _DIGITS.issuperset(port_text) or port_text[0] == "0":
        raise InvalidEndpoint(f"endpoint: bad port {port_text[:10]!r} (expected 1..65535)")
    port = int(port_text[:6])
    if len(port_text) > 5 or not 1 <= port <= 65535:
        raise InvalidEndpoint(f"endpoint: port {port_text[:10]} out of range 1..65535")
    if host.startswith("["):
        if not host.endswith("]"):
            raise InvalidEndpoint(f"endpoint: unbalanced brackets in {text[:80]!r}")
        inner = host[1:-1]
        if "%" in inner:
            raise InvalidEndpoint("endpoint: IPv6 zone ids are not accepted")
        try:
            address = ipaddress.IPv6Address(inner)
        except ValueError:
            raise InvalidEndpoint(f"endpoint: not an IPv6 address: {inner[:60]!r}") from None
        return f"[{address.compressed}]:{port}"
    if ":" in host:
        raise InvalidEndpoint(f"endpoint: scheme or unbracketed IPv6 in {text[:80]!r}")
    if _DIGITS.issuperset(host.replace(".", "")) and host.count(".") == 3:
        try:
            v4 = ipaddress.IPv4Address(host)  # rejects leading zeros and octets > 255
        except ValueError:
            raise InvalidEndpoint(f"endpoint: not an IPv4 address: {host!r}") from None
        return f"{v4}:{port}"
    return f"{_hostname(host)}:{port}"


def is_public(endpoint: str) -> bool:
    """Whether a *parsed* endpoint's host is a globally routable IP address (a hostname:
    False, since resolving it is the dialler's business). A policy helper for deployments
    that refuse to dial loopback and private ranges; tests and local runs use 127.0.0.1."""
    host = endpoint.rpartition(":")[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        return False
