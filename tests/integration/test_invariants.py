"""The invariant checker (`brokerx_core.invariants`) against violations planted in the
database: each must be found, and a consistent database must show none.

Some violations cannot exist while the schema's CHECK constraints stand (a terminal
order holding a reservation, a status that contradicts its fills, a reservation above
what the account holds). Those are planted in a transaction that drops the constraint,
checked on that same connection, and rolled back, so the schema is untouched afterwards:
the checker must find them without relying on the schema it audits.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from brokerx_core import invariants
from brokerx_core.invariants import find_violations, find_violations_on
from brokerx_core.money import cash
from brokerx_core.seed import credit_deposit
from tests.integration.invariant_planting import (
    execute,
    insert_order,
    names,
    plant_trade,
    rest_order,
    settle_trade,
    without_constraints,
)
from tests.support.factories import create_client, grant_position

# `redis` only because the conftest's cleanup fetches it lazily, which fails from inside
# the running loop unless a test already depends on it.
pytestmark = pytest.mark.usefixtures("redis", "instruments")


async def test_a_consistent_database_has_no_violation(engine: AsyncEngine) -> None:
    trade = await settle_trade(engine)
    holder = await create_client(engine, cash=Decimal("5000.00"))
    await grant_position(engine, holder.account_id, "AAPL", 20)
    async with engine.begin() as conn:
        # Open orders whose reservations the account and the position hold.
        await insert_order(
            conn,
            holder.account_id,
            "buy",
            price=Decimal("189.00"),
            reserved_amount=Decimal("1890.00"),
        )
        await insert_order(
            conn, holder.account_id, "sell", price=Decimal("191.00"), reserved_quantity=10
        )
        await credit_deposit(conn, trade.buyer.account_id, Decimal("0.01"))
    await execute(
        engine, "UPDATE account SET reserved_cash = 1890 WHERE id = :id", id=holder.account_id
    )
    await execute(
        engine,
        "UPDATE position SET reserved_quantity = 10 WHERE account_id = :id",
        id=holder.account_id,
    )

    assert await find_violations(engine) == []


async def test_cash_that_differs_from_its_ledger_is_found(engine: AsyncEngine) -> None:
    client = await create_client(engine, cash=Decimal("100.00"))
    await execute(engine, "UPDATE account SET cash = cash + 1 WHERE id = :id", id=client.account_id)

    violations = await find_violations(engine)

    assert names(violations) == {
        "1: cash = sum of ledger entries",
        "1: last balance_after = cash",
        "3: total cash = deposits - withdrawals",
    }
    assert {v.subject for v in violations if v.invariant.startswith("1:")} == {
        str(client.account_id)
    }


async def test_a_last_balance_that_lies_is_found(engine: AsyncEngine) -> None:
    client = await create_client(engine, cash=Decimal("100.00"))
    async with engine.begin() as conn:
        await credit_deposit(conn, client.account_id, Decimal("50.00"))
    # Cash and the sum of the entries still agree (150); only the last balance lies.
    await execute(
        engine,
        "UPDATE ledger_entry SET balance_after = 149 WHERE seq ="
        " (SELECT max(seq) FROM ledger_entry WHERE account_id = :id)",
        id=client.account_id,
    )

    violations = await find_violations(engine)

    assert names(violations) == {
        "1: last balance_after = cash",
        "1: balance_after = running sum of entries",
    }
    assert [v.subject for v in violations if v.invariant == "1: last balance_after = cash"] == [
        str(client.account_id)
    ]


async def test_a_middle_balance_that_lies_is_found(engine: AsyncEngine) -> None:
    client = await create_client(engine, cash=Decimal("100.00"))
    async with engine.begin() as conn:
        await credit_deposit(conn, client.account_id, Decimal("50.00"))
    # The sum and the last balance still agree with cash; only the first entry lies.
    await execute(
        engine,
        "UPDATE ledger_entry SET balance_after = 99 WHERE seq ="
        " (SELECT min(seq) FROM ledger_entry WHERE account_id = :id)",
        id=client.account_id,
    )

    assert names(await find_violations(engine)) == {"1: balance_after = running sum of entries"}


async def test_reserved_cash_without_open_buy_orders_is_found(engine: AsyncEngine) -> None:
    client = await create_client(engine, cash=Decimal("100.00"))
    await execute(
        engine, "UPDATE account SET reserved_cash = 40 WHERE id = :id", id=client.account_id
    )

    assert names(await find_violations(engine)) == {
        "1: reserved_cash = reservations of open buy orders"
    }


async def test_an_open_buy_reservation_the_account_does_not_hold_is_found(
    engine: AsyncEngine,
) -> None:
    client = await create_client(engine, cash=Decimal("100.00"))
    async with engine.begin() as conn:
        await insert_order(conn, client.account_id, "buy", reserved_amount=Decimal("50.00"))

    assert names(await find_violations(engine)) == {
        "1: reserved_cash = reservations of open buy orders"
    }


async def test_a_position_that_differs_from_grants_and_fills_is_found(
    engine: AsyncEngine,
) -> None:
    client = await create_client(engine)
    await grant_position(engine, client.account_id, "AAPL", 10)
    await execute(
        engine,
        "UPDATE position SET quantity = quantity + 5 WHERE account_id = :id",
        id=client.account_id,
    )

    assert names(await find_violations(engine)) == {
        "2: qty = grants + bought - sold",
        "3: shares of a symbol = seeded shares",
    }


async def test_shares_reserved_by_no_open_sell_are_found(engine: AsyncEngine) -> None:
    client = await create_client(engine)
    await grant_position(engine, client.account_id, "AAPL", 10)
    await execute(
        engine,
        "UPDATE position SET reserved_quantity = 3 WHERE account_id = :id",
        id=client.account_id,
    )

    assert names(await find_violations(engine)) == {
        "2: reserved_qty = reservations of open sell orders"
    }


async def test_an_open_sell_reserving_shares_of_no_position_is_found(
    engine: AsyncEngine,
) -> None:
    client = await create_client(engine)
    async with engine.begin() as conn:
        await insert_order(conn, client.account_id, "sell", reserved_quantity=5)

    assert names(await find_violations(engine)) == {
        "2: reserved_qty = reservations of open sell orders"
    }


async def test_filled_quantity_without_fills_is_found(engine: AsyncEngine) -> None:
    client = await create_client(engine)
    async with engine.begin() as conn:
        await insert_order(conn, client.account_id, "buy", status="partially_filled", filled=3)

    assert names(await find_violations(engine)) == {"4: filled_qty = sum of fills <= quantity"}


async def test_a_terminal_order_holding_a_reservation_is_found(engine: AsyncEngine) -> None:
    client = await create_client(engine)
    await grant_position(engine, client.account_id, "AAPL", 10)
    async with without_constraints(
        engine, "client_order.ck_client_order_terminal_holds_no_reservation"
    ) as conn:
        await insert_order(conn, client.account_id, "sell", status="canceled", reserved_quantity=4)
        await conn.execute(
            text("UPDATE position SET reserved_quantity = 4 WHERE account_id = :id"),
            {"id": client.account_id},
        )

        violations = await find_violations_on(conn)

    # Both views of the leak: the order still holds shares, and the position holds
    # shares that no open order needs.
    assert names(violations) == {
        "4: terminal order holds no reservation",
        "2: reserved_qty = reservations of open sell orders",
    }


async def test_a_status_that_contradicts_its_fills_is_found(engine: AsyncEngine) -> None:
    client = await create_client(engine)
    async with without_constraints(
        engine, "client_order.ck_client_order_status_agrees_with_fills"
    ) as conn:
        await insert_order(conn, client.account_id, "buy", status="filled", filled=0)
        violations = await find_violations_on(conn)

    assert names(violations) == {"4: status agrees with filled_qty"}


async def test_cash_credited_without_a_deposit_is_found(engine: AsyncEngine) -> None:
    client = await create_client(engine)
    # A "deposit" ledger entry with cash to match, but no deposit behind it.
    await execute(
        engine,
        "WITH moved AS (UPDATE account SET cash = cash + 500 WHERE id = :id RETURNING cash)"
        " INSERT INTO ledger_entry (id, account_id, kind, amount, balance_after, reference_id)"
        " SELECT gen_random_uuid(), :id, 'deposit', 500, cash, gen_random_uuid() FROM moved",
        id=client.account_id,
    )

    assert names(await find_violations(engine)) == {"3: deposit entries = deposits"}


async def test_a_trade_entry_on_a_third_account_is_found(engine: AsyncEngine) -> None:
    trade = await settle_trade(engine)
    third = await create_client(engine)
    await execute(
        engine,
        "UPDATE ledger_entry SET account_id = :third WHERE kind = 'buy' AND reference_id = :trade",
        third=third.account_id,
        trade=trade.trade_id,
    )

    assert "3: every trade ledger entry belongs to its trade's buyer or seller" in names(
        await find_violations(engine)
    )


async def test_a_trade_that_moved_the_wrong_amount_is_found(engine: AsyncEngine) -> None:
    trade = await settle_trade(engine)
    # Seller credited one cent too much, consistently in cash and ledger.
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE ledger_entry SET amount = amount + 0.01, balance_after = balance_after"
                " + 0.01 WHERE kind = 'sell' AND reference_id = :trade"
            ),
            {"trade": trade.trade_id},
        )
        await conn.execute(
            text("UPDATE account SET cash = cash + 0.01 WHERE id = :id"),
            {"id": trade.seller.account_id},
        )

    assert names(await find_violations(engine)) == {
        "3: each trade moves price x qty between two accounts",
        "3: total cash = deposits - withdrawals",
    }


@pytest.mark.parametrize("reserved", [Decimal("100.01"), Decimal("-5.00")], ids=["above", "below"])
async def test_reserved_cash_outside_zero_and_cash_is_found(
    engine: AsyncEngine, reserved: Decimal
) -> None:
    """Backed by CHECK constraints: dropped here, the checker must still see it. An open
    buy order holds exactly that reservation, so only the bounds are wrong."""
    client = await create_client(engine, cash=Decimal("100.00"))
    async with without_constraints(
        engine,
        "account.ck_account_reserved_within_cash",
        "account.ck_account_reserved_cash_non_negative",
        "client_order.ck_client_order_reserved_amount_non_negative",
    ) as conn:
        await insert_order(conn, client.account_id, "buy", reserved_amount=reserved)
        await conn.execute(
            text("UPDATE account SET reserved_cash = :r WHERE id = :id"),
            {"r": reserved, "id": client.account_id},
        )
        violations = await find_violations_on(conn)

    assert names(violations) == {"1: 0 <= reserved_cash <= cash"}
    assert [v.subject for v in violations] == [str(client.account_id)]


@pytest.mark.parametrize("reserved", [11, -3], ids=["above", "below"])
async def test_reserved_shares_outside_zero_and_quantity_are_found(
    engine: AsyncEngine, reserved: int
) -> None:
    client = await create_client(engine)
    await grant_position(engine, client.account_id, "AAPL", 10)
    async with without_constraints(
        engine,
        "position.ck_position_reserved_within_quantity",
        "position.ck_position_reserved_non_negative",
        "client_order.ck_client_order_reserved_quantity_non_negative",
    ) as conn:
        await insert_order(conn, client.account_id, "sell", reserved_quantity=reserved)
        await conn.execute(
            text("UPDATE position SET reserved_quantity = :q WHERE account_id = :id"),
            {"q": reserved, "id": client.account_id},
        )
        violations = await find_violations_on(conn)

    assert names(violations) == {"2: 0 <= reserved_qty <= qty"}
    assert [v.subject for v in violations] == [f"{client.account_id}/AAPL"]


@pytest.mark.parametrize("bid", [Decimal("190.50"), Decimal("190.00")], ids=["crossed", "locked"])
async def test_a_book_resting_crossed_is_found(engine: AsyncEngine, bid: Decimal) -> None:
    buyer = await create_client(engine, cash=Decimal("5000.00"))
    seller = await create_client(engine)
    await grant_position(engine, seller.account_id, "AAPL", 10)
    async with engine.begin() as conn:  # every reservation held: only the prices are wrong
        await rest_order(conn, buyer.account_id, "buy", Decimal("189.00"))
        await rest_order(conn, buyer.account_id, "buy", bid)
        await rest_order(conn, seller.account_id, "sell", Decimal("190.00"))

    violations = await find_violations(engine)

    assert names(violations) == {"5: book not crossed"}
    assert [(v.subject, v.detail) for v in violations] == [
        ("AAPL", f"best bid={bid:.4f} best ask=190.0000")
    ]


async def test_an_order_stuck_in_pending_new_is_found_once_past_the_grace(
    engine: AsyncEngine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = await create_client(engine, cash=Decimal("10000.00"))
    async with engine.begin() as conn:
        stuck = await rest_order(
            conn, client.account_id, "buy", Decimal("190.00"), status="pending_new"
        )
        await rest_order(conn, client.account_id, "buy", Decimal("189.00"), status="pending_new")
    await execute(
        engine,
        "UPDATE client_order SET created_at = now() - interval '10 minutes' WHERE id = :id",
        id=stuck,
    )

    assert await find_violations(engine) == []  # only checked when asked for
    assert await find_violations(engine, pending_grace_seconds=3600) == []
    violations = await find_violations(engine, pending_grace_seconds=60)
    assert names(violations) == {"6: no order stays pending_new"}
    assert [v.subject for v in violations] == [str(stuck)]
    # The command line (`make invariants`) checks it when given a grace too.
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert await invariants._main([]) == 0
    assert await invariants._main(["--pending-grace", "60"]) == 1


@pytest.mark.parametrize("status", ["canceled", "expired", "rejected"])
async def test_a_fully_filled_order_that_is_not_filled_is_found(
    engine: AsyncEngine, status: str
) -> None:
    trade = await settle_trade(engine)
    # All ten shares traded (the trade and the fills agree), but the order says otherwise.
    await execute(
        engine,
        "UPDATE client_order SET status = :status WHERE id = :id",
        status=status,
        id=trade.sell_order_id,
    )

    violations = await find_violations(engine)

    assert names(violations) == {"4: status agrees with filled_qty"}
    assert [v.subject for v in violations] == [str(trade.sell_order_id)]


async def test_a_short_position_is_found(engine: AsyncEngine) -> None:
    """No short positions: a sale by an account without shares went through. Everything
    else agrees (the fills, the shares of the symbol, the cash moved)."""
    buyer = await create_client(engine, cash=Decimal("10000.00"))
    seller = await create_client(engine)
    async with without_constraints(
        engine,
        "position.ck_position_quantity_non_negative",
        "position.ck_position_reserved_within_quantity",
    ) as conn:
        await plant_trade(conn, buyer.account_id, seller.account_id)
        violations = await find_violations_on(conn)

    assert names(violations) == {"2: 0 <= reserved_qty <= qty"}
    assert [(v.subject, v.detail) for v in violations] == [
        (f"{seller.account_id}/AAPL", "qty=-10 reserved=0")
    ]


async def test_a_trade_of_an_account_with_itself_is_found(engine: AsyncEngine) -> None:
    """Both legs settled on one account: cash, shares and fills all agree, but no money
    moved between two accounts."""
    client = await create_client(engine, cash=Decimal("10000.00"))
    await grant_position(engine, client.account_id, "AAPL", 10)
    async with without_constraints(engine, "trade.ck_trade_no_self_trade") as conn:
        trade_id, _, _ = await plant_trade(conn, client.account_id, client.account_id)
        violations = await find_violations_on(conn)

    assert names(violations) == {"3: each trade moves price x qty between two accounts"}
    assert [v.subject for v in violations] == [str(trade_id)]


async def test_a_deposit_without_its_ledger_entry_is_found(engine: AsyncEngine) -> None:
    client = await create_client(engine)
    deposit_id = uuid.uuid4()
    await execute(
        engine,
        "INSERT INTO deposit (id, account_id, amount, status, balance_after)"
        " VALUES (:id, :account, 500, 'settled', 500)",
        id=deposit_id,
        account=client.account_id,
    )

    violations = await find_violations(engine)

    assert names(violations) == {"3: deposit entries = deposits"}
    assert [(v.subject, v.detail) for v in violations] == [
        (str(deposit_id), "entry=missing deposit=500.00")
    ]


async def test_a_deposit_that_is_not_settled_is_found(engine: AsyncEngine) -> None:
    """Its entry credited the cash, but the deposit itself never settled."""
    client = await create_client(engine)
    async with without_constraints(engine, "deposit.ck_deposit_status") as conn:
        await credit_deposit(conn, client.account_id, Decimal("500.00"))
        await conn.execute(
            text("UPDATE deposit SET status = 'pending' WHERE account_id = :id"),
            {"id": client.account_id},
        )
        deposit_id = (await conn.execute(text("SELECT id FROM deposit"))).scalar_one()
        violations = await find_violations_on(conn)

    assert names(violations) == {"3: deposit entries = deposits"}
    assert [v.subject for v in violations] == [str(deposit_id)]


@pytest.mark.parametrize(
    ("price", "moved", "consistent"),
    [
        # 2 x 10.0025 = 20.005: half-even keeps the even cent (what `money.cash` does).
        (Decimal("10.0025"), Decimal("20.00"), True),
        (Decimal("10.0025"), Decimal("20.01"), False),  # rounded half away from zero
        # 2 x 10.0075 = 20.015: the even cent is the upper one.
        (Decimal("10.0075"), Decimal("20.02"), True),
        (Decimal("10.0075"), Decimal("20.01"), False),  # truncated
    ],
    ids=["half-even-down", "half-up", "half-even-up", "truncated"],
)
async def test_a_sub_cent_notional_moves_the_half_even_cent(
    engine: AsyncEngine, price: Decimal, moved: Decimal, consistent: bool
) -> None:
    """A trade whose notional falls on half a cent settles at the cent `money.cash`
    rounds to (half-even, as the engine does); any other cent is a violation."""
    assert (cash(price * 2) == moved) is consistent
    buyer = await create_client(engine, cash=Decimal("100.00"))
    seller = await create_client(engine)
    await grant_position(engine, seller.account_id, "AAPL", 2)
    async with engine.begin() as conn:
        trade_id, _, _ = await plant_trade(
            conn, buyer.account_id, seller.account_id, price=price, quantity=2, notional=moved
        )

    violations = await find_violations(engine)

    if consistent:
        assert violations == []
    else:
        assert names(violations) == {"3: each trade moves price x qty between two accounts"}
        assert [v.subject for v in violations] == [str(trade_id)]


async def test_an_order_filled_beyond_its_quantity_is_found(engine: AsyncEngine) -> None:
    """12 shares traded against a buy order of 10: its fills agree with its
    filled_quantity, which is more than it asked for."""
    buyer = await create_client(engine, cash=Decimal("10000.00"))
    seller = await create_client(engine)
    await grant_position(engine, seller.account_id, "AAPL", 12)
    async with without_constraints(
        engine,
        "client_order.ck_client_order_filled_within_quantity",
        "client_order.ck_client_order_status_agrees_with_fills",
    ) as conn:
        _, buy, _ = await plant_trade(
            conn, buyer.account_id, seller.account_id, quantity=12, buy_order_quantity=10
        )
        violations = await find_violations_on(conn)

    assert names(violations) == {"4: filled_qty = sum of fills <= quantity"}
    assert [(v.subject, v.detail) for v in violations] == [
        (str(buy), "filled=12 fills=12 quantity=10")
    ]
