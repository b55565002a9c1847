"""What the kernel knows of a running process: resident memory, database connections, log size.

Linux only (`/proc`). A probe of a process that has just exited answers None instead of failing:
the chaos run kills processes while it samples them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url


@dataclass(frozen=True)
class DatabaseTarget:
    """How to recognise a process's connections to the database: the SQLite file it opens,
    or the TCP port of the PostgreSQL server it talks to."""

    sqlite_path: Path | None = None
    tcp_port: int | None = None

    @classmethod
    def of(cls, database_url: str, cwd: Path) -> DatabaseTarget:
        """From an SQLAlchemy URL; a relative SQLite path is relative to the processes' `cwd`."""
        url = make_url(database_url)
        if url.get_backend_name() == "sqlite":
            path = Path(url.database or "")
            return cls(sqlite_path=(path if path.is_absolute() else cwd / path).resolve())
        return cls(tcp_port=url.port or 5432)


def rss_kib(pid: int) -> int | None:
    """VmRSS of `pid` in KiB (None if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


def _fd_targets(pid: int) -> list[str] | None:
    directory = f"/proc/{pid}/fd"
    try:
        names = os.listdir(directory)
    except OSError:
        return None
    targets = []
    for name in names:
        try:
            targets.append(os.readlink(f"{directory}/{name}"))
        except OSError:
            continue  # closed meanwhile
    return targets


def _tcp_inodes_to_port(pid: int, port: int) -> set[str]:
    """Inodes of the TCP sockets (in `pid`'s network namespace) whose remote port is `port`."""
    wanted = f"{port:04X}"
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[2].rpartition(":")[2] == wanted:
                inodes.add(fields[9])
    return inodes


def db_connections(pid: int, target: DatabaseTarget) -> int | None:
    """How many connections `pid` holds to the database right now (None if it is gone).

    SQLite: its open descriptors on the database file (one per connection; the `-wal` and
    `-shm` files a connection also holds are not counted again). PostgreSQL: its TCP sockets
    to the server's port.
    """
    targets = _fd_targets(pid)
    if targets is None:
        return None
    if target.sqlite_path is not None:
        return sum(1 for t in targets if t == str(target.sqlite_path))
    assert target.tcp_port is not None
    sockets = {t[len("socket:[") : -1] for t in targets if t.startswith("socket:[")}
    return len(sockets & _tcp_inodes_to_port(pid, target.tcp_port))


def file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
