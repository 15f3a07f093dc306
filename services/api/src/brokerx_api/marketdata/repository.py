"""Instrument queries (the only marketdata state PostgreSQL holds)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from brokerx_core.db.models import Instrument


async def list_instruments(session: AsyncSession) -> list[Instrument]:
    """Every listed instrument, by symbol."""
    result = await session.execute(select(Instrument).order_by(Instrument.symbol))
    return list(result.scalars())
