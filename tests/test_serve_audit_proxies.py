"""The audit's client and forwarded_for behind dual-stack listeners and chained proxies:
an IPv4 client of an IPv6 socket (::ffff:a.b.c.d) is named by its IPv4 address, and
--trusted-proxy matches it either way; several proxies (addresses or networks) may be
trusted, and forwarded_for is X-Forwarded-For's right-most entry that is not one of them."""
import contextlib
import json

import pytest

from conftest import run_cli
from serve_util import request

TOKEN = "secret"


def audit_lines(path):
    with open(path) as fh:
        return dict((r["request_id"], r) for r in map(json.loads, fh.read().splitlines()))


@contextlib.contextmanager
def serving(host, audit, trusted_proxy=None):
    """A ServeApp (no model: its 401s are audited) on ``host``:<free port>; skips the test
    where this host cannot listen there (no IPv6, or no dual-stack socket)."""
    from oncolens.appliance.web.app import ServeApp
    from oncolens.appliance.web.server import ServerThread
    app = ServeApp(None, token=TOKEN, audit_log=audit, trusted_proxy=trusted_proxy)
    try:
        server = ServerThread(app.wsgi, host, 0).start()
    except OSError as exc:
        app.close()
        pytest.skip("cannot listen on {} here ({})".format(host, exc))
    try:
        yield server.port
    finally:
        server.stop()
        app.close()


def refused(host, port, rid, forwarded=None):
    """An unauthenticated GET /health (a 401, audited) from this host to ``host``:``port``."""
    headers = {"X-Request-Id": rid}
    if forwarded:
        headers["X-Forwarded-For"] = forwarded
    url = "http://{}:{}/".format("[{}]".format(host) if ":" in host else host, port)
    assert request(url, "/health", headers=headers).status == 401


def test_plain_address_unmaps_ipv4_mapped_ipv6():
    from oncolens.appliance.web.audit import client_field, plain_address
    assert plain_address("::ffff:10.0.0.5") == "10.0.0.5"
    assert plain_address("::FFFF:192.0.2.7") == "192.0.2.7"
    assert plain_address("10.0.0.5") == "10.0.0.5"
    assert plain_address("::1") == "::1"
    assert plain_address("2001:db8::1") == "2001:db8::1"
    assert plain_address("not-an-address") == "not-an-address"
    assert plain_address(None) is None and client_field(None) is None
    assert client_field("::ffff:127.0.0.1") == "127.0.0.1"


def test_trusted_proxies_take_addresses_networks_and_mapped_forms():
    from oncolens.appliance.web.audit import is_trusted, parse_ip, trusted_proxies
    proxies = trusted_proxies(["10.0.0.0/8", "::ffff:10.0.0.5", "::ffff:192.168.0.0/112", "::1"])
    assert [str(net) for net in proxies] == ["10.0.0.0/8", "10.0.0.5/32", "192.168.0.0/16",
                                             "::1/128"]
    for peer, trusted in [("10.200.1.1", True), ("::ffff:10.0.0.5", True),
                          ("192.168.3.4", True), ("::1", True), ("11.0.0.1", False),
                          ("::2", False), ("junk", False)]:
        assert is_trusted(parse_ip(peer), proxies) is trusted, peer
    assert trusted_proxies("127.0.0.1") == trusted_proxies(["::ffff:127.0.0.1"])
    assert trusted_proxies(None) == ()


@pytest.mark.parametrize("value,expected", [
    ("proxy.lan", "--trusted-proxy proxy.lan: expected an IP address or network"),
    ("", '--trusted-proxy "": expected an IP address or network'),
    ("10.0.0.1,10.0.0.2", "--trusted-proxy 10.0.0.1,10.0.0.2: expected an IP address"),
    ("10.0.0.0/33", "--trusted-proxy 10.0.0.0/33: expected an IP address or network"),
    ("10.0.0.5/8", "--trusted-proxy 10.0.0.5/8: expected a network with its host bits zero, "
                   "e.g. 10.0.0.0/8"),
])
def test_malformed_trusted_proxies_are_refused_naming_the_flag(value, expected):
    from oncolens.appliance.errors import UsageError
    from oncolens.appliance.web.audit import trusted_proxies
    with pytest.raises(UsageError) as info:
        trusted_proxies(["127.0.0.1", value])
    assert str(info.value).startswith(expected) and "\n" not in str(info.value)


