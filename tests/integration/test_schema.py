"""The schema: migrations go up and down cleanly; the database itself holds invariants."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from brokerx_core.migrate import downgrade, upgrade
from tests.support.scratch_db import scratch_database
from tests.support.servers import ServerUrls


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        )
        names = {r[0] for r in rows}
    await engine.dispose()
    return names


async def test_migrations_up_down_up(servers: ServerUrls) -> None:
    async with scratch_database(servers, "brokerx_migrations") as url:
        await asyncio.to_thread(upgrade, url)
        assert {"client", "account", "client_order", "trade", "audit_event"} <= await _tables(url)
        await asyncio.to_thread(downgrade, url)
        assert await _tables(url) <= {"alembic_version"}
        await asyncio.to_thread(upgrade, url)
        assert "ledger_entry" in await _tables(url)


async def _totp_column_types(url: str) -> set[str]:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT column_name, data_type, character_maximum_length"
                " FROM information_schema.columns WHERE table_name = 'client'"
                " AND column_name IN ('totp_secret', 'totp_pending_secret')"
            )
        )
        types = {f"{row[1]}({row[2]})" if row[2] else row[1] for row in rows}
    await engine.dispose()
    return types


async def test_migration_0006_widens_the_totp_columns_and_refuses_to_narrow_ciphertext(
    servers: ServerUrls,
) -> None:
    async with scratch_database(servers, "brokerx_migrations") as url:
        await asyncio.to_thread(upgrade, url)
        assert await _totp_column_types(url) == {"text"}
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await _client_and_account(conn)
            # A Fernet token of a 32-character base32 secret: 140 characters.
            await conn.execute(text("UPDATE client SET totp_secret = repeat('g', 140)"))
        with pytest.raises(RuntimeError, match="rekey --plaintext"):
            await asyncio.to_thread(downgrade, url, "0005")
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE client SET totp_secret = repeat('A', 32)"))
        await engine.dispose()
        await asyncio.to_thread(downgrade, url, "0005")
        assert await _totp_column_types(url) == {"character varying(64)"}
        await asyncio.to_thread(upgrade, url)
        assert await _totp_column_types(url) == {"text"}


async def _client_and_account(conn: object) -> uuid.UUID:
    client_id, account_id = uuid.uuid4(), uuid.uuid4()
    await conn.execute(  # type: ignore[attr-defined]
        text(
            "INSERT INTO client (id, email, password_hash, first_name, last_name,"
            " date_of_birth, address) VALUES (:id, :email, 'x', 'A', 'B', '1990-01-01', 'addr')"
        ),
        {"id": client_id, "email": f"{client_id}@example.com"},
    )
    await conn.execute(  # type: ignore[attr-defined]
        text("INSERT INTO account (id, client_id, cash) VALUES (:id, :c, 100)"),
        {"id": account_id, "c": client_id},
    )
    return account_id


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        ("UPDATE account SET cash = -1 WHERE id = :id", "ck_account_cash_non_negative"),
        (
            "UPDATE account SET reserved_cash = 101 WHERE id = :id",
            "ck_account_reserved_within_cash",
        ),
        (
            "UPDATE account SET reserved_cash = -1 WHERE id = :id",
            "ck_account_reserved_cash_non_negative",
        ),
    ],
)
async def test_account_checks_reject_bad_cash(
    engine: AsyncEngine, statement: str, constraint: str
) -> None:
    async with engine.begin() as conn:
        account_id = await _client_and_account(conn)
    with pytest.raises(IntegrityError, match=constraint):
        async with engine.begin() as conn:
            await conn.execute(text(statement), {"id": account_id})
    async with engine.connect() as conn:
        cash = (
            await conn.execute(text("SELECT cash FROM account WHERE id = :id"), {"id": account_id})
        ).scalar_one()
    assert cash == 100


async def _order(conn: object, account_id: uuid.UUID, **overrides: object) -> None:
    values = {
        "id": uuid.uuid4(),
        "account": account_id,
        "quantity": 10,
        "filled": 0,
        "status": "new",
        **overrides,
    }
    await conn.execute(  # type: ignore[attr-defined]
        text(
            "INSERT INTO client_order (id, account_id, symbol, side, type, quantity, limit_price,"
            " status, filled_quantity) VALUES (:id, :account, 'AAPL', 'buy', 'limit', :quantity,"
            " 190, :status, :filled)"
        ),
        values,
    )


@pytest.mark.usefixtures("instruments")
async def test_order_checks_reject_overfill_and_bad_status(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        account_id = await _client_and_account(conn)
        await _order(conn, account_id)  # a valid order goes in
    with pytest.raises(IntegrityError, match="ck_client_order_filled_within_quantity"):
        async with engine.begin() as conn:
            await _order(conn, account_id, filled=11, status="partially_filled")
    with pytest.raises(IntegrityError, match="ck_client_order_status_agrees_with_fills"):
        async with engine.begin() as conn:
            await _order(conn, account_id, filled=3, status="filled")
    with pytest.raises(IntegrityError, match="ck_client_order_quantity_positive"):
        async with engine.begin() as conn:
            await _order(conn, account_id, quantity=0)


@pytest.mark.usefixtures("instruments")
async def test_position_reservation_cannot_exceed_quantity(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        account_id = await _client_and_account(conn)
    with pytest.raises(IntegrityError, match="ck_position_reserved_within_quantity"):
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO position (account_id, symbol, quantity, reserved_quantity)"
                    " VALUES (:a, 'AAPL', 5, 6)"
                ),
                {"a": account_id},
            )


async def test_audit_rows_cannot_be_updated_or_deleted(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO audit_event (action) VALUES ('login_succeeded')"))
    for statement in (
        "UPDATE audit_event SET action = 'tampered'",
        "DELETE FROM audit_event",
    ):
        with pytest.raises(DBAPIError, match="append-only"):
            async with engine.begin() as conn:
                await conn.execute(text(statement))
    async with engine.connect() as conn:
        actions = (await conn.execute(text("SELECT action FROM audit_event"))).scalars().all()
    assert actions == ["login_succeeded"]


@pytest.mark.usefixtures("instruments")
async def test_a_position_cannot_go_short(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        account_id = await _client_and_account(conn)
        await conn.execute(
            text("INSERT INTO position (account_id, symbol, quantity) VALUES (:a, 'AAPL', 5)"),
            {"a": account_id},
        )
    with pytest.raises(IntegrityError, match="ck_position_quantity_non_negative"):
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE position SET quantity = quantity - 6 WHERE account_id = :a"),
                {"a": account_id},
            )
    async with engine.connect() as conn:
        held = (
            await conn.execute(
                text("SELECT quantity FROM position WHERE account_id = :a"), {"a": account_id}
            )
        ).scalar_one()
    assert held == 5


@pytest.mark.usefixtures("instruments")
async def test_a_trade_needs_two_different_accounts(engine: AsyncEngine) -> None:
    buy, sell = uuid.uuid4(), uuid.uuid4()
    async with engine.begin() as conn:
        account_id = await _client_and_account(conn)
        await _order(conn, account_id, id=buy)
        await _order(conn, account_id, id=sell)
    with pytest.raises(IntegrityError, match="ck_trade_no_self_trade"):
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO trade (id, symbol, price, quantity, buy_order_id,"
                    " sell_order_id, buyer_account_id, seller_account_id, aggressor_side)"
                    " VALUES (:id, 'AAPL', 190, 1, :buy, :sell, :a, :a, 'buy')"
                ),
                {"id": uuid.uuid4(), "buy": buy, "sell": sell, "a": account_id},
            )
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM trade"))).scalar_one() == 0
