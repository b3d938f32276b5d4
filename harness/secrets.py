"""Secrets kept out of everything the harness prints or stores: one process-wide registry.

API keys are read from the environment at the moment of use (`api_key_from_env`), and
servers may echo them back (in error bodies, or even in a completion's text). Every key read
is registered here, and `redact` replaces each registered value, and the credentials of any
`scheme://user:password@host` URL, with "<redacted>". The store passes every text and info
it writes through `redact`, and the CLI every error line it prints, so a secret that reaches
either is taken out there whatever path it came by.

Values shorter than `MIN_SECRET_LEN` characters, and the "EMPTY" placeholder local servers
accept, are not registered: replacing them everywhere would mangle ordinary text and hide
nothing.
"""

from __future__ import annotations

import base64
import re
import threading
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

REDACTED = "<redacted>"
MIN_SECRET_LEN = 4
_PLACEHOLDERS = frozenset({"EMPTY"})

# scheme://userinfo@ : the userinfo runs up to the last "@" before the path/query/fragment
# (greedy), so an unencoded "@" inside a password is still covered.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#]*@")

_lock = threading.Lock()
_secrets: tuple[str, ...] = ()  # longest first, so a secret containing another goes whole

T = TypeVar("T")


def register_secret(value: str | None) -> None:
    """Remember `value` so that `redact` removes it from now on (too short: ignored)."""
    global _secrets
    if not isinstance(value, str) or len(value) < MIN_SECRET_LEN or value in _PLACEHOLDERS:
        return
    with _lock:
        if value not in _secrets:
            _secrets = tuple(sorted((*_secrets, value), key=len, reverse=True))


def register_url_credentials(url: str) -> None:
    """Register the password of `url` (as written, percent-decoded, and inside the base64 of
    an HTTP Basic Authorization header), so an echo of it anywhere is redacted. The user
    name alone is not secret (and often an ordinary word): only its URL form is redacted."""
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:  # not a parseable URL: the pattern in `redact_url` still applies
        return
    if password:
        register_secret(password)
        register_secret(unquote(password))
        pair = f"{unquote(user or '')}:{unquote(password or '')}"
        register_secret(base64.b64encode(pair.encode()).decode())


def redact_url(url: str) -> str:
    """`url` with any `user:password@` replaced by `<redacted>@` (other text unchanged)."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{REDACTED}@", url)


def _redact_str(text: str, urls: bool) -> str:
    for secret in _secrets:  # a tuple swapped whole under the lock: safe to iterate
        if secret in text:
            text = text.replace(secret, REDACTED)
    return redact_url(text) if urls and "://" in text else text


def redact(obj: T, *, urls: bool = True) -> T:
    """A copy of `obj` (a str, or dicts / lists / tuples of them, keys included) with every
    registered secret and, unless `urls=False`, every URL's credentials replaced by
    "<redacted>". Other values (numbers, None, ...) are returned as they are."""
    return _redact(obj, urls)


def _redact(obj: Any, urls: bool) -> Any:
    if isinstance(obj, str):
        return _redact_str(obj, urls)
    if isinstance(obj, dict):
        return {_redact(k, urls): _redact(v, urls) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_redact(v, urls) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_redact(v, urls) for v in obj)
    return obj


class Secret:
    """A value (a key, a URL with credentials) that must be used but never shown: its repr
    and str are "<redacted>", so it stays hidden in `vars()`, reprs and tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)
