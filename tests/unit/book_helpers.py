"""Helpers shared by the order book's example tests."""

from __future__ import annotations

from brokerx_matching.book import MatchResult, OrderBook, OrderState, Side, TimeInForce

BUY, SELL = Side.BUY, Side.SELL
DAY, GTC, IOC, FOK = TimeInForce.DAY, TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK


def fills_of(result: MatchResult) -> list[tuple[object, object, int, int]]:
    """(resting id, incoming id, price, qty) of each fill, for compact assertions."""
    return [
        (f.resting_order_id, f.incoming_order_id, f.price_ticks, f.quantity) for f in result.fills
    ]


def rest(book: OrderBook, order_id: str, account: str, side: Side, qty: int, price: int) -> int:
    result = book.submit_limit(order_id, account, side, qty, price)
    assert result.state is OrderState.RESTED
    seq = result.priority_seq
    assert isinstance(seq, int)
    return seq


def ids_at(book: OrderBook, side: Side) -> list[object]:
    return [o.order_id for o in book.resting_orders(side)]
