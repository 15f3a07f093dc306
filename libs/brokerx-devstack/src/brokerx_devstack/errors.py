"""The one error the devstack raises for problems a developer can act on."""

from __future__ import annotations


class DevstackError(Exception):
    """Something the launcher cannot work around; the message says what to do."""
