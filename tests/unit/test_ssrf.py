"""The SSRF guard: every URL of the corpus is refused and not one byte reaches a loopback sentinel.

Every test routes whatever address the guard lets through to the sentinel (a real listening
socket on 127.0.0.1 that counts bytes), so a guard that failed would show up as bytes there,
and no test ever sends a packet off this machine.
"""
from __future__ import annotations

import pytest

from tests.fakes.webhooks import Receiver, Reply, Sentinel
from workers import ssrf
from workers.ssrf import UrlRefused, parse_url
from workers.webhook_http import Transport

PUBLIC = "93.184.216.34"  # a public address; the route below never lets a connection reach it


@pytest.fixture
def sentinel():
    with Sentinel() as s:
        yield s


def resolver_of(table: dict[str, list[str]]):
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return table[host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


def post(url: str, sentinel: Sentinel, resolver=None, routes: dict[str, int] | None = None):
    """POST through the guard; any address it admits is dialled at the sentinel unless `routes` maps it."""
    dialled: list[str] = []

    def route(address: str, port: int) -> tuple[str, int]:
        dialled.append(address)
        return "127.0.0.1", (routes or {}).get(address, sentinel.port)

    transport = Transport(allow_private=False, resolver=resolver or resolver_of({}), route=route)
    return transport.post(url, b'{"id":"1"}', {"Content-Type": "application/json"}, timeout=2), dialled


LITERALS = [
    "http://127.0.0.1:{p}/hook", "http://0.0.0.0:{p}/hook", "http://10.0.0.1/hook", "http://100.64.0.1/hook",
    "http://172.16.0.1/hook", "http://192.168.1.1/hook", "http://169.254.169.254/latest/meta-data/",
    "http://[::1]:{p}/hook", "http://[fc00::1]/hook", "http://[fe80::1]/hook", "http://[::ffff:127.0.0.1]:{p}/hook",
    "http://[64:ff9b::a00:1]/hook", "http://2130706433:{p}/hook", "http://0x7f000001:{p}/hook",
    "http://0177.0.0.1:{p}/hook", "http://127.1:{p}/hook", "http://0x7f.1:{p}/hook", "http://127.0.0.1.:{p}/hook",
    "http://8.8.8.8/hook", "https://[2606:4700::1111]/hook", "http://[fe80::1%25eth0]/hook",
    "http://public.example@127.0.0.1:{p}/hook", "http://127.0.0.%31:{p}/hook", "http://08.0.0.1/hook",
]
SCHEMES = [
    "ftp://hooks.example.com/x", "file:///etc/passwd", "gopher://127.0.0.1:{p}/_GET%20/", "dict://hooks.example.com:11211/",
    "javascript:alert(1)", "//hooks.example.com/x", "hooks.example.com/x", "ws://hooks.example.com/x",
]


@pytest.mark.parametrize("url", LITERALS + SCHEMES)
def test_ip_literals_in_every_spelling_and_other_schemes_are_refused_before_any_byte_is_sent(url, sentinel):
    with pytest.raises(UrlRefused) as refused:
        post(url.format(p=sentinel.port), sentinel)
    assert refused.value.permanent
    assert (sentinel.connections, sentinel.bytes) == (0, 0)


def test_a_url_over_2048_characters_is_refused(sentinel):
    url = "http://hooks.example.com/" + "a" * 2048
    with pytest.raises(UrlRefused, match="2048"):
        post(url, sentinel, resolver_of({"hooks.example.com": [PUBLIC]}))
    assert (sentinel.connections, sentinel.bytes) == (0, 0)


@pytest.mark.parametrize("answer", [
    ["127.0.0.1"], ["0.0.0.0"], ["10.0.0.1"], ["100.64.0.1"], ["172.16.0.1"], ["192.168.1.1"], ["169.254.169.254"],
    ["::1"], ["fc00::1"], ["fd12::1"], ["fe80::1"], ["::ffff:127.0.0.1"], ["::ffff:10.0.0.1"], ["64:ff9b::a00:1"],
    ["64:ff9b::7f00:1"], ["2002:7f00:1::1"], ["::127.0.0.1"], ["224.0.0.1"], ["ff02::1"], ["240.0.0.1"],
    ["255.255.255.255"], ["192.0.0.8"], ["198.18.0.1"], ["2001:db8::1"],
    [PUBLIC, "10.0.0.1"],  # one inward address is enough to refuse the name
])
def test_a_domain_resolving_to_any_non_public_address_is_refused(answer, sentinel):
    resolve = resolver_of({"evil.example": answer})
    with pytest.raises(UrlRefused, match="evil.example resolves to"):
        post(f"http://evil.example:{sentinel.port}/hook", sentinel, resolve)
    assert (sentinel.connections, sentinel.bytes) == (0, 0)


def test_localhost_resolved_by_the_system_resolver_is_refused(sentinel):
    with pytest.raises(UrlRefused, match="not a public address"):
        post(f"http://localhost:{sentinel.port}/hook", sentinel, ssrf.system_resolver)
    assert (sentinel.connections, sentinel.bytes) == (0, 0)


def test_a_redirect_to_a_private_address_is_never_followed(sentinel):
    with Receiver(lambda i, r: Reply(302, {"Location": f"http://127.0.0.1:{sentinel.port}/metadata"})) as public:
        answer, dialled = post(f"http://public.example:{public.port}/hook", sentinel,
                               resolver_of({"public.example": [PUBLIC]}), routes={PUBLIC: public.port})
        assert answer.status == 302 and answer.location.endswith("/metadata")
        assert len(public.received) == 1 and dialled == [PUBLIC]
    assert (sentinel.connections, sentinel.bytes) == (0, 0)


def test_the_connection_goes_to_the_checked_address_with_one_lookup_and_the_original_host_header(sentinel):
    resolve = resolver_of({"hooks.example.com": [PUBLIC]})
    with Receiver() as public:
        answer, dialled = post(f"http://hooks.example.com:{public.port}/h?x=1", sentinel, resolve,
                               routes={PUBLIC: public.port})
        assert answer.status == 204 and dialled == [PUBLIC] and resolve.calls == ["hooks.example.com"]
        assert public.received[0].headers["host"] == f"hooks.example.com:{public.port}"
        assert public.received[0].path == "/h?x=1"


def test_a_name_that_rebinds_to_loopback_is_refused_at_the_next_attempt(sentinel):
    answers = iter([[PUBLIC], ["127.0.0.1"]])
    calls = []

    def rebinding(host: str, port: int) -> list[str]:
        calls.append(host)
        return next(answers)

    with Receiver() as public:
        first, _ = post(f"http://rebind.example:{public.port}/hook", sentinel, rebinding, routes={PUBLIC: public.port})
        assert first.status == 204
        with pytest.raises(UrlRefused, match="127.0.0.1") as refused:
            post(f"http://rebind.example:{public.port}/hook", sentinel, rebinding, routes={PUBLIC: public.port})
        assert not refused.value.permanent  # DNS may be fixed before the next scheduled attempt
        assert len(public.received) == 1 and calls == ["rebind.example", "rebind.example"]
    assert (sentinel.connections, sentinel.bytes) == (0, 0)


@pytest.mark.parametrize("url, host", [
    ("https://Hooks.Example.com/x?y=1", "hooks.example.com"),
    ("http://例え.jp/h", "xn--r8jz45g.jp"),
    ("http://hooks.example.com./h", "hooks.example.com"),
])
def test_domain_names_pass_the_static_checks(url, host):
    assert parse_url(url).host == host


def test_allow_private_admits_loopback_literals_but_never_the_unspecified_address():
    assert str(parse_url("http://127.0.0.1:8000/h", allow_private=True).literal) == "127.0.0.1"
    target = parse_url("http://0.0.0.0:8000/h", allow_private=True)
    with pytest.raises(UrlRefused, match="not a unicast"):
        ssrf.checked_addresses(target, ssrf.system_resolver, allow_private=True)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for hooks.example.com (cert path, key path)."""
    import subprocess

    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=hooks.example.com", "-addext", "subjectAltName=DNS:hooks.example.com"],
                   check=True, capture_output=True)
    return cert, key


def test_https_to_the_checked_address_verifies_the_certificate_against_the_host_name(certificate, sentinel):
    import ssl

    from workers.webhook_http import PostFailed

    cert, key = certificate
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert, key)
    resolve = resolver_of({"hooks.example.com": [PUBLIC], "other.example.com": [PUBLIC]})
    with Receiver(tls=server_side) as rx:
        transport = Transport(resolver=resolve, route=lambda address, port: ("127.0.0.1", rx.port),
                              ssl_context=ssl.create_default_context(cafile=str(cert)))
        answer = transport.post(f"https://hooks.example.com:{rx.port}/h", b"{}", {}, timeout=5)
        assert answer.status == 204 and rx.received[0].headers["host"] == f"hooks.example.com:{rx.port}"
        with pytest.raises(PostFailed, match="certificate"):
            transport.post(f"https://other.example.com:{rx.port}/h", b"{}", {}, timeout=5)
        assert len(rx.received) == 1
    assert (sentinel.connections, sentinel.bytes) == (0, 0)
