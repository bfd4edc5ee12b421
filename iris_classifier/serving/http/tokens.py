"""Optional bearer tokens on the prediction routes, read from a file (a mounted Secret); what
is checked and when: iris_classifier/serving/README.md#bearer-tokens.

The file holds a token per line, so several are valid while one is rotated out. A re-read that
finds no token or cannot read the file keeps the tokens held, with a warning: a half-written
file must not lock every client out. Only digests are kept, and every one is compared, so
neither the position of the matching token nor the length of any token shows in the time taken.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.types import Scope

from iris_classifier.serving.http.limits import BodyRefused

logger = logging.getLogger("iris_classifier.tokens")

RECHECK_SECONDS = 1.0
REALM = "iris-classifier"
# RFC 6750's b64token: what a bearer token may hold in an Authorization header.
TOKEN_SYNTAX = re.compile(rb"[A-Za-z0-9\-._~+/]+=*")
QUERY_TOKEN_NAMES = frozenset({"token", "access_token"})


class TokenFileError(ValueError):
    """The configured token file cannot be used: unreadable, empty, or a malformed line."""


def read_token_digests(path: Path) -> tuple[bytes, ...]:
    """The SHA-256 digest of every token in `path`; TokenFileError names the problem (never a
    token)."""
    try:
        text = path.read_bytes()
    except OSError as error:
        raise TokenFileError(f"cannot read {path}: {error.strerror or error}") from None
    digests = []
    for number, line in enumerate(text.splitlines(), start=1):
        token = line.strip()
        if not token or token.startswith(b"#"):
            continue
        if not TOKEN_SYNTAX.fullmatch(token):
            raise TokenFileError(
                f"{path} line {number}: not a bearer token (letters, digits and -._~+/ only)"
            )
        digests.append(hashlib.sha256(token).digest())
    if not digests:
        raise TokenFileError(f"{path} holds no token")
    return tuple(digests)


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = os.stat(path)  # follows the symlinks a mounted Secret swaps on update
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


class UnauthorizedRequest(BodyRefused):
    """A 401: answered at once, and the body the client sent is never parsed."""

    def __init__(self, error: str, challenge_error: str | None) -> None:
        challenge = f'Bearer realm="{REALM}"'
        if challenge_error is not None:
            challenge += f', error="{challenge_error}"'
        super().__init__(
            401,
            error,
            field="authorization",
            headers=((b"www-authenticate", challenge.encode()),),
        )


class BearerTokens:
    """The tokens of one file, kept current; `check(scope)` raises UnauthorizedRequest."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self.signature = _signature(path)
        self.digests = read_token_digests(path)  # TokenFileError at start: the service stops
        self.checked_at = clock()
        self.lock = threading.Lock()

    def current(self) -> tuple[bytes, ...]:
        now = self.clock()
        if now - self.checked_at < RECHECK_SECONDS or not self.lock.acquire(blocking=False):
            return self.digests
        try:
            self.checked_at = now
            signature = _signature(self.path)
            if signature != self.signature:
                self.signature = signature
                try:
                    self.digests = read_token_digests(self.path)
                    logger.info("token file changed: %d tokens now valid", len(self.digests))
                except TokenFileError as error:
                    logger.warning("token file changed, kept the tokens held: %s", error)
        finally:
            self.lock.release()
        return self.digests

    def accepts(self, presented: bytes) -> bool:
        digest = hashlib.sha256(presented).digest()
        matched = False
        for configured in self.current():
            # `|` and not `or`: every configured token is compared, whichever matches.
            matched |= hmac.compare_digest(digest, configured)
        return matched

    def check(self, scope: Scope) -> None:
        query = scope.get("query_string", b"")
        if query and any(
            name.lower() in QUERY_TOKEN_NAMES
            for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)
        ):
            # Never compared: a URL is kept in browser histories and proxy logs, so a token
            # sent there must be treated as leaked, whether it was right or not.
            raise UnauthorizedRequest(
                "a token in the query string is refused: send it in an "
                "`Authorization: Bearer` header, and replace it (URLs are logged)",
                "invalid_request",
            )
        authorization = Headers(scope=scope).get("authorization")
        scheme, _, presented = (authorization or "").strip().partition(" ")
        presented = presented.strip()
        if scheme.lower() != "bearer" or not presented:
            # RFC 6750: a request that sent no credentials at all gets a challenge without error.
            raise UnauthorizedRequest(
                "a bearer token is required: Authorization: Bearer",
                None if authorization is None else "invalid_request",
            )
        if not self.accepts(presented.encode("latin-1")):
            raise UnauthorizedRequest("the bearer token is not valid", "invalid_token")
