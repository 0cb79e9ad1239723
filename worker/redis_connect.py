"""One way to open the product's Redis from REDIS_URL: a plain URL (`redis://`,
`rediss://`, `unix://`) or Redis Sentinel (issue 14).

Sentinel: `REDIS_URL=sentinel://[:password@]host:26379[,host2:26379...]/db` names the
sentinels (the password, if any, is the data nodes'), and `REDIS_SENTINEL_MASTER` the
monitored master's name. The state client asks the sentinels for the current master on
every (re)connect, so after a failover it follows the promoted replica by itself; while no
master answers, calls fail fast (the receiver answers 503, workers retry). Celery's broker
gets the same sentinels in kombu's form (`broker_url_for`), with `master_name` in its
transport options (worker/celery_app.py).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel


def is_sentinel(url: str) -> bool:
    return url.strip().lower().startswith("sentinel://")


def sentinel_nodes(url: str) -> tuple[list[tuple[str, int]], str | None, int]:
    """(sentinel addresses, data password or None, db) of a `sentinel://` URL."""
    parts = urlsplit(url.strip())
    netloc = parts.netloc
    password: str | None = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        password = unquote(auth.split(":", 1)[1]) if ":" in auth else unquote(auth) or None
    nodes: list[tuple[str, int]] = []
    for item in netloc.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host:
            host, port = item.strip(), "26379"
        nodes.append((host.strip("[]"), int(port or 26379)))
    db_text = parts.path.strip("/")
    return nodes, password, int(db_text) if db_text else 0


def broker_url_for(url: str) -> str:
    """kombu's form of a `sentinel://` URL (one `sentinel://` per node, `;`-separated)."""
    if not is_sentinel(url):
        return url
    nodes, password, db = sentinel_nodes(url)
    auth = f":{password}@" if password else ""
    return ";".join(f"sentinel://{auth}{host}:{port}/{db}" for host, port in nodes)


def connect(url: str, *, master: str | None = None, **kwargs: Any) -> redis.Redis:
    """A client of the product's Redis: `redis.Redis.from_url(url, **kwargs)`, or for a
    `sentinel://` URL the current master of `master` (REDIS_SENTINEL_MASTER)."""
    if not is_sentinel(url):
        return redis.Redis.from_url(url, **kwargs)
    if not master:
        raise ValueError("REDIS_SENTINEL_MASTER is required with a sentinel:// REDIS_URL")
    nodes, password, db = sentinel_nodes(url)
    timeouts = {k: kwargs[k] for k in ("socket_timeout", "socket_connect_timeout") if k in kwargs}
    sentinel = Sentinel(nodes, sentinel_kwargs=dict(timeouts), **timeouts)
    return sentinel.master_for(master, db=db, password=password, **kwargs)
