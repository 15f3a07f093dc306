"""Trading test helpers: funded clients with a live session, and views of what intake wrote.

`create_trader` makes an active client with an account, cash entered as a deposit
(ledger entry included, so the invariants hold) and shares entered as seed grants, plus
a login session and a Bearer token the in-process api accepts.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core.messages import OrderCommand, decode_command
from tests.support import orders_sql


@dataclass(frozen=True)
class Trader:
    client_id: uuid.UUID
    account_id: uuid.UUID
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


async def create_trader(
    engine: AsyncEngine,
    api_app: Any,
    *,
    cash: Decimal | str = "0",
    shares: dict[str, int] | None = None,
) -> Trader:
    """An active client with an account, cash, shares and a live login session."""
    from brokerx_api.auth.deps import token_service_from

    session_id = uuid.uuid4()
    async with engine.begin() as conn:
        funded = await orders_sql.create_trader(conn, cash=Decimal(cash), shares=shares)
        client_id, account_id = funded.client_id, funded.account_id
        await conn.execute(
            text(
                "INSERT INTO auth_session (id, client_id, expires_at)"
                " VALUES (:id, :client, :expires)"
            ),
            {
                "id": session_id,
                "client": client_id,
                "expires": datetime.now(UTC) + timedelta(days=1),
            },
        )
    token = token_service_from(api_app.state.settings).issue_access(client_id, session_id)
    return Trader(client_id, account_id, token)


async def account_state(engine: AsyncEngine, account_id: uuid.UUID) -> tuple[Decimal, Decimal]:
    """(cash, reserved_cash) of an account."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT cash, reserved_cash FROM account WHERE id = :id"), {"id": account_id}
            )
        ).one()
    return row.cash, row.reserved_cash


async def position_state(
    engine: AsyncEngine, account_id: uuid.UUID, symbol: str
) -> tuple[int, int]:
    """(quantity, reserved_quantity) of a position ((0, 0) when there is none)."""
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT quantity, reserved_quantity FROM position"
                    " WHERE account_id = :a AND symbol = :s"
                ),
                {"a": account_id, "s": symbol},
            )
        ).first()
    return (row.quantity, row.reserved_quantity) if row else (0, 0)


async def count_rows(engine: AsyncEngine, table: str) -> int:
    """Rows in a table (a fixed table name from the test itself)."""
    async with engine.connect() as conn:
        return int((await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def outbox_rows(engine: AsyncEngine) -> list[Any]:
    """Every outbox row, oldest first."""
    async with engine.connect() as conn:
        return list(
            (
                await conn.execute(
                    text(
                        "SELECT id, stream, payload, published_at, attempts FROM outbox ORDER BY id"
                    )
                )
            ).all()
        )


async def stream_commands(redis: Redis, shards: int = 4) -> list[tuple[str, OrderCommand]]:
    """Every command on the `orders.<shard>` streams as (stream, command)."""
    found: list[tuple[str, OrderCommand]] = []
    for shard in range(shards):
        stream = f"orders.{shard}"
        for _entry_id, fields in await redis.xrange(stream):
            found.append((stream, decode_command(fields)))
    return found


async def place(
    api: httpx.AsyncClient,
    who: Trader,
    *,
    symbol: str = "AAPL",
    side: str = "buy",
    quantity: int = 10,
    price: str | None = "190.00",
    **extra: Any,
) -> dict[str, Any]:
    """POST /orders for `who` (a market order when `price` is None); must answer 201."""
    body = {"symbol": symbol, "side": side, "quantity": quantity, **extra}
    body |= {"type": "limit", "limit_price": price} if price else {"type": "market"}
    response = await api.post("/api/v1/orders", json=body, headers=who.headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


async def record_fill(
    engine: AsyncEngine, buy: dict[str, Any], sell: dict[str, Any], price: str, quantity: int
) -> uuid.UUID:
    """Write a partial fill of two orders as the engine would (trade row, filled
    quantities; no settlement: only for tests that read fills)."""
    trade_id = uuid.uuid4()
    async with engine.begin() as conn:
        accounts = {
            row.id: row.account_id
            for row in await conn.execute(
                text("SELECT id, account_id FROM client_order WHERE id IN (:b, :s)"),
                {"b": buy["id"], "s": sell["id"]},
            )
        }
        await conn.execute(
            text(
                "INSERT INTO trade (id, symbol, price, quantity, buy_order_id, sell_order_id,"
                " buyer_account_id, seller_account_id, aggressor_side)"
                " VALUES (:id, :symbol, :price, :qty, :b, :s, :ba, :sa, 'buy')"
            ),
            {
                "id": trade_id,
                "symbol": buy["symbol"],
                "price": Decimal(price),
                "qty": quantity,
                "b": buy["id"],
                "s": sell["id"],
                "ba": accounts[uuid.UUID(buy["id"])],
                "sa": accounts[uuid.UUID(sell["id"])],
            },
        )
        await conn.execute(
            text(
                "UPDATE client_order SET filled_quantity = filled_quantity + :q,"
                " status = 'partially_filled', avg_fill_price = :p WHERE id IN (:b, :s)"
            ),
            {"q": quantity, "p": Decimal(price), "b": buy["id"], "s": sell["id"]},
        )
    return trade_id


async def finish_order(engine: AsyncEngine, order_id: uuid.UUID, status: str = "canceled") -> None:
    """Do what the engine does when an order ends unfilled: set the terminal status and
    release whatever reservation the row holds."""
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                text(
                    "SELECT account_id, symbol, side, reserved_amount, reserved_quantity"
                    " FROM client_order WHERE id = :id FOR UPDATE"
                ),
                {"id": order_id},
            )
        ).one()
        if row.side == "buy":
            await conn.execute(
                text("UPDATE account SET reserved_cash = reserved_cash - :r WHERE id = :a"),
                {"r": row.reserved_amount, "a": row.account_id},
            )
        else:
            await conn.execute(
                text(
                    "UPDATE position SET reserved_quantity = reserved_quantity - :q"
                    " WHERE account_id = :a AND symbol = :s"
                ),
                {"q": row.reserved_quantity, "a": row.account_id, "s": row.symbol},
            )
        await conn.execute(
            text(
                "UPDATE client_order SET status = :status, reserved_amount = 0,"
                " reserved_quantity = 0, updated_at = now() WHERE id = :id"
            ),
            {"status": status, "id": order_id},
        )
