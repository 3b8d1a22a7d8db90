"""API keys: the keys file, its roles, and the lookup the service does on every request.

A key is ``jk_<id>_<secret>``: the id (12 hex digits) is public and names the key in the
audit log and in ``jaffnet keys list``; the secret (32 random bytes) is shown once, at
creation, and never stored. The keys file holds one line per key with the SHA-256 of the
whole key; the service finds the entry by id and compares digests with
``hmac.compare_digest``. A long random secret needs no slow hash (that is for human
passwords). Revoked keys stay in the file, marked, so their ids keep naming them in old
audit records and are never handed out again.

The file also holds the secret that signs operator-page sessions, shared by every ingress
replica. It must not be readable by group or others (mode 0600), like an ssh key. Format::

    # comment
    session-secret <64 hex digits>
    key <id> <line|operator|admin> <line name or -> <sha256 hex> <created, ISO 8601> <active|revoked> <name>
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

ROLES = ("line", "operator", "admin")
KEY_PREFIX = "jk_"
_ID_HEX = 12
_KEY = re.compile(r"jk_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")  # line and key names: no spaces or markup
_HEX64 = re.compile(r"[0-9a-f]{64}")
HEADER = ("# jaffnet API keys, written by `jaffnet keys`. Keep this file mode 0600. Secrets are not stored,\n"
          "# only their SHA-256. Columns: key ID ROLE LINE SHA256 CREATED STATUS NAME\n")
RELOAD_CHECK_S = 1.0  # how often a running service looks at the file for changes


class KeysFileError(ValueError):
    """The keys file cannot be used; the message names the file (and the line)."""


@dataclass(frozen=True)
class ApiKey:
    id: str
    role: str
    line: str | None  # the one line a ``line`` key may post for
    digest: str  # SHA-256 hex of the whole key
    created: str
    revoked: bool
    name: str

    def describe(self) -> dict:
        """What ``jaffnet keys list`` shows: never the digest."""
        return {"id": self.id, "role": self.role, "line": self.line, "name": self.name, "created": self.created,
                "status": "revoked" if self.revoked else "active"}


@dataclass(frozen=True)
class KeySet:
    session_secret: bytes
    keys: dict[str, ApiKey] = field(default_factory=dict)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def key_id(token: str) -> str | None:
    """The public id of a well-formed key, else None."""
    match = _KEY.fullmatch(token)
    return match.group(1) if match else None


def looks_like_key(text: str) -> bool:
    return KEY_PREFIX in text


def valid_name(text: str) -> bool:
    return bool(_NAME.fullmatch(text))


# -- the file ----------------------------------------------------------------------------------

def parse_keys(text: str, source: str) -> KeySet:
    """The keys of a keys file's text; ``KeysFileError`` names ``source`` and the line."""
    secret, keys = None, {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue

        def bad(why: str) -> KeysFileError:
            return KeysFileError(f"keys file {source}, line {number}: {why}")

        fields = line.split()
        if fields[0] == "session-secret":
            if len(fields) != 2 or not _HEX64.fullmatch(fields[1]):
                raise bad("session-secret must be followed by 64 hex digits")
            if secret is not None:
                raise bad("a second session-secret")
            secret = bytes.fromhex(fields[1])
        elif fields[0] == "key":
            if len(fields) != 8:
                raise bad(f"a key line has 8 fields (key ID ROLE LINE SHA256 CREATED STATUS NAME), this one "
                          f"has {len(fields)}")
            _, ident, role, line_name, hex_digest, created, status, name = fields
            if not re.fullmatch(f"[0-9a-f]{{{_ID_HEX}}}", ident):
                raise bad(f"the key id must be {_ID_HEX} hex digits")
            if ident in keys:
                raise bad(f"key id {ident} appears twice")
            if role not in ROLES:
                raise bad(f"role {role!r} is not one of {', '.join(ROLES)}")
            if role == "line" and not valid_name(line_name):
                raise bad("a line key needs its line name (letters, digits, ._:-)")
            if role != "line" and line_name != "-":
                raise bad(f"an {role} key is not bound to a line: put - in the LINE column")
            if not _HEX64.fullmatch(hex_digest):
                raise bad("SHA256 must be 64 lowercase hex digits")
            try:
                datetime.fromisoformat(created)
            except ValueError:
                raise bad(f"CREATED {created!r} is not an ISO 8601 time") from None
            if status not in ("active", "revoked"):
                raise bad(f"STATUS {status!r} is not active or revoked")
            if not valid_name(name):
                raise bad("NAME must be letters, digits or ._:- (at most 64)")
            keys[ident] = ApiKey(ident, role, line_name if role == "line" else None, hex_digest, created,
                                 status == "revoked", name)
        else:
            raise bad(f"unknown entry {fields[0][:20]!r} (expected session-secret or key)")
    if secret is None:
        raise KeysFileError(f"keys file {source} has no session-secret line (create keys files with `jaffnet keys add`)")
    return KeySet(secret, keys)


def format_keys(keyset: KeySet) -> str:
    lines = [HEADER, f"session-secret {keyset.session_secret.hex()}\n"]
    for key in keyset.keys.values():
        lines.append(f"key {key.id} {key.role} {key.line or '-'} {key.digest} {key.created} "
                     f"{'revoked' if key.revoked else 'active'} {key.name}\n")
    return "".join(lines)


def read_keys_file(path: str | Path) -> KeySet:
    path = Path(path)
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise KeysFileError(f"keys file {path} does not exist (create it with `jaffnet keys add --file {path} ...`)") \
            from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeysFileError(f"keys file {path} cannot be read: {exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeysFileError(f"keys file {path} is readable by others (mode {stat.S_IMODE(mode):04o}): "
                            f"chmod 600 {path}")
    return parse_keys(text, str(path))


def write_keys_file(path: str | Path, keyset: KeySet) -> None:
    """Atomically (a reader sees the old file or the new one), mode 0600 from the start."""
    path = Path(path)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mkstemp: mode 0600
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(format_keys(keyset))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def new_keyset() -> KeySet:
    return KeySet(secrets.token_bytes(32))


def add_key(keyset: KeySet, role: str, line: str | None, name: str | None = None) -> tuple[str, KeySet]:
    """A new key (the only time its secret exists) and the key set that holds its digest."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if (role == "line") != (line is not None):
        raise ValueError("a line key needs --line, and only a line key takes one")
    if line is not None and not valid_name(line):
        raise ValueError(f"line {line!r}: letters, digits or ._:- only, at most 64")
    while True:
        ident = secrets.token_hex(_ID_HEX // 2)
        if ident not in keyset.keys:
            break
    token = f"{KEY_PREFIX}{ident}_{secrets.token_urlsafe(32)}"
    name = name or (f"line-{line}" if role == "line" else role)
    if not valid_name(name):
        raise ValueError(f"name {name!r}: letters, digits or ._:- only, at most 64")
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    key = ApiKey(ident, role, line, digest(token), created, False, name)
    return token, replace(keyset, keys={**keyset.keys, ident: key})


def revoke_key(keyset: KeySet, ident: str) -> KeySet:
    if ident not in keyset.keys:
        raise KeyError(f"no key with id {ident!r}")
    return replace(keyset, keys={**keyset.keys, ident: replace(keyset.keys[ident], revoked=True)})


# -- the service side --------------------------------------------------------------------------

class KeyStore:
    """The keys file as the service sees it: re-read when it changes (rotation and
    revocation without a restart). A file that turns unreadable or malformed while the
    service runs keeps the last good keys and is logged, so a typo cannot stop the line."""

    def __init__(self, path: str | Path, logger=None, clock=time.monotonic):
        self.path = Path(path)
        self.logger = logger
        self.clock = clock
        self._lock = threading.Lock()
        self._signature = self._stat()
        self.keyset = read_keys_file(self.path)  # at start a bad file is an error, not a warning
        self._checked = clock()
        self._reported: str | None = None

    def _stat(self) -> tuple | None:
        try:
            info = self.path.stat()
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size, info.st_ino

    def current(self) -> KeySet:
        now = self.clock()
        if now - self._checked >= RELOAD_CHECK_S:
            with self._lock:
                if now - self._checked >= RELOAD_CHECK_S:
                    self._checked = now
                    signature = self._stat()
                    if signature != self._signature:
                        self._reload(signature)
        return self.keyset

    def _reload(self, signature) -> None:
        try:
            self.keyset = read_keys_file(self.path)
        except KeysFileError as exc:
            if self.logger is not None and str(exc) != self._reported:
                self.logger.error("%s; keeping the keys read before", exc)
            self._reported = str(exc)
            return
        self._signature, self._reported = signature, None
        if self.logger is not None:
            self.logger.info("keys file %s re-read: %d key(s)", self.path, len(self.keyset.keys))

    def authenticate(self, token: str) -> tuple[ApiKey | None, str]:
        """(the active key ``token`` is, or None; why not: unknown_key, revoked_key or malformed_key)."""
        ident = key_id(token)
        if ident is None:
            return None, "malformed_key"
        key = self.current().keys.get(ident)
        if key is None or not hmac.compare_digest(digest(token), key.digest):
            return None, "unknown_key"
        if key.revoked:
            return None, "revoked_key"
        return key, "ok"

    def active(self, ident: str) -> ApiKey | None:
        key = self.current().keys.get(ident)
        return None if key is None or key.revoked else key
