"""The SSRF guard of webhook delivery: which URLs may be called, and at which addresses.

A webhook URL comes from a client, so the worker must never be turned against mjq's own
network. The rules (docs/architecture.md, "Webhooks"):

- only http and https, at most MAX_URL_CHARS characters, no `user:password@`;
- the host is a domain name, never an IP literal in any spelling (`2130706433`,
  `0x7f000001`, `0177.0.0.1`, `127.1`, `[::ffff:127.0.0.1]`, fullwidth digits …), as payment
  providers require;
- at every attempt the name is resolved once and every address must be public
  (`is_global`, and not multicast, reserved, CGNAT or an IPv6 form embedding a private IPv4);
  the connection then goes to a checked address (workers/webhook_http.py), never through a
  second lookup, and redirects are never followed.

`allow_private` (MJQ_WEBHOOK_ALLOW_PRIVATE, development and tests only) admits loopback and
private addresses and IP-literal hosts; unspecified, multicast and broadcast addresses stay
refused even then.

Hand-written rather than taken from requests-hardened 1.3.0, whose technique the HTTP side
follows: that library checks only the first address getaddrinfo returns and only with
`is_private` (which lets multicast and NAT64/6to4 spellings of private addresses through),
its resolver cannot be replaced in tests, and it relies on requests' per-operation timeout.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from config.errors import MjqError

#: Longest webhook URL, in characters.
MAX_URL_CHARS = 2048
SCHEMES = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: (host, port) -> the addresses the name resolves to, as strings. Tests pass their own.
Resolver = Callable[[str, int], Sequence[str]]

# Ranges `is_global` lets through in Python 3.11 but that must never be called: IETF protocol
# assignments, the 6to4 relay anycast, benchmarking, CGNAT, IPv4-compatible IPv6, segment
# routing, ORCHIDv2 and the IPv6 documentation range.
_BLOCKED_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "192.0.0.0/24", "192.88.99.0/24", "198.18.0.0/15", "100.64.0.0/10",
    "::/96", "5f00::/16", "2001:20::/28", "3fff::/20",
))
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_NUMERIC_LABEL_RE = re.compile(r"^(?:[0-9]+|0x[0-9a-f]*)$")


class UrlRefused(MjqError):
    """Raised when a webhook URL or the address it resolves to may not be called.

    `permanent` is True when the URL itself is wrong (no later attempt can succeed) and False
    when only this resolution was refused (DNS may change before the next attempt).
    """

    def __init__(self, message: str, permanent: bool = True) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True)
class Target:
    """A webhook URL taken apart: what to resolve, where to connect, what to send as Host."""

    scheme: str
    host: str
    port: int
    path: str
    #: The address when the host is an IP literal (only ever with allow_private).
    literal: IPAddress | None = None

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == SCHEMES[self.scheme] else f"{host}:{self.port}"


def parse_url(url: str, allow_private: bool = False) -> Target:
    """Check everything about `url` that needs no network: scheme, length, host spelling.

    Raises:
        UrlRefused (permanent): the message says what is wrong, phrased to follow the field's name.
    """
    if not isinstance(url, str) or not url:
        raise UrlRefused("must be an http or https URL")
    if len(url) > MAX_URL_CHARS:
        raise UrlRefused(f"is longer than {MAX_URL_CHARS} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise UrlRefused("must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
    except ValueError:  # an unbalanced or invalid [host], or a netloc NFKC turns into '/', '?', '#', '@' or ':'
        raise UrlRefused("has an invalid host") from None
    if parts.scheme not in SCHEMES:
        raise UrlRefused("must be an http or https URL")
    if "@" in parts.netloc:
        raise UrlRefused("must not carry user:password@ before the host")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UrlRefused("must name a host")
    try:
        port = parts.port or SCHEMES[parts.scheme]
    except ValueError:
        raise UrlRefused("has an invalid port") from None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    literal = ip_literal(host)
    if literal is None:
        name = domain_name(host)
        # IDNA maps fullwidth digits and ideographic full stops to ASCII: `１２７。０。０。１` is 127.0.0.1.
        literal = ip_literal(name)
        if literal is None:
            return Target(parts.scheme, name, port, path)
    if not allow_private:
        raise UrlRefused("must name a domain, not an IP address")
    return Target(parts.scheme, str(literal), port, path, literal)


def ip_literal(host: str) -> IPAddress | None:
    """The address `host` spells, in any form a browser or inet_aton accepts, or None for a name.

    A host whose last label is numeric is an IPv4 address to URL parsers (WHATWG): when it is
    not a valid one it is refused rather than resolved.
    """
    if ":" in host:
        if "%" in host:
            raise UrlRefused("must not carry an IPv6 zone id")
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            raise UrlRefused("has an invalid IPv6 address") from None
    if _NUMERIC_LABEL_RE.match(host.rsplit(".", 1)[-1]):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            raise UrlRefused("has a numeric host that is not a valid address") from None
    return None


def domain_name(host: str) -> str:
    """`host` as an ASCII (IDNA) domain name, lower case. Raises UrlRefused when it is not one."""
    try:
        ascii_host = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise UrlRefused("has an invalid host name") from None
    labels = ascii_host.split(".")
    if len(ascii_host) > 253 or not all(_LABEL_RE.match(label) for label in labels):
        raise UrlRefused("has an invalid host name")
    return ascii_host


def refusal(address: IPAddress, allow_private: bool) -> str | None:
    """Why `address` may not be called, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = embedded_ipv4(address)
        if embedded is not None:
            reason = refusal(embedded, allow_private)
            return f"{address} maps to {reason}" if reason else None
    if address.is_unspecified or address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
        return f"{address} is not a unicast address"
    if allow_private:
        return None
    if not address.is_global or address.is_reserved or any(address in net for net in _BLOCKED_NETWORKS):
        return f"{address} is not a public address"
    return None


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv4-mapped, NAT64 or 6to4 IPv6 address leads to, if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _SIX_TO_FOUR:
        return ipaddress.IPv4Address((int(address) >> 80) & 0xFFFFFFFF)
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for `host` (TCP), in its order, without duplicates."""
    found: list[str] = []
    for _family, _type, _proto, _name, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        address = str(sockaddr[0]).split("%", 1)[0]
        if address not in found:
            found.append(address)
    return found


def checked_addresses(target: Target, resolver: Resolver, allow_private: bool = False) -> list[IPAddress]:
    """Resolve `target` once and return its addresses, every one of them allowed.

    Raises:
        UrlRefused (not permanent): the name does not resolve, or one of its addresses is refused
        (all are refused then: a name that also points inward is not called at all).
    """
    if target.literal is not None:
        names: Sequence[str] = [str(target.literal)]
    else:
        try:
            names = resolver(target.host, target.port)
        except (OSError, UnicodeError) as exc:
            raise UrlRefused(f"{target.host} does not resolve: {exc}", permanent=False) from None
    if not names:
        raise UrlRefused(f"{target.host} resolves to no address", permanent=False)
    addresses = []
    for name in names:
        try:
            address = ipaddress.ip_address(name)
        except ValueError:
            raise UrlRefused(f"{target.host} resolved to {name!r}, not an address", permanent=False) from None
        reason = refusal(address, allow_private)
        if reason:
            raise UrlRefused(f"{target.host} resolves to {reason}", permanent=False)
        addresses.append(address)
    return addresses
