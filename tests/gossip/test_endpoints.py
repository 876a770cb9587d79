"""Endpoints from peers: only host:port over TCP is ever dialled."""

from __future__ import annotations

import pytest

from fedledger.errors import PeerUnavailable
from fedledger.gossip.endpoints import InvalidEndpoint, is_public, parse_endpoint


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("127.0.0.1:7001", "127.0.0.1:7001"),
        ("localhost:1", "localhost:1"),
        ("Node-1.Example.COM:65535", "node-1.example.com:65535"),
        ("[::1]:50051", "[::1]:50051"),
        ("[0:0:0:0:0:0:0:1]:5", "[::1]:5"),
        ("unix:80", "unix:80"),  # a host named "unix": dialled via dns:///, never a socket
    ],
)
def test_accepted(text: str, canonical: str) -> None:
    assert parse_endpoint(text) == canonical


@pytest.mark.parametrize(
    "text",
    [
        "unix:/var/run/docker.sock",
        "unix:///tmp/sock:80",
        "unix-abstract:name",
        "vsock:3:50051",
        "dns:///example.com:80",
        "ipv4:127.0.0.1:80",
        "http://example.com:80",
        "127.0.0.1",
        "127.0.0.1:0",
        "127.0.0.1:65536",
        "127.0.0.1:0080",
        "127.0.0.1:+80",
        "127.1:80",
        "0x7f.0.0.1:80",
        "010.0.0.1:80",
        "2130706433:80",
        "256.0.0.1:80",
        "::1:80",
        "[::1:80",
        "[::1%lo]:80",
        "[example.com]:80",
        "a..b:80",
        "-a.b:80",
        "a_b:80",
        "host name:80",
        "host:80/path",
        "h\u00e9:80",
        ":80",
        "",
        "x" * 300 + ":80",
        ("a" * 64) + ".com:80",
    ],
)
def test_refused(text: str) -> None:
    with pytest.raises(InvalidEndpoint):
        parse_endpoint(text)


def test_invalid_endpoint_is_a_peer_unavailable_and_non_strings_are_refused() -> None:
    assert issubclass(InvalidEndpoint, PeerUnavailable)
    for value in (None, 80, b"127.0.0.1:80"):
        with pytest.raises(InvalidEndpoint):
            parse_endpoint(value)


def test_is_public() -> None:
    assert is_public("8.8.8.8:53")
    assert not is_public("127.0.0.1:80")
    assert not is_public("10.1.2.3:80")
    assert not is_public("[::1]:80")
    assert not is_public("example.com:80")
