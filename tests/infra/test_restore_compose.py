"""scripts/restore.sh in compose mode copies a backup of this machine into the worker's
/backups volume with the mode the backup job gives its files (0600), whatever the
container's umask. A fake compose command runs the `exec` commands locally, with
/backups mapped to a temporary directory.
"""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from .conftest import REPO_ROOT

FAKE_COMPOSE = r"""#!/usr/bin/env bash
# compose exec -T [-e K=V]... worker CMD...: run CMD here, /backups -> $FAKE_BACKUPS.
set -euo pipefail
[[ $1 == exec ]] || { echo "unexpected: $*" >&2; exit 3; }
shift
while [[ $# -gt 0 ]]; do
    case $1 in
        -T) shift ;;
        -e) shift 2 ;;
        worker) shift; break ;;
        *) echo "unexpected option $1" >&2; exit 3 ;;
    esac
done
if [[ $1 == /app/scripts/restore.sh ]]; then
    echo "$*" > "$FAKE_BACKUPS.restore-call"
    exit 0
fi
args=()
for arg in "$@"; do args+=("${arg//\/backups/$FAKE_BACKUPS}"); done
exec "${args[@]}"
"""


def test_a_copied_backup_keeps_mode_0600_in_the_volume(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    volume.mkdir()
    fake = tmp_path / "fake-compose"
    fake.write_text(FAKE_COMPOSE)
    fake.chmod(0o755)
    name = "brokerx-20250315T020000Z.dump"
    local = tmp_path / "local"
    local.mkdir()
    (local / name).write_bytes(b"PGDMP a backup")
    (local / f"{name}.sha256").write_text(f"0123  {name}\n")

    result = subprocess.run(
        [str(REPO_ROOT / "scripts/restore.sh"), str(local / name), "brokerx_restore_drill"],
        env={
            **os.environ,
            "RESTORE_MODE": "compose",
            "COMPOSE": str(fake),
            "FAKE_BACKUPS": str(volume),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        preexec_fn=lambda: os.umask(0o022),  # a container's usual umask
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in volume.iterdir()) == [name, f"{name}.sha256"]
    for copied in volume.iterdir():
        assert stat.S_IMODE(copied.stat().st_mode) == 0o600, copied.name
    assert (volume / name).read_bytes() == b"PGDMP a backup"
    assert (volume / f"{name}.sha256").read_text() == f"0123  {name}\n"
    call = (tmp_path / "volume.restore-call").read_text().split()
    assert call == ["/app/scripts/restore.sh", f"/backups/{name}", "brokerx_restore_drill"]
