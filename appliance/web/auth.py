"""Who may use the server: loopback by default, a token for any other address."""
import hmac
import ipaddress
import os

from oncolens.appliance.errors import UsageError

from urllib.parse import parse_qs

TOKEN_ENV = "ONCOLENS_TOKEN"


def resolve_token(token):
    """The token to serve with: ``token`` (a --token value; None when the flag is left out),
    else $ONCOLENS_TOKEN (empty there: no token). An explicitly empty or blank --token is
    refused (UsageError naming the flag): it silently fell back to the variable, or turned
    the token off. ``oncolens serve`` and ``oncolens classify`` both call it."""
    if token is not None:
        if not token.strip():
            raise UsageError("--token: expected a token, got an empty value: leave --token "
                             "out to use ${}".format(TOKEN_ENV))
        return token
    return os.environ.get(TOKEN_ENV) or None


def is_loopback(host):
    """True for localhost, 127.0.0.0/8 and ::1; False for anything else (0.0.0.0, names)."""
    host = (host or "").strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(u"{}".format(host)).is_loopback
    except ValueError:
        return False


def require_token(host, token, flag="--host"):
    """Refuse to listen off loopback without a token (UsageError names the flag)."""
    if not is_loopback(host) and not token:
        raise UsageError("{} {}: not a loopback address, so a token is required: pass "
                         "--token T or set ONCOLENS_TOKEN (patient data must not be served "
                         "to the network without one)".format(flag, host or "(all addresses)"))


def presented_token(environ):
    """The token a request carries: ``Authorization: Bearer T`` or ``?token=T``."""
    header = environ.get("HTTP_AUTHORIZATION", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    values = parse_qs(environ.get("QUERY_STRING", "")).get("token")
    return values[0] if values else None


def token_ok(environ, token):
    """Whether the request may go on: always without a token, else a constant-time match."""
    if not token:
        return True
    given = presented_token(environ)
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), token.encode("utf-8"))
