"""The execution confirmation e-mail (fill, partial fill, cancel, expiry) in text and HTML."""

from __future__ import annotations

import html
from dataclasses import dataclass
from decimal import Decimal

from brokerx_core.messages import ExecutionReport
from brokerx_worker.mail.templates import RenderedMail

# Why the rest of an order was canceled, in the client's words (docs/trading.md reasons).
CANCEL_REASONS = {
    "requested": "at your request",
    "ioc": "immediate-or-cancel: the rest could not trade at once",
    "fok": "fill-or-kill: the whole quantity could not trade at once",
    "collar": "market order protection: no more liquidity within the price collar",
    "no_liquidity": "there was no liquidity to trade against",
    "self_trade": "it would have traded against one of your own orders",
}


@dataclass(frozen=True, slots=True)
class OrderTerms:
    """What the client asked for (from `client_order`), when the order row is known."""

    quantity: int
    type: str
    limit_price: Decimal | None
    time_in_force: str


def _price(value: Decimal | None) -> str:
    if value is None:
        return "-"
    # Prices are stored with 4 decimals; show cents unless sub-cent digits matter.
    shown = value.quantize(Decimal("0.01")) if value == value.quantize(Decimal("0.01")) else value
    return format(shown, "f")


def _describe(report: ExecutionReport, terms: OrderTerms | None) -> str:
    quantity = terms.quantity if terms else report.filled_quantity + report.leaves_quantity
    words = f"{report.side} {quantity} {report.symbol}"
    if terms is not None:
        kind = f"limit {_price(terms.limit_price)}" if terms.type == "limit" else "market"
        words += f" ({kind}, {terms.time_in_force.upper()})"
    return words


def execution_confirmation(
    report: ExecutionReport, first_name: str, terms: OrderTerms | None
) -> RenderedMail:
    """Subject, plain text and HTML of the confirmation of one report."""
    order = _describe(report, terms)
    verb = "Bought" if report.side == "buy" else "Sold"
    execution = f"{verb} {report.fill_quantity} {report.symbol} at {_price(report.fill_price)}"
    if report.event == "fill":
        subject = f"Order filled: {execution}"
        lead = f"Your order to {order} is now completely filled."
    elif report.event == "partial_fill":
        subject = f"Partial fill: {execution}"
        lead = f"Part of your order to {order} was executed; the rest stays in the market."
    elif report.event == "expired":
        subject = f"Order expired: {report.side} {report.symbol}"
        lead = f"Your order to {order} expired at the end of its trading session."
    else:
        subject = f"Order canceled: {report.side} {report.symbol}"
        why = CANCEL_REASONS.get(report.reason or "", report.reason or "")
        lead = f"Your order to {order} was canceled" + (f" ({why})." if why else ".")
    rows: list[tuple[str, str]] = []
    if report.fill_quantity:
        rows.append(("Execution", f"{report.fill_quantity} at {_price(report.fill_price)} USD"))
    rows += [
        ("Filled", f"{report.filled_quantity} (average price {_price(report.avg_fill_price)})"),
        ("Remaining", str(report.leaves_quantity)),
        ("Order status", report.status.replace("_", " ")),
        ("Order id", str(report.order_id)),
    ]
    if report.client_order_id:
        rows.append(("Your reference", report.client_order_id))
    rows.append(("Time", report.ts.strftime("%Y-%m-%d %H:%M:%S UTC")))
    footer = "You receive this confirmation because trade confirmations are on for your account."
    greeting = f"Hello {first_name},"
    table = "\n".join(f"  {label + ':':<16}{value}" for label, value in rows)
    text = f"{greeting}\n\n{lead}\n\n{table}\n\n{footer}\n\n— BrokerX\n"
    cells = "".join(
        f'<tr><td style="padding:2px 12px 2px 0;color:#666">{html.escape(label)}</td>'
        f"<td>{html.escape(value)}</td></tr>"
        for label, value in rows
    )
    body = (
        '<!doctype html><html><body style="font-family:Arial,sans-serif;color:#1a1a1a">'
        f"<p>{html.escape(greeting)}</p><p>{html.escape(lead)}</p>"
        f"<table>{cells}</table>"
        f'<p style="color:#666">{html.escape(footer)}</p>'
        '<p style="color:#666">— BrokerX</p></body></html>'
    )
    return RenderedMail(subject, text, body)
