"""Store URLs (``--store``) and where their passwords come from.

``memory``, ``sqlite:///path/queue.db``, ``mysql://user@host:port/db``,
``postgresql://user@host:port/db``, ``redis://host:port/n``. A password may
sit in the URL (``mysql://user:secret@host/db``) but is warned about: it is
visible to other users in ``ps`` until the server hides its command line, and
in shell histories. Better sources, in order: the URL, the
``GEARTRAIN_STORE_PASSWORD`` environment variable, a ``store-password`` in a
config file (refused when other users may read it), ``--store-password-file``
(same check), and the driver's own files (``~/.pgpass``, ``~/.my.cnf``).
"""

from __future__ import annotations

import dataclasses
import os
import stat
from urllib.parse import parse_qsl, quote, unquote, urlsplit

SCHEMES = ("memory", "sqlite", "mysql", "postgresql", "redis")
_ALIASES = {"postgres": "postgresql", "mariadb": "mysql", "rediss": "redis"}


class StoreURLError(ValueError):
    """A --store value the server cannot use."""


@dataclasses.dataclass
class StoreURL:
    scheme: str
    host: str = ""
    port: int | None = None
    user: str = ""
    password: str | None = dataclasses.field(default=None, repr=False)
    database: str = ""  #: database name, sqlite path, or redis db number
    params: dict[str, str] = dataclasses.field(default_factory=dict)
    password_in_url: bool = False
    tls: bool = False  #: rediss://

    def redacted(self) -> str:
        """The URL with any password replaced by ``***``."""
        if self.scheme == "memory":
            return "memory"
        if self.scheme == "sqlite":
            return "sqlite://" + (self.database if self.database.startswith("/") else "/" + self.database)
        auth = quote(self.user, safe="") if self.user else ""
        if self.password is not None:
            auth += ":***"
        netloc = (auth + "@" if auth else "") + (f"[{self.host}]" if ":" in self.host else self.host)
        if self.port:
            netloc += f":{self.port}"
        scheme = "rediss" if self.tls else self.scheme
        query = "&".join(f"{k}={quote(v, safe='')}" for k, v in self.params.items())
        return f"{scheme}://{netloc}/{self.database}" + (f"?{query}" if query else "")


def parse_store_url(text: str) -> StoreURL:
    text = text.strip()
    if text == "memory":
        return StoreURL("memory")
    parts = urlsplit(text)
    scheme = _ALIASES.get(parts.scheme, parts.scheme)
    if scheme not in SCHEMES:
        raise StoreURLError(
            f"--store {_redact_raw(text)!r}: unknown kind {parts.scheme!r}; use memory, "
            "sqlite:///path, mysql://user@host/db, postgresql://user@host/db or redis://host/n"
        )
    params = dict(parse_qsl(parts.query))
    if scheme == "sqlite":
        path = unquote(parts.path)
        if parts.netloc:  # sqlite://relative/path is a common slip for sqlite:///relative/path
            path = parts.netloc + path
        if not path:
            raise StoreURLError("--store sqlite:///PATH needs a file path")
        # sqlite:///abs/path -> /abs/path; sqlite:///rel (netloc empty, path '/rel') -> keep absolute
        return StoreURL("sqlite", database=path, params=params)
    try:
        port = parts.port
    except ValueError:
        raise StoreURLError(f"--store {_redact_raw(text)!r}: bad port") from None
    password = unquote(parts.password) if parts.password is not None else None
    return StoreURL(
        scheme,
        host=parts.hostname or "",
        port=port,
        user=unquote(parts.username or ""),
        password=password,
        database=unquote(parts.path.lstrip("/")),
        params=params,
        password_in_url=password is not None,
        tls=parts.scheme == "rediss",
    )


def _redact_raw(text: str) -> str:
    try:
        parts = urlsplit(text)
        if parts.password:
            return text.replace(":" + parts.password + "@", ":***@")
    except ValueError:
        pass
    return text


def check_private(path: str) -> None:
    """Refuse a secrets file that users other than its owner may read."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise StoreURLError(f"cannot read {path}: {exc.strerror}") from None
    if mode & (stat.S_IRGRP | stat.S_IROTH | stat.S_IWGRP | stat.S_IWOTH):
        raise StoreURLError(
            f"{path} holds a password but other users may read it (mode "
            f"{stat.S_IMODE(mode):o}); run: chmod 600 {path}"
        )


def read_password_file(path: str) -> str:
    check_private(path)
    with open(path, encoding="utf-8") as fh:
        return fh.read().strip("\r\n")