@pytest.mark.parametrize("header,expected", [
    ("192.0.2.7", "192.0.2.7"),
    ("198.51.100.66, 192.0.2.7, 10.0.0.7", "192.0.2.7"),        # the outer proxy's entry
    ("198.51.100.66, 192.0.2.7, 10.0.0.7, 127.0.0.1", "192.0.2.7"),
    ("10.0.0.8, 10.0.0.7", "10.0.0.8"),                         # a proxy's own request
    ("198.51.100.66, ::ffff:192.0.2.7, 10.0.0.7", "192.0.2.7"),
    ("2001:db8::5, 10.0.0.7", "2001:db8::5"),
    ("192.0.2.7:5678, 10.0.0.7:443", "192.0.2.7"),              # with ports, as some send
    ("[2001:db8::1]:443, 10.0.0.7", "2001:db8::1"),
    ("[2001:db8::1], [::ffff:10.0.0.7]:80", "2001:db8::1"),
    ("2001:db8::1", "2001:db8::1"),                             # bare IPv6: not host:port
    ("192.0.2.7:http, 10.0.0.7", None),                         # a port that is no number
    ("192.0.2.7:70000", None),
    ("[2001:db8::1]x", None),
    ("[2001:db8::1", None),
    ("192.0.2.7, forged, 10.0.0.7", None),    # the entry to take is no address
    ("192.0.2.7, , 10.0.0.7", None),
    ("", None),
    (None, None),
])
def test_forwarded_client_is_the_rightmost_entry_not_a_trusted_proxy(header, expected):
    from oncolens.appliance.web.audit import forwarded_client, trusted_proxies
    assert forwarded_client(header, trusted_proxies(["10.0.0.0/8", "127.0.0.1"])) == expected


def test_ipv4_client_of_a_dual_stack_listener_is_named_and_trusted_as_ipv4(tmp_path):
    """A real connection from 127.0.0.1 to an IPv6 socket (bound to ::ffff:127.0.0.1, so on
    loopback only): its peer address is ::ffff:127.0.0.1, which the audit names 127.0.0.1
    and which --trusted-proxy 127.0.0.1 matches."""
    audit = str(tmp_path / "audit.jsonl")
    with serving("::ffff:127.0.0.1", audit, trusted_proxy=["127.0.0.1"]) as port:
        refused("127.0.0.1", port, "v4-1", forwarded="198.51.100.66, 192.0.2.7")
    record = audit_lines(audit)["v4-1"]
    assert record["client"] == "127.0.0.1" and record["forwarded_for"] == "192.0.2.7"


def test_a_mapped_trusted_proxy_matches_a_plain_ipv4_peer(tmp_path):
    audit = str(tmp_path / "audit.jsonl")
    with serving("127.0.0.1", audit, trusted_proxy="::ffff:127.0.0.1") as port:
        refused("127.0.0.1", port, "v4-2", forwarded="192.0.2.7")
    record = audit_lines(audit)["v4-2"]
    assert record["client"] == "127.0.0.1" and record["forwarded_for"] == "192.0.2.7"


@pytest.mark.parametrize("network,peer,trusted", [
    ("::/0", "10.200.1.1", True), ("::/0", "::ffff:10.200.1.1", True), ("::/0", "::1", True),
    ("::/80", "192.0.2.7", True), ("::ffff:0:0/96", "192.0.2.7", True),
    ("::ffff:0:0/96", "::1", False), ("2001:db8::/32", "192.0.2.7", False),
    ("0.0.0.0/0", "::ffff:192.0.2.7", True), ("0.0.0.0/0", "::1", False),
])
def test_an_ipv6_network_holds_ipv4_clients_in_their_mapped_form(network, peer, trusted):
    """--trusted-proxy ::/0 trusted no IPv4 client: a dual-stack listener's ::ffff:a.b.c.d
    peer is named a.b.c.d, and an IPv4 address is never in an IPv6 network; each address is
    now matched in both forms."""
    from oncolens.appliance.web.audit import is_trusted, parse_ip, trusted_proxies
    assert is_trusted(parse_ip(peer), trusted_proxies([network])) is trusted


