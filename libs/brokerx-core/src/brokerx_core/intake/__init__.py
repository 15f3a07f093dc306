"""Order intake shared by the api (client requests) and the worker (market maker, expiry).

`place_order` runs the pre-trade checks, reserves cash or shares and writes the order
and its `new_order` command in the caller's transaction; `cancel_order` and
`cancel_all` write cancels there too, and `replaces` writes replaces on a plain
connection (one autocommitted call for one request or a group commit's). The caller
commits, then publishes with `brokerx_core.commands.publish_commands`. Refusals are
`IntakeError`s carrying API.md's error codes.
"""

from brokerx_core.intake.amend import Amended, cancel_all, cancel_order
from brokerx_core.intake.errors import (
    ClientOrderIdReused,
    InsufficientFunds,
    InsufficientPosition,
    IntakeError,
    InvalidPrice,
    InvalidQuantity,
    InvalidTick,
    MarketClosed,
    OrderNotCancelable,
    OrderNotFound,
    OrderNotModifiable,
    PriceOutOfBand,
    RequestInvalid,
    TooManyOpenOrders,
    UnknownSymbol,
    VersionConflict,
)
from brokerx_core.intake.placement import Placement, place_order
from brokerx_core.intake.pretrade import (
    Amendment,
    InstrumentTerms,
    NewOrder,
    parse_amendment,
    parse_new_order,
)
from brokerx_core.intake.records import OPEN_SQL, ORDER_COLUMNS, OrderRecord
from brokerx_core.intake.rules import MAX_ORDER_QUANTITY, SessionHours, TradingRules

__all__ = [
    "MAX_ORDER_QUANTITY",
    "OPEN_SQL",
    "ORDER_COLUMNS",
    "Amended",
    "Amendment",
    "ClientOrderIdReused",
    "InstrumentTerms",
    "InsufficientFunds",
    "InsufficientPosition",
    "IntakeError",
    "InvalidPrice",
    "InvalidQuantity",
    "InvalidTick",
    "MarketClosed",
    "NewOrder",
    "OrderNotCancelable",
    "OrderNotFound",
    "OrderNotModifiable",
    "OrderRecord",
    "Placement",
    "PriceOutOfBand",
    "RequestInvalid",
    "SessionHours",
    "TooManyOpenOrders",
    "TradingRules",
    "UnknownSymbol",
    "VersionConflict",
    "cancel_all",
    "cancel_order",
    "parse_amendment",
    "parse_new_order",
    "place_order",
]
