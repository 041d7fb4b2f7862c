"""One webhook POST: resolve and check (workers/ssrf.py), connect to the checked address, post,
read the status line, all inside one deadline.

Why not requests: its timeout bounds each socket operation, not the attempt, so a receiver
that trickles one byte every few seconds could hold a worker thread for hours; and pinning
the connection to the checked address needs the adapter tricks of requests-hardened. Here
http.client writes to a socket we opened ourselves, whose every send and receive gets only
the time left of the attempt (`_DeadlineSocket`), and the TLS handshake is checked against
the URL's host name (SNI and certificate), not the address. Redirects are never followed:
http.client does not follow them, and a 3xx is reported as what it is.
"""
from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import certifi

from config.errors import MjqError
from workers.ssrf import Resolver, Target, checked_addresses, parse_url, system_resolver

#: Bytes of a receiver's answer body kept for the attempt log.
ANSWER_SNIPPET_BYTES = 256
USER_AGENT = "mjq-webhooks/1"
#: (address, port) -> the (address, port) actually dialled. Identity in production; tests map
#: checked addresses to loopback servers so nothing ever leaves the machine.
Route = Callable[[str, int], tuple[str, int]]


class PostFailed(MjqError):
    """Raised when a POST got no HTTP answer: refused connection, reset, TLS error, deadline."""


@dataclass(frozen=True)
class Answer:
    """What a receiver answered: the status, the headers that steer retries, a bit of the body."""

    status: int
    retry_after: str | None = None
    location: str | None = None
    snippet: str = ""


class _DeadlineMixin:
    """Each send and receive may use only what is left until `deadline` (time.monotonic())."""

    deadline: float = float("inf")

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the attempt's deadline passed")
        self.settimeout(left)  # type: ignore[attr-defined]

    def recv_into(self, *args: Any, **kwargs: Any) -> int:
        self._arm()
        return super().recv_into(*args, **kwargs)  # type: ignore[misc]

    def recv(self, *args: Any, **kwargs: Any) -> bytes:
        self._arm()
        return super().recv(*args, **kwargs)  # type: ignore[misc]

    def sendall(self, *args: Any, **kwargs: Any) -> None:
        self._arm()
        super().sendall(*args, **kwargs)  # type: ignore[misc]

    def send(self, *args: Any, **kwargs: Any) -> int:
        self._arm()
        return super().send(*args, **kwargs)  # type: ignore[misc]


class _DeadlineSocket(_DeadlineMixin, socket.socket):
    pass


class _DeadlineSSLSocket(_DeadlineMixin, ssl.SSLSocket):
    pass


class Transport:
    """Posts webhook bodies under the SSRF rules. One per process; safe to share between threads."""

    def __init__(self, allow_private: bool = False, resolver: Resolver = system_resolver,
                 route: Route | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self.route = route
        self.ssl_context = ssl_context or ssl.create_default_context(cafile=certifi.where())
        self.ssl_context.sslsocket_class = _DeadlineSSLSocket

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Answer:
        """POST `body` to `url` within `timeout` seconds in all (resolution, connect, TLS, answer).

        Raises:
            UrlRefused: the URL or every address it resolves to is refused (nothing was sent).
            PostFailed: no HTTP answer arrived in time (the receiver may have seen the request).
        """
        deadline = time.monotonic() + timeout
        target = parse_url(url, self.allow_private)
        addresses = checked_addresses(target, self.resolver, self.allow_private)
        sock = self._connect(target, [str(a) for a in addresses], deadline)
        conn = http.client.HTTPConnection(target.host, target.port)
        conn.sock = sock
        try:
            conn.putrequest("POST", target.path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", target.host_header)
            conn.putheader("User-Agent", USER_AGENT)
            conn.putheader("Content-Length", str(len(body)))
            conn.putheader("Connection", "close")
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders(body)
            response = conn.getresponse()
            snippet = response.read(ANSWER_SNIPPET_BYTES)
            return Answer(response.status, response.getheader("Retry-After"), response.getheader("Location"),
                          snippet.decode("utf-8", "replace"))
        except TimeoutError:
            raise PostFailed(f"no answer within {timeout:g}s") from None
        except (OSError, http.client.HTTPException) as exc:
            raise PostFailed(f"{type(exc).__name__}: {exc}") from None
        finally:
            conn.close()

    def _connect(self, target: Target, addresses: list[str], deadline: float) -> socket.socket:
        """A connected (and for https, TLS-verified) socket to the first checked address that answers."""
        errors = []
        for address in addresses:
            host, port = self.route(address, target.port) if self.route else (address, target.port)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = _DeadlineSocket(family, socket.SOCK_STREAM)
            sock.deadline = deadline
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                sock.connect((host, port))
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if target.scheme == "https":
                    return self._tls(sock, target.host, deadline)
                return sock
            except TimeoutError:
                sock.close()
                errors.append(f"{address}: connect timed out")
            except (OSError, ssl.SSLError) as exc:
                sock.close()
                errors.append(f"{address}: {exc}")
            if time.monotonic() >= deadline:
                break
        raise PostFailed("cannot connect: " + "; ".join(errors))

    def _tls(self, sock: socket.socket, host: str, deadline: float) -> socket.socket:
        tls = self.ssl_context.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
        assert isinstance(tls, _DeadlineSSLSocket)
        tls.deadline = deadline
        tls.settimeout(max(deadline - time.monotonic(), 0.001))
        tls.do_handshake()
        return tls
