"""`brokerx-matching`: run the matching service until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio

from brokerx_matching.service import run
from brokerx_matching.settings import MatchingSettings


def main() -> None:
    asyncio.run(run(MatchingSettings()))


if __name__ == "__main__":
    main()
