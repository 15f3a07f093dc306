"""Test-only fault injection (`MatchingSettings.fault_exit_after_commit`).

Lets a test kill the real process at the one point a signal cannot aim at: right after
a batch's commit, before anything of it is published or acknowledged.
"""

from __future__ import annotations

import os
import sys

_commits = 0  # batch commits of this process, every shard together


def after_commit(exit_after: int) -> None:
    """Count a batch commit; the `exit_after`-th one ends the process at once (exit
    status 137, as a SIGKILL would), with no cleanup. 0 disables the hook."""
    global _commits
    if exit_after <= 0:
        return
    _commits += 1
    if _commits >= exit_after:
        sys.stderr.write(f"fault injection: exiting after batch commit {_commits}\n")
        sys.stderr.flush()
        os._exit(137)
