"""Durable storage behind one interface, one module per backend.

``open_store(url)`` picks the module from the URL's scheme; drivers are
imported only when their store is used.
"""

from __future__ import annotations

import importlib

from geartrain.server.stores.base import Store, StoredJob, StoreError
from geartrain.server.stores.url import StoreURL, StoreURLError, parse_store_url

_MODULES = {
    "memory": ("geartrain.server.stores.memory", "MemoryStore"),
    "sqlite": ("geartrain.server.stores.sqlite", "SQLiteStore"),
    "mysql": ("geartrain.server.stores.mysql", "MySQLStore"),
    "postgresql": ("geartrain.server.stores.postgres", "PostgresStore"),
    "redis": ("geartrain.server.stores.redis", "RedisStore"),
}


def create_store(url: StoreURL) -> Store:
    """A (not yet opened) store for *url*."""
    module_name, class_name = _MODULES[url.scheme]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise StoreError(f"the {url.scheme} store needs a driver that is not installed: {exc}") from None
    cls: type[Store] = getattr(module, class_name)
    return cls(url)


__all__ = ["Store", "StoreError", "StoreURL", "StoreURLError", "StoredJob", "create_store",
           "parse_store_url"]