def test_trusted_proxy_all_of_ipv6_trusts_a_real_ipv4_peer(tmp_path):
    """::/0 trusts every address, the entries of X-Forwarded-For too: the left-most one is
    recorded (before, the IPv4 peer was not trusted and forwarded_for was null)."""
    audit = str(tmp_path / "audit.jsonl")
    with serving("127.0.0.1", audit, trusted_proxy=["::/0"]) as port:
        refused("127.0.0.1", port, "all-1", forwarded="198.51.100.66, 192.0.2.7")
    record = audit_lines(audit)["all-1"]
    assert record["client"] == "127.0.0.1" and record["forwarded_for"] == "198.51.100.66"


def test_an_ipv6_client_keeps_its_ipv6_address(tmp_path):
    audit = str(tmp_path / "audit.jsonl")
    with serving("::1", audit, trusted_proxy=["10.0.0.0/8", "::1"]) as port:
        refused("::1", port, "v6-1", forwarded="2001:db8::5, 10.0.0.7")
    record = audit_lines(audit)["v6-1"]
    assert record["client"] == "::1" and record["forwarded_for"] == "2001:db8::5"


def test_forwarded_entries_with_ports_are_read_through_a_trusted_proxy(tmp_path):
    """Proxies that send ports (and brackets) gave a null forwarded_for: those entries
    counted as no address, and the walk past trusted proxies stopped there."""
    audit = str(tmp_path / "audit.jsonl")
    with serving("127.0.0.1", audit, trusted_proxy=["127.0.0.1", "10.0.0.0/8"]) as port:
        refused("127.0.0.1", port, "port-1", forwarded="198.51.100.66, 192.0.2.7:5678, "
                                                      "10.0.0.7:443")
        refused("127.0.0.1", port, "port-2", forwarded="[2001:db8::1]:443, [::ffff:10.0.0.7]")
    records = audit_lines(audit)
    assert records["port-1"]["forwarded_for"] == "192.0.2.7"
    assert records["port-2"]["forwarded_for"] == "2001:db8::1"


def test_an_underscore_header_cannot_add_to_x_forwarded_for(tmp_path):
    """wsgiref read ``X_Forwarded_For`` as X-Forwarded-For and appended its value: a client
    behind a proxy that passes such headers on named the forwarded_for of its choice.
    Headers with an underscore in their name are dropped, as nginx and gunicorn do."""
    from serve_util import request as send
    audit = str(tmp_path / "audit.jsonl")
    with serving("127.0.0.1", audit, trusted_proxy=["127.0.0.1"]) as port:
        url = "http://127.0.0.1:{}/".format(port)
        for rid, headers in (("smuggled-1", {"X-Forwarded-For": "192.0.2.7",
                                             "X_Forwarded_For": "203.0.113.66"}),
                             ("smuggled-2", {"X_Forwarded_For": "203.0.113.66"})):
            headers["X-Request-Id"] = rid
            assert send(url, "/health", headers=headers).status == 401
    records = audit_lines(audit)
    assert records["smuggled-1"]["forwarded_for"] == "192.0.2.7"
    assert records["smuggled-2"]["forwarded_for"] is None


def test_an_untrusted_peer_never_gets_forwarded_for(tmp_path):
    audit = str(tmp_path / "audit.jsonl")
    with serving("127.0.0.1", audit, trusted_proxy=["10.0.0.0/8", "::1"]) as port:
        refused("127.0.0.1", port, "other-1", forwarded="192.0.2.7")
    record = audit_lines(audit)["other-1"]
    assert record["client"] == "127.0.0.1" and record["forwarded_for"] is None


def test_serve_takes_trusted_proxy_more_than_once_and_refuses_a_bad_one(tmp_path):
    from oncolens.appliance.serve_cli import build_parser
    args = build_parser().parse_args(["--model", "m", "--trusted-proxy", "10.0.0.0/8",
                                      "--trusted-proxy", "127.0.0.1"])
    assert args.trusted_proxy == ["10.0.0.0/8", "127.0.0.1"]
    code, out, err = run_cli(["serve", "--model", str(tmp_path / "missing"), "--port", 0,
                              "--trusted-proxy", "10.0.0.0/8", "--trusted-proxy", "10.0.0.1/8"])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("oncolens serve: error: --trusted-proxy 10.0.0.1/8: expected a "
                          "network with its host bits zero")
