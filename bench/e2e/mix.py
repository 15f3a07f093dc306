"""The order mix: what each simulated client sends next, and what it knows of its orders.

Prices are integer ticks (cents) around each instrument's seeded reference price, so no
float ever touches a price. Buys are drawn from [-55, +35] basis points of the reference
and sells from [-35, +55]: the books settle around the reference and roughly a third of
the limit orders cross on arrival (the bench measures and reports the real share).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

from brokerx_core.seed import INSTRUMENTS

# Seeded reference prices in ticks of 0.01 (every seeded instrument has tick 0.01).
REFERENCE_TICKS: dict[str, int] = {
    item.symbol: int(item.reference_price * 100) for item in INSTRUMENTS
}
TERMINAL = frozenset({"filled", "canceled", "expired", "rejected"})


def price_text(ticks: int) -> str:
    """Ticks of 0.01 as the API's decimal string."""
    return f"{ticks // 100}.{ticks % 100:02d}"


def ticks_of(price: str | None) -> int:
    return int(Decimal(price) * 100) if price else 0


@dataclass(frozen=True, slots=True)
class MixWeights:
    """Relative frequency of each request kind (normalised when drawn)."""

    limit: float = 0.70
    cancel: float = 0.12
    replace: float = 0.10
    market: float = 0.03
    ioc: float = 0.03
    fok: float = 0.02

    def kinds(self) -> tuple[list[str], list[float]]:
        names = ["limit", "cancel", "replace", "market", "ioc", "fok"]
        return names, [getattr(self, name) for name in names]


NEW_ORDERS_ONLY = MixWeights(limit=1.0, cancel=0, replace=0, market=0, ioc=0, fok=0)


@dataclass(slots=True)
class OpenOrder:
    id: str
    symbol: str
    side: str
    price_ticks: int
    quantity: int
    version: int
    amending: bool = False  # a replace/cancel is in flight: leave it alone until reported


@dataclass(frozen=True, slots=True)
class Planned:
    """One request to send: `kind` names it in the report."""

    kind: str
    method: str
    path: str
    body: dict[str, object] | None = None
    headers: dict[str, str] | None = None
    order_id: str | None = None  # the order a cancel/replace targets


@dataclass
class ClientOrders:
    """What one client knows of its own open orders (from answers and its live stream)."""

    open: dict[str, OpenOrder] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)  # terminal before its 201 was read

    def added(self, order: dict[str, object]) -> None:
        """A 201 for a resting-capable order: track it unless already reported terminal."""
        order_id = str(order["id"])
        if order_id in self.gone:
            self.gone.discard(order_id)
            return
        if order.get("type") != "limit" or order.get("time_in_force") not in ("day", "gtc"):
            return
        self.open[order_id] = OpenOrder(
            order_id,
            str(order["symbol"]),
            str(order["side"]),
            ticks_of(str(order["limit_price"])),
            int(order["quantity"]),  # type: ignore[call-overload]
            int(order["version"]),  # type: ignore[call-overload]
        )

    def reported(self, report: dict[str, object]) -> None:
        """An execution report of one of our orders."""
        order_id = str(report["order_id"])
        status = report.get("status")
        event = report.get("event")
        order = self.open.get(order_id)
        if status in TERMINAL:
            if order is None:
                self.gone.add(order_id)
                if len(self.gone) > 10_000:  # bounded: stale entries are harmless
                    self.gone.clear()
            else:
                del self.open[order_id]
            return
        if order is None:
            return
        if event in ("replaced", "replace_rejected", "cancel_rejected"):
            order.amending = False
        version = report.get("version")
        if isinstance(version, int):
            order.version = version
        leaves = report.get("leaves_quantity")
        filled = report.get("filled_quantity")
        if isinstance(leaves, int) and isinstance(filled, int):
            order.quantity = leaves + filled

    def forget(self, order_id: str) -> None:
        self.open.pop(order_id, None)


class OrderMix:
    """Draws the next request of a client."""

    def __init__(
        self,
        weights: MixWeights = MixWeights(),
        *,
        symbols: list[str] | None = None,
        max_open: int = 20,
        client_order_ids: bool = True,
    ) -> None:
        self.kinds, self.weights = weights.kinds()
        self.symbols = symbols or list(REFERENCE_TICKS)
        self.max_open = max_open
        self.client_order_ids = client_order_ids

    def next(self, orders: ClientOrders, rng: random.Random) -> Planned:
        idle = [o for o in orders.open.values() if not o.amending]
        if len(orders.open) >= self.max_open and idle:
            return self._cancel(rng.choice(idle), rng)
        kind = rng.choices(self.kinds, self.weights)[0]
        if kind in ("cancel", "replace") and not idle:
            kind = "limit"
        if kind == "cancel":
            return self._cancel(rng.choice(idle), rng)
        if kind == "replace":
            return self._replace(rng.choice(idle), rng)
        return self._new(kind, rng)

    # --- request builders ------------------------------------------------------------

    def _new(self, kind: str, rng: random.Random) -> Planned:
        symbol = rng.choice(self.symbols)
        ref = REFERENCE_TICKS[symbol]
        side = rng.choice(("buy", "sell"))
        body: dict[str, object] = {"symbol": symbol, "side": side}
        if kind == "market":
            body.update(type="market", quantity=rng.randint(1, 10), time_in_force="day")
        else:
            if kind == "limit":
                low, high = (-55, 35) if side == "buy" else (-35, 55)
                tif = "gtc" if rng.random() < 0.3 else "day"
            else:  # ioc/fok: aimed at the other side's touch
                low, high = (0, 40) if side == "buy" else (-40, 0)
                tif = kind
            price = ref + ref * rng.randint(low, high) // 10_000
            body.update(
                type="limit",
                quantity=rng.randint(1, 50),
                limit_price=price_text(price),
                time_in_force=tif,
            )
        if self.client_order_ids:
            body["client_order_id"] = uuid.uuid4().hex
        return Planned(kind, "POST", "/api/v1/orders", body)

    def _cancel(self, order: OpenOrder, rng: random.Random) -> Planned:
        order.amending = True
        headers = {"If-Match": str(order.version)} if rng.random() < 0.5 else None
        return Planned("cancel", "DELETE", f"/api/v1/orders/{order.id}", None, headers, order.id)

    def _replace(self, order: OpenOrder, rng: random.Random) -> Planned:
        order.amending = True
        if rng.random() < 0.5 and order.quantity > 1:
            body: dict[str, object] = {
                "quantity": rng.randint(max(1, order.quantity // 2), order.quantity)
            }
        else:
            ref = REFERENCE_TICKS[order.symbol]
            step = max(1, ref * rng.randint(1, 20) // 10_000)
            moved = order.price_ticks + (step if rng.random() < 0.5 else -step)
            low, high = ref * 91 // 100 + 1, ref * 109 // 100  # well inside the 10 % band
            body = {"limit_price": price_text(min(max(moved, low), high))}
        return Planned(
            "replace",
            "PATCH",
            f"/api/v1/orders/{order.id}",
            body,
            {"If-Match": str(order.version)},
            order.id,
        )
