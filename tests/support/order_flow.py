"""A random but reproducible order flow through the SQL intake helpers (crash tests,
benchmarks): many traders, limit orders around the reference price (a third crossing),
some market/ioc/fok orders, cancels and replaces of earlier orders."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.support.orders_sql import (
    Sent,
    Trader,
    create_trader,
    place_order,
    publish,
    request_cancel,
    request_replace,
)

# Symbols spread over the four default shards (AAPL 0, META 1, AMZN 2, MSFT/TSLA 3).
SYMBOLS = {
    "AAPL": Decimal("190.00"),
    "META": Decimal("500.00"),
    "AMZN": Decimal("180.00"),
    "MSFT": Decimal("420.00"),
    "TSLA": Decimal("250.00"),
}
CENT = Decimal("0.01")


async def create_traders(
    engine: AsyncEngine, count: int, *, cash: int = 5_000_000, shares: int = 100_000
) -> list[Trader]:
    """`count` traders, each with cash and shares of every symbol of the flow."""
    async with engine.begin() as conn:
        return [
            await create_trader(
                conn, cash=cash, shares=dict.fromkeys(SYMBOLS, shares), name=f"t{i}"
            )
            for i in range(count)
        ]


@dataclass
class OrderFlow:
    traders: Sequence[Trader]
    seed: int = 7
    cancels: float = 0.08  # share of commands that cancel an earlier order
    replaces: float = 0.04  # share that replace one
    market: float = 0.05
    placed: list[uuid.UUID] = field(default_factory=list)
    commands: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._inflight = 0

    async def send(
        self, engine: AsyncEngine, redis: Redis, orders: int, *, concurrency: int = 4
    ) -> None:
        """Place `orders` new orders (plus cancels and replaces) from `concurrency`
        concurrent clients; each command is one transaction, published after its commit,
        as the api does (a transaction holding several accounts could deadlock with the
        engine, which locks accounts in id order)."""

        async def client() -> None:
            while len(self.placed) + self._inflight < orders:
                self._inflight += 1
                try:
                    async with engine.begin() as conn:
                        sent = await self._one(conn)
                finally:
                    self._inflight -= 1
                # Only committed orders may be picked for a cancel or replace.
                if sent is not None and sent.command.type == "new_order":
                    self.placed.append(sent.order_id)
                await publish(redis, [sent])

        # A TaskGroup: if one client fails, the others stop too (none outlives the test).
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(client())

    async def _one(self, conn: AsyncConnection) -> Sent | None:
        rng = self.rng
        self.commands += 1
        roll = rng.random()
        if self.placed and roll < self.cancels:
            return await request_cancel(conn, rng.choice(self.placed[-500:]))
        if self.placed and roll < self.cancels + self.replaces:
            return await self._replace(conn, rng.choice(self.placed[-500:]))
        trader = rng.choice(self.traders)
        symbol = rng.choice(list(SYMBOLS))
        ref = SYMBOLS[symbol]
        side = rng.choice(("buy", "sell"))
        quantity = rng.randint(1, 100)
        if rng.random() < self.market:
            sent = await place_order(conn, trader.account_id, symbol, side, quantity)
        else:
            # Passive orders within 1 % of the reference; a third cross it by up to 0.5 %.
            offset = Decimal(rng.randint(0, 100)) / 10_000
            if rng.random() < 0.33:
                price = ref * (1 + offset / 2) if side == "buy" else ref * (1 - offset / 2)
            else:
                price = ref * (1 - offset) if side == "buy" else ref * (1 + offset)
            price = price.quantize(CENT)
            tif = rng.choices(("day", "gtc", "ioc", "fok"), weights=(60, 25, 10, 5))[0]
            sent = await place_order(
                conn,
                trader.account_id,
                symbol,
                side,
                quantity,
                limit_price=price,
                time_in_force=tif,
            )
        return sent

    async def _replace(self, conn: AsyncConnection, order_id: uuid.UUID) -> Sent | None:
        row = (
            await conn.execute(
                text(
                    "SELECT version, status, type, quantity, filled_quantity, limit_price"
                    " FROM client_order WHERE id = :id"
                ),
                {"id": order_id},
            )
        ).one()
        # The api refuses to modify terminal or market orders (order_not_modifiable).
        if row.type != "limit" or row.status not in ("pending_new", "new", "partially_filled"):
            return None
        rng = self.rng
        quantity = max(row.filled_quantity + 1, row.quantity + rng.randint(-20, 20))
        price = (row.limit_price * (1 + Decimal(rng.randint(-20, 20)) / 10_000)).quantize(CENT)
        return await request_replace(
            conn, order_id, version=row.version, quantity=quantity, limit_price=price
        )
