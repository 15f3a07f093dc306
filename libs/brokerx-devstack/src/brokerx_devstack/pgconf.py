"""The settings file the launcher writes into a dev cluster (`devstack.conf`)."""

from __future__ import annotations

import re
from pathlib import Path

from brokerx_devstack.errors import DevstackError
from brokerx_devstack.procs import LOCALHOST

# sun_path holds 107 bytes; PostgreSQL appends "/.s.PGSQL.<port>" (at most 16).
MAX_SOCKET_DIR = 107 - 16
_SETTING_NAME = re.compile(r"[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?")


def conf_text(port: int, socket_dir: Path | None, extra: dict[str, str] | None = None) -> str:
    """The settings the launcher controls, then `extra` (`extra_settings`).

    fsync and full-page writes are off: a dev cluster survives a killed process or a
    Ctrl-C intact, and only an OS crash could corrupt it. Commits stay synchronous so
    a killed run loses nothing it acknowledged.
    """

    def quoted(value: str) -> str:
        return "'" + value.replace("'", "''") + "'"

    sockets = str(socket_dir) if socket_dir and len(str(socket_dir)) <= MAX_SOCKET_DIR else ""
    return (
        "# Written by brokerx-devstack at every start; edits are overwritten.\n"
        f"listen_addresses = {quoted(LOCALHOST)}\n"
        f"port = {port}\n"
        f"unix_socket_directories = {quoted(sockets)}\n"
        "max_connections = 300\n"
        "fsync = off\n"
        "full_page_writes = off\n"
        "timezone = 'UTC'\n"
        + "".join(f"{name} = {quoted(value)}\n" for name, value in (extra or {}).items())
    )


def extra_settings(text: str) -> dict[str, str]:
    """`DEVSTACK_PG_SETTINGS`: `name=value` pairs separated by `;` (a measurement may ask
    for, say, `shared_preload_libraries=pg_stat_statements`)."""
    settings: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(";"))):
        name, sep, value = item.partition("=")
        if not sep or not _SETTING_NAME.fullmatch(name.strip()) or "\n" in value:
            raise DevstackError(f"DEVSTACK_PG_SETTINGS: expected name=value, got {item!r}")
        settings[name.strip()] = value.strip()
    return settings
