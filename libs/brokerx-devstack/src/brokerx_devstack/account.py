"""The unprivileged account PostgreSQL runs as when the launcher runs as root.

initdb, pg_ctl and postgres refuse to run as root. As root we run them as a system
user `brokerx-dev` (created with useradd when missing), else as `nobody`; a cluster
that already exists keeps the owner it was created with.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

DEV_USER = "brokerx-dev"
FALLBACK_USER = "nobody"


@dataclass(frozen=True)
class Account:
    """A user to run a child process as (via Popen's user/group arguments)."""

    name: str
    uid: int
    gid: int

    def popen_kwargs(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def chown(self, path: Path) -> None:
        os.chown(path, self.uid, self.gid, follow_symlinks=False)


def popen_kwargs(account: Account | None) -> dict[str, Any]:
    """Popen arguments that run the child as `account` (nothing when None)."""
    return account.popen_kwargs() if account is not None else {}


def _from_passwd(entry: pwd.struct_passwd) -> Account:
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def create_system_user(name: str) -> bool:
    """`useradd --system` a login-less user; False when that is not possible here."""
    command = [
        "useradd",
        "--system",
        "--user-group",
        "--no-create-home",
        "--home-dir",
        "/nonexistent",
        "--shell",
        "/usr/sbin/nologin",
        name,
    ]
    try:
        done = subprocess.run(command, capture_output=True, timeout=30, check=False)
    except OSError:
        return False
    return done.returncode == 0


def postgres_account(existing_owner: int | None = None) -> Account | None:
    """Who runs PostgreSQL: None (ourselves) unless we are root; see the module doc."""
    if os.geteuid() != 0:
        return None
    if existing_owner not in (None, 0):
        assert existing_owner is not None
        try:
            return _from_passwd(pwd.getpwuid(existing_owner))
        except KeyError:  # a uid without a passwd entry still works for setuid
            return Account(str(existing_owner), existing_owner, existing_owner)
    for attempt in range(2):
        try:
            return _from_passwd(pwd.getpwnam(DEV_USER))
        except KeyError:
            if attempt == 0 and not create_system_user(DEV_USER):
                break
    return _from_passwd(pwd.getpwnam(FALLBACK_USER))


def can_access(account: Account | None, path: Path, mode: Literal["r", "w", "x"]) -> bool:
    """Whether `account` may read/write/execute-or-traverse `path` (asks `test` as it)."""
    if account is None:
        return os.access(path, {"r": os.R_OK, "w": os.W_OK, "x": os.X_OK}[mode])
    try:
        done = subprocess.run(
            ["test", f"-{mode}", str(path)],
            cwd="/",
            capture_output=True,
            timeout=10,
            check=False,
            **account.popen_kwargs(),
        )
    except OSError:
        return False
    return done.returncode == 0
