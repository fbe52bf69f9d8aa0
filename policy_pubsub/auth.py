"""Users and their credentials: the auth file, password hashes, and checking credentials.

The auth file (``serve --auth-file PATH``) is TOML, read once when the server starts::

    [users.pap]
    password_hash = "scrypt$16384$8$1$<salt>$<hash>"   # from `policy-pubsub hash-password`
    roles = ["pap"]

    [users.tca]
    token = "a-long-random-bearer-token"                # sent as `Authorization: Bearer ...`
    roles = ["component"]
    topics = ["policies_DCAE_tca_*"]                    # fnmatch globs, case-sensitive

A user has a ``password_hash`` or (tests and demos only) a plaintext ``password``, and/or a
``token``. Anything else wrong (bad TOML, an unknown key or role, a user without credentials,
a token two users share) is an ``AuthFileError`` whose message is one line naming the user and
the field, so ``serve`` can refuse to start with it.

Hashes are ``scrypt$n$r$p$salt_b64$hash_b64`` (stdlib ``hashlib.scrypt``). Checking one takes
tens of milliseconds, so it runs in a worker thread, a few at a time, and successful checks are
remembered (by a keyed hash of the credentials, never the password) so a long-polling component
pays for scrypt once, not per poll.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import re
import secrets
import stat
import tomllib
from collections import OrderedDict
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)

log = logging.getLogger(__name__)

PAP, COMPONENT, ADMIN = "pap", "component", "admin"
ROLES = (PAP, COMPONENT, ADMIN)
REALM = "policy-pubsub"

# scrypt: n=2**14, r=8, p=1 takes 16 MiB and some tens of ms; a 16-byte salt, a 32-byte hash.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES, HASH_BYTES = 16, 32
MAX_SCRYPT_MEMORY = 256 * 1024 * 1024  # refuse hashes whose parameters would need more
MAX_PASSWORD_CHARS = 1024  # longer passwords are refused without hashing them
VERIFY_CONCURRENCY = 4  # scrypt checks at once, so they cannot take every worker thread
CACHE_SIZE = 1024  # remembered successful logins

USER_NAME = re.compile(r"^[A-Za-z0-9._@+-]{1,255}$")
TOKEN = re.compile(r"^[A-Za-z0-9._~+/-]{16,1024}=*$")  # RFC 6750 b64token, 16 or more
TOPIC_GLOB = re.compile(r"^[A-Za-z0-9._*?\[\]!-]{1,255}$")


class AuthFileError(Exception):
    """The auth file cannot be used; ``message`` is one line naming the file, user and field."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# -- hashing ----------------------------------------------------------------------------------


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """A new ``scrypt$n$r$p$salt_b64$hash_b64`` hash of ``password`` with a random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password.encode(), salt, n, r, p, HASH_BYTES)
    return "$".join(["scrypt", str(n), str(r), str(p), _b64(salt), _b64(digest)])


@dataclass(frozen=True)
class ScryptHash:
    """A parsed ``scrypt$...`` hash."""

    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> ScryptHash:
        """The hash; ``ValueError`` saying what is wrong with it."""
        parts = text.split("$")
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError(
                "must be scrypt$n$r$p$salt$hash; make one with `policy-pubsub hash-password`"
            )
        try:
            n, r, p = (int(part) for part in parts[1:4])
            salt = base64.b64decode(parts[4], validate=True)
            digest = base64.b64decode(parts[5], validate=True)
        except (ValueError, binascii.Error):
            raise ValueError("n, r, p must be integers and salt, hash base64") from None
        if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16:
            raise ValueError("n must be a power of 2, r from 1 to 64, p from 1 to 16")
        if _memory(n, r, p) > MAX_SCRYPT_MEMORY:
            raise ValueError(f"n and r would need more than {MAX_SCRYPT_MEMORY >> 20} MiB")
        if len(salt) < 8 or len(digest) < 16:
            raise ValueError("the salt must have 8 bytes or more and the hash 16 or more")
        return cls(n, r, p, salt, digest)

    def verify(self, password: str) -> bool:
        """Whether ``password`` hashes to this hash (a constant-time comparison).

        A password holding NUL never matches: scrypt keys HMAC with the password, and HMAC
        pads a short key with zero bytes, so ``"pw"`` and ``"pw\\0"`` would hash alike.
        """
        if len(password) > MAX_PASSWORD_CHARS:
            return False
        computed = _scrypt(password.encode(), self.salt, self.n, self.r, self.p, len(self.digest))
        return hmac.compare_digest(computed, self.digest) and "\0" not in password


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches the ``scrypt$...`` hash ``stored`` (False if malformed)."""
    try:
        parsed = ScryptHash.parse(stored)
    except ValueError:
        return False
    return parsed.verify(password)


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password, salt=salt, n=n, r=r, p=p, dklen=length, maxmem=_memory(n, r, p) + (1 << 20)
    )


