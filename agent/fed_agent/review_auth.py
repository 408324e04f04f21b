"""Who may use the review page: the binding rule, the token file and the request checks.

Why a token only off loopback: on 127.0.0.1 the only people who can reach the page are
those already logged in to the Pi (or forwarding to it with `ssh -L`); on a LAN address
anyone on the network could label the site's images, so there the page needs a token,
read from `review.token_file` (0600, at least 16 characters) and compared in constant time.

The token arrives as `Authorization: Bearer <token>`, as the cookie the page sets, or once
as `?token=<token>` on a GET: that answer sets an HttpOnly, SameSite=Lax cookie and
redirects to the same address without the token, so it stays out of the history and of
every later request line. (Lax, not Strict: a Strict cookie is left out of that redirect
when the link was followed from another site; a POST needs the form token anyway.) The
token is never logged (uvicorn's access log is off; our lines name the path, never the
query).

Two more checks hold without a token, on loopback too: the Host header must name a
loopback host (a web page cannot rebind its own name to 127.0.0.1 and read the page), and a
POST must come from the page itself (a per-process form token, plus Origin / Sec-Fetch-Site
when the browser sends them), so another site open in the same browser cannot label images.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
import secrets
import stat
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit

COOKIE = "fed_review_token"
MIN_TOKEN_CHARS = 16


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or `localhost`: reachable from this machine only."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_HOST_NAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


def check_listen_host(value: str) -> str:
    """An IP address or a host name to listen on; ValueError saying what is wrong."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not _HOST_NAME.match(value):
        raise ValueError(f"must be an IP address or a host name, no port or scheme (got {value!r})")
    return value


def binding_problem(host: str, token_file: Optional[Path]) -> Optional[str]:
    """Why the page must not listen on `host` with this token file (None: it may)."""
    if token_file is None and not is_loopback(host):
        return (f"required when the review page listens on {host!r}, not a loopback address "
                "(anyone on that network could label images): give a 0600 file holding a token")
    return None


def read_token(path: Path) -> str:
    """The token in `path`; ValueError naming the file and what is wrong with it."""
    try:
        mode = path.stat().st_mode
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"review.token_file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"review.token_file {path} is open to other users (mode {stat.S_IMODE(mode):04o}): "
                         f"chmod 600 {path}")
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ValueError(f"review.token_file {path} must hold one token of at least {MIN_TOKEN_CHARS} "
                         "characters without spaces (openssl rand -hex 32 makes one)")
    return token


class PageGuard:
    """The checks of every request (`problem`) and of every POST (`post_problem`)."""

    def __init__(self, token: Optional[str], loopback_only: bool) -> None:
        self.token, self.loopback_only = token, loopback_only
        self.form_token = secrets.token_urlsafe(32)  # in every form the page serves; new at each start

    def host_problem(self, host_header: str) -> Optional[str]:
        """Bound to loopback, a request must name a loopback host (any port: `ssh -L` may
        forward another one)."""
        if not self.loopback_only:
            return None
        hostname = urlsplit(f"//{host_header}").hostname if host_header else None
        if hostname is None or not is_loopback(hostname):
            return "this page answers to a loopback address only (127.0.0.1, localhost)"
        return None

    def token_status(self, bearer: Optional[str], cookie: Optional[str], query: Optional[str]) -> int:
        """200 (no token needed, or a right one), 401 (none given) or 403 (a wrong one)."""
        if self.token is None:
            return 200
        given = [value for value in (bearer, cookie, query) if value]
        if not given:
            return 401
        right = self.token.encode()
        return 200 if any(hmac.compare_digest(value.encode(), right) for value in given) else 403

    def post_problem(self, form_token: Optional[str], origin: Optional[str], fetch_site: Optional[str],
                     host_header: str) -> Optional[str]:
        """Why a POST is not the page's own (None: it is)."""
        if fetch_site is not None and fetch_site not in ("same-origin", "none"):
            return f"cross-site request (Sec-Fetch-Site: {fetch_site})"
        if origin is not None and urlsplit(origin).netloc != host_header:
            return "request from another origin"
        if not form_token or not hmac.compare_digest(form_token.encode(), self.form_token.encode()):
            return "field 'csrf': missing or stale (reload the page)"
        return None


def bearer_of(authorization: Optional[str]) -> Optional[str]:
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None
