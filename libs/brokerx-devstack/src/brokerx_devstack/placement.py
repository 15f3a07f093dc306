"""Where the PostgreSQL cluster and binaries go so an unprivileged account can use them.

As root, the cluster belongs to another account (PostgreSQL refuses root). That account
may be unable to reach a checkout under a private home such as /root: then the cluster
lives under /var/lib/brokerx-devstack/<hash of the data dir> and `<data_dir>/postgres`
is a symlink to it; likewise the pgserver wheel's install is copied there once when the
virtualenv is private. /var/lib, not /var/tmp: tmp cleaners delete old files one by
one, which would corrupt a cluster.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

from brokerx_devstack.account import Account, can_access
from brokerx_devstack.binaries import PostgresBinaries
from brokerx_devstack.errors import DevstackError
from brokerx_devstack.versions import render

RELOCATION_ROOT = Path("/var/lib/brokerx-devstack")


def relocation_dir(data_dir: Path) -> Path:
    """Where the cluster of `data_dir` lives when its owner cannot reach `data_dir`."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return RELOCATION_ROOT / digest / "postgres"


def _safe_root_dir(path: Path) -> None:
    """Create a root-owned dir the account may traverse but not write (refuse any other)."""
    path.mkdir(mode=0o755, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
        raise DevstackError(f"{path} must be a directory owned by root and writable only by it")


def prepare_root(data_dir: Path, account: Account | None) -> Path:
    """Create the cluster's root dir where `account` can use it (relocating if needed).

    Returns the real path: the account may be unable to traverse `data_dir` to follow
    the symlink, so every path handed to PostgreSQL must be the resolved one.
    """
    link = data_dir / "postgres"
    if link.is_symlink():
        target = link.resolve()
        if account is not None:
            _safe_root_dir(target.parent.parent)
            _safe_root_dir(target.parent)
        target.mkdir(mode=0o700, exist_ok=True)
        if account is not None:
            account.chown(target)
        return target
    link.mkdir(mode=0o700, exist_ok=True)
    if account is None:
        return link
    account.chown(link)
    if can_access(account, link, "w") and can_access(account, link, "x"):
        return link
    if any(link.iterdir()):
        raise DevstackError(
            f"{account.name} cannot reach {link}, which already holds files: start with --fresh"
        )
    target = relocation_dir(data_dir)
    _safe_root_dir(target.parent.parent)
    _safe_root_dir(target.parent)
    target.mkdir(mode=0o700, exist_ok=True)
    account.chown(target)
    link.rmdir()
    link.symlink_to(target, target_is_directory=True)
    return target


def reachable_binaries(binaries: PostgresBinaries, account: Account | None) -> PostgresBinaries:
    """The same binaries at a path `account` can execute (copies the wheel's if needed)."""
    if account is None or can_access(account, Path(binaries.tool("postgres")), "x"):
        return binaries
    if not binaries.bundled:
        raise DevstackError(f"{account.name} cannot execute {binaries.bin_dir}")
    # The wheel sits in a virtualenv under a private home (/root/...): copy its
    # relocatable install to a place the account can read, once per version.
    install = binaries.bin_dir.parent
    copy = RELOCATION_ROOT / f"pginstall-{render(binaries.version)}"
    _safe_root_dir(RELOCATION_ROOT)
    if not (copy / "bin" / "postgres").exists():
        partial = copy.with_name(copy.name + f".{os.getpid()}.tmp")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(install, partial, symlinks=True)
        for directory, _, files in os.walk(partial):
            os.chmod(directory, 0o755)
            for name in files:
                path = Path(directory) / name
                if not path.is_symlink():
                    path.chmod(path.stat().st_mode | 0o444)
        partial.rename(copy)
    return PostgresBinaries(copy / "bin", binaries.version, bundled=True)