def _memory(n: int, r: int, p: int) -> int:
    return 128 * r * (n + p + 2)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- the auth file ----------------------------------------------------------------------------


def _role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; the roles are {', '.join(ROLES)}")
    return role


def _topic_pattern(pattern: str) -> str:
    if not TOPIC_GLOB.fullmatch(pattern):
        raise ValueError(
            f"{pattern[:100]!r} is not a topic pattern; use 1-255 of A-Za-z0-9._- "
            "and the globs * ? [...]"
        )
    return pattern


Role = Annotated[str, AfterValidator(_role)]
TopicPattern = Annotated[str, AfterValidator(_topic_pattern)]


class UserEntry(BaseModel):
    """One ``[users.NAME]`` table of the auth file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    password_hash: str | None = None
    password: SecretStr | None = None  # plaintext: for tests and demos only
    token: SecretStr | None = None
    roles: list[Role] = Field(min_length=1)
    # fnmatch globs of the topics a component may subscribe to and read
    topics: list[TopicPattern] = []

    @field_validator("password_hash")
    @classmethod
    def _scrypt_hash(cls, value: str | None) -> str | None:
        if value is not None:
            ScryptHash.parse(value)
        return value

    @field_validator("password")
    @classmethod
    def _password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            raise ValueError("must not be empty")
        return value

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError("must be 16 or more of A-Za-z0-9._~+/- (e.g. `openssl rand -hex 32`)")
        return value


class AuthFileModel(BaseModel):
    """The whole auth file: ``[users.NAME]`` tables and nothing else."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: dict[str, UserEntry]


@dataclass(frozen=True)
class User:
    """An authenticated user: what the request may do is decided from this."""

    name: str
    roles: frozenset[str]
    topics: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    def has_any(self, roles: frozenset[str]) -> bool:
        """An admin may do everything; anyone else needs one of ``roles``."""
        return self.is_admin or not self.roles.isdisjoint(roles)

    def may_read(self, topic: str) -> bool:
        """Whether this user may subscribe to and read ``topic``: an admin, or a component
        one of whose patterns matches it (``fnmatchcase``: ``*``, ``?``, ``[...]``).
        """
        if self.is_admin:
            return True
        return COMPONENT in self.roles and any(fnmatchcase(topic, p) for p in self.topics)

    def describe(self) -> str:
        return f"user {self.name!r} ({', '.join(sorted(self.roles))})"


@dataclass(frozen=True)
class _Credentials:
    user: User
    password_hash: ScryptHash | None
    password: bytes | None
    token: bytes | None


def load_auth_file(path: str | Path) -> Authenticator:
    """Read and check the auth file; ``AuthFileError`` with a one-line reason if unusable."""
    where = f"auth file {path}"
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise AuthFileError(f"{where}: cannot be read: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise AuthFileError(f"{where}: is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise AuthFileError(f"{where}: is not valid TOML: {exc}") from None
    try:
        model = AuthFileModel.model_validate(data)
    except ValidationError as exc:
        raise AuthFileError(f"{where}: {_first_problem(exc)}") from None
    authenticator = Authenticator.from_model(model, where)
    _warn_about(Path(path), model)
    return authenticator


def _first_problem(exc: ValidationError) -> str:
    # An unknown key first: a misspelt one also makes the intended key "missing".
    problems = sorted(exc.errors(include_url=False), key=lambda e: e["type"] != "extra_forbidden")
    first = problems[0]
    field = ""
    for part in first["loc"]:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] == "missing":
        message = "is required"
    text = f"{field or 'file'}: {message}"
    if len(problems) > 1:
        text += f" (and {len(problems) - 1} more problems)"
    return text


def _warn_about(path: Path, model: AuthFileModel) -> None:
    """Log what is allowed but unwise: plaintext passwords, a file others can read."""
    for name, entry in model.users.items():
        if entry.password is not None:
            log.warning(
                "auth file %s: user %r has a plaintext password; use password_hash "
                "(policy-pubsub hash-password) outside tests and demos",
                path,
                name,
            )
    try:
        mode = path.stat().st_mode
    except OSError:  # pragma: no cover - it was just read
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("auth file %s can be read by other users; chmod 600 it", path)


