"""Seed instruments and the market-maker account (`python -m brokerx_core.seed`).

Seeding is the only way shares enter the system: each grant is a `share_grant` row, and
the market maker's cash enters as a deposit in the ledger like anyone's. Running the
seed twice changes nothing the second time.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from argon2 import PasswordHasher
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from brokerx_core.db.session import create_engine
from brokerx_core.money import CENT
from brokerx_core.settings import BrokerXSettings

MARKET_MAKER_EMAIL = "market-maker@brokerx.local"
MARKET_MAKER_CASH = Decimal("50000000.00")
MARKET_MAKER_SHARES = 1_000_000


@dataclass(frozen=True, slots=True)
class InstrumentSeed:
    """One listed instrument. Its tick size must be a positive multiple of 0.01: then
    price × (integer) quantity is always a whole number of cents, so what a fill pays
    is exactly what its share of the reservation holds (docs/trading.md, "Tick sizes").
    A sub-cent tick would let per-fill rounding pay more than was reserved."""

    symbol: str
    name: str
    reference_price: Decimal
    tick_size: Decimal = CENT

    def __post_init__(self) -> None:
        tick = self.tick_size
        if not tick.is_finite() or tick <= 0 or tick % CENT:
            raise ValueError(
                f"{self.symbol}: tick size {tick} is not a positive multiple of {CENT}"
            )


INSTRUMENTS: tuple[InstrumentSeed, ...] = (
    InstrumentSeed("AAPL", "Apple Inc.", Decimal("190.00")),
    InstrumentSeed("MSFT", "Microsoft Corporation", Decimal("420.00")),
    InstrumentSeed("AMZN", "Amazon.com, Inc.", Decimal("180.00")),
    InstrumentSeed("GOOGL", "Alphabet Inc. Class A", Decimal("170.00")),
    InstrumentSeed("TSLA", "Tesla, Inc.", Decimal("250.00")),
    InstrumentSeed("NVDA", "NVIDIA Corporation", Decimal("120.00")),
    InstrumentSeed("META", "Meta Platforms, Inc.", Decimal("500.00")),
    InstrumentSeed("NFLX", "Netflix, Inc.", Decimal("650.00")),
)


async def seed_instruments(conn: AsyncConnection) -> None:
    """Insert the instrument list (existing symbols are left as they are)."""
    for item in INSTRUMENTS:
        await conn.execute(
            text(
                "INSERT INTO instrument (symbol, name, tick_size, reference_price, status)"
                " VALUES (:symbol, :name, :tick, :ref, 'active')"
                " ON CONFLICT (symbol) DO NOTHING"
            ),
            {
                "symbol": item.symbol,
                "name": item.name,
                "tick": item.tick_size,
                "ref": item.reference_price,
            },
        )


async def grant_shares(
    conn: AsyncConnection, account_id: uuid.UUID, symbol: str, quantity: int
) -> None:
    """Seed `quantity` shares of `symbol` into an account (a share grant + position)."""
    await conn.execute(
        text(
            "INSERT INTO share_grant (id, account_id, symbol, quantity)"
            " VALUES (:id, :account, :symbol, :qty)"
        ),
        {"id": uuid.uuid4(), "account": account_id, "symbol": symbol, "qty": quantity},
    )
    await conn.execute(
        text(
            "INSERT INTO position (account_id, symbol, quantity, reserved_quantity, avg_cost)"
            " VALUES (:account, :symbol, :qty, 0, 0)"
            " ON CONFLICT (account_id, symbol)"
            " DO UPDATE SET quantity = position.quantity + EXCLUDED.quantity"
        ),
        {"account": account_id, "symbol": symbol, "qty": quantity},
    )


async def credit_deposit(conn: AsyncConnection, account_id: uuid.UUID, amount: Decimal) -> None:
    """Credit cash as a settled deposit with its ledger entry (seeding only)."""
    row = (
        await conn.execute(
            text(
                "UPDATE account SET cash = cash + :amount, version = version + 1"
                " WHERE id = :id RETURNING cash"
            ),
            {"amount": amount, "id": account_id},
        )
    ).one()
    deposit_id = uuid.uuid4()
    await conn.execute(
        text(
            "INSERT INTO deposit (id, account_id, amount, currency, status, balance_after)"
            " VALUES (:id, :account, :amount, 'USD', 'settled', :balance)"
        ),
        {"id": deposit_id, "account": account_id, "amount": amount, "balance": row.cash},
    )
    await conn.execute(
        text(
            "INSERT INTO ledger_entry (id, account_id, kind, amount, balance_after, reference_id)"
            " VALUES (:id, :account, 'deposit', :amount, :balance, :ref)"
        ),
        {
            "id": uuid.uuid4(),
            "account": account_id,
            "amount": amount,
            "balance": row.cash,
            "ref": deposit_id,
        },
    )


async def seed_market_maker(conn: AsyncConnection) -> uuid.UUID:
    """Create the market-maker client and account with cash and inventory (once)."""
    from brokerx_core.db.models import Client

    existing = (
        await conn.execute(select(Client.id).where(Client.email == MARKET_MAKER_EMAIL))
    ).scalar_one_or_none()
    if existing is not None:
        account = (
            await conn.execute(text("SELECT id FROM account WHERE client_id = :c"), {"c": existing})
        ).scalar_one()
        return uuid.UUID(str(account))
    client_id, account_id = uuid.uuid4(), uuid.uuid4()
    # The market maker never logs in: its password is random and thrown away.
    password_hash = PasswordHasher().hash(uuid.uuid4().hex + "Aa1")
    await conn.execute(
        text(
            "INSERT INTO client (id, email, password_hash, first_name, last_name, date_of_birth,"
            " address, status, is_market_maker, verified_at)"
            " VALUES (:id, :email, :pw, 'Market', 'Maker', :dob, 'BrokerX', 'active', true, now())"
        ),
        {
            "id": client_id,
            "email": MARKET_MAKER_EMAIL,
            "pw": password_hash,
            "dob": date(2000, 1, 1),
        },
    )
    await conn.execute(
        text("INSERT INTO account (id, client_id) VALUES (:id, :client)"),
        {"id": account_id, "client": client_id},
    )
    await credit_deposit(conn, account_id, MARKET_MAKER_CASH)
    for item in INSTRUMENTS:
        await grant_shares(conn, account_id, item.symbol, MARKET_MAKER_SHARES)
    return account_id


async def seed(engine: AsyncEngine, *, market_maker: bool = True) -> None:
    """Seed instruments and (optionally) the market maker in one transaction."""
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(7243001)"))  # one seeder at a time
        await seed_instruments(conn)
        if market_maker:
            await seed_market_maker(conn)


async def _main() -> None:
    settings = BrokerXSettings()
    engine = create_engine(settings, pool_size=1)
    try:
        await seed(engine)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(_main())