# -- checking credentials ---------------------------------------------------------------------


class Authenticator:
    """The users of the auth file, and the checks of Basic and Bearer credentials."""

    def __init__(self, credentials: dict[str, _Credentials]) -> None:
        self._users = credentials
        self._tokens = [(c.token, c.user) for c in credentials.values() if c.token is not None]
        self._cache: OrderedDict[bytes, User] = OrderedDict()
        self._cache_key = secrets.token_bytes(32)  # per process: the cache holds no plain hash
        self._slots: asyncio.Semaphore | None = None
        self._dummy = ScryptHash.parse(hash_password(secrets.token_hex(16)))

    @classmethod
    def from_model(cls, model: AuthFileModel, where: str = "auth file") -> Authenticator:
        """The authenticator of a checked file; ``AuthFileError`` for what the model allows
        but the file must not say (no users, a user without credentials, a shared token).
        """
        if not model.users:
            raise AuthFileError(f"{where}: users: the file defines no users; add [users.NAME]")
        credentials: dict[str, _Credentials] = {}
        tokens: dict[str, str] = {}
        for name, entry in model.users.items():
            prefix = f"{where}: users.{name}"
            if not USER_NAME.fullmatch(name):
                raise AuthFileError(f"{prefix}: the user name must be 1-255 of A-Za-z0-9._@+-")
            if entry.password_hash is not None and entry.password is not None:
                raise AuthFileError(f"{prefix}: give password_hash or password, not both")
            if entry.password_hash is None and entry.password is None and entry.token is None:
                raise AuthFileError(f"{prefix}: no credentials; give password_hash or token")
            if entry.topics and COMPONENT not in entry.roles:
                raise AuthFileError(f"{prefix}.topics: only a component's topics are used")
            token = entry.token.get_secret_value() if entry.token is not None else None
            if token is not None:
                if token in tokens:
                    raise AuthFileError(f"{prefix}.token: users.{tokens[token]} has the same one")
                tokens[token] = name
            credentials[name] = _Credentials(
                user=User(name, frozenset(entry.roles), tuple(entry.topics)),
                password_hash=(
                    ScryptHash.parse(entry.password_hash) if entry.password_hash else None
                ),
                password=entry.password.get_secret_value().encode() if entry.password else None,
                token=token.encode() if token is not None else None,
            )
        return cls(credentials)

    @property
    def users(self) -> dict[str, User]:
        return {name: c.user for name, c in self._users.items()}

    def knows(self, name: str) -> bool:
        """Whether a user of this name exists (for the log of a failed login)."""
        return name in self._users

    @property
    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value of a 401: Basic, and Bearer when tokens exist."""
        basic = f'Basic realm="{REALM}"'
        return f'{basic}, Bearer realm="{REALM}"' if self._tokens else basic

    async def basic(self, name: str, password: str) -> User | None:
        """The user whose name and password these are, else None.

        Every refusal costs one scrypt check, whether the name is unknown, the user has a
        token only or a plain password, or the password is wrong, so the time an answer
        takes does not tell which users exist or how they log in.
        """
        found = self._users.get(name)
        if found is not None and found.password is not None:
            if hmac.compare_digest(password.encode(), found.password):
                return found.user
            found = None
        if found is None or found.password_hash is None:
            await self._verify(self._dummy, password)
            return None
        key = hmac.digest(self._cache_key, f"{name}\0{password}".encode(), "sha256")
        if key in self._cache:
            self._cache.move_to_end(key)
            return found.user
        if not await self._verify(found.password_hash, password):
            return None
        self._cache[key] = found.user
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return found.user

    def bearer(self, token: str) -> User | None:
        """The user whose token this is, else None (every token is compared, in constant
        time each, so timing does not tell how close a guess came).
        """
        given = token.encode()
        found = None
        for stored, user in self._tokens:
            if hmac.compare_digest(given, stored):
                found = user
        return found

    async def _verify(self, stored: ScryptHash, password: str) -> bool:
        if self._slots is None:
            self._slots = asyncio.Semaphore(VERIFY_CONCURRENCY)
        async with self._slots:
            return await asyncio.to_thread(stored.verify, password)


__all__ = [
    "ADMIN",
    "COMPONENT",
    "PAP",
    "ROLES",
    "AuthFileError",
    "Authenticator",
    "ScryptHash",
    "User",
    "hash_password",
    "load_auth_file",
    "verify_password",
]
