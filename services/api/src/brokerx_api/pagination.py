"""Keyset pagination shared by the list endpoints (API.md: `?limit=` and `?cursor=`).

A list is sorted newest first on a unique sort key (e.g. `(created_at, id)` or `seq`).
A page is read with `LIMIT limit + 1`: the extra row only proves that a next page
exists, and the sort key of the last row returned becomes `next_cursor`. A cursor is
opaque to clients: base64url of `[list name, *sort key]`, so a cursor of one list is
refused by another and anything that does not decode answers 422 `invalid_cursor`.

Usage in an endpoint::

    async def list_things(page: PageParamsDep, ...) -> Page[ThingOut]:
        after = page.after("things", datetime, uuid.UUID)  # None on the first page
        rows = await repository.things(session, limit=page.limit + 1, after=after)
        items, next_cursor = page.cut(rows, lambda r: encode_cursor("things", r.created_at, r.id))
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel

from brokerx_api.errors import DomainError

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
# Real cursors are well under 200 characters; refusing long ones bounds decoding work.
MAX_CURSOR_LENGTH = 512

CursorValue = int | str | uuid.UUID | datetime
RowT = TypeVar("RowT")
ItemT = TypeVar("ItemT")


class InvalidCursor(DomainError):
    status, code, title = 422, "invalid_cursor", "Invalid cursor"

    def __init__(self) -> None:
        super().__init__(
            "cursor: not a next_cursor of this list",
            extra={"errors": [{"loc": ["query", "cursor"], "msg": "invalid cursor"}]},
        )


def encode_cursor(list_name: str, *key: CursorValue) -> str:
    """An opaque cursor for the sort key of the last item of a page."""
    values: list[Any] = [list_name]
    for value in key:
        if isinstance(value, datetime):
            values.append(value.isoformat())
        elif isinstance(value, uuid.UUID):
            values.append(str(value))
        else:
            values.append(value)
    raw = json.dumps(values, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, list_name: str, types: Sequence[type]) -> tuple[Any, ...]:
    """The sort key carried by `cursor`, typed as `types`; `InvalidCursor` otherwise.

    Supported element types: `int`, `str`, `uuid.UUID` and timezone-aware `datetime`.
    """
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidCursor()
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        values = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor() from exc
    if not isinstance(values, list) or len(values) != len(types) + 1 or values[0] != list_name:
        raise InvalidCursor()
    return tuple(_typed(value, kind) for value, kind in zip(values[1:], types, strict=True))


def _typed(value: Any, kind: type) -> Any:
    try:
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is str and isinstance(value, str):
            return value
        if kind is uuid.UUID and isinstance(value, str):
            return uuid.UUID(value)
        if kind is datetime and isinstance(value, str):
            moment = datetime.fromisoformat(value)
            # A naive timestamp would be compared in the server's zone: refuse it.
            if moment.tzinfo is not None:
                return moment
    except ValueError as exc:
        raise InvalidCursor() from exc
    raise InvalidCursor()


@dataclass(frozen=True, slots=True)
class PageParams:
    """The `limit` and `cursor` of a list request."""

    limit: int
    cursor: str | None

    def after(self, list_name: str, *types: type) -> tuple[Any, ...] | None:
        """The sort key to continue after, or None for the first page."""
        if self.cursor is None:
            return None
        return decode_cursor(self.cursor, list_name, types)

    def cut(
        self, rows: Sequence[RowT], cursor_of: Callable[[RowT], str]
    ) -> tuple[list[RowT], str | None]:
        """Split `limit + 1` fetched rows into this page's rows and the next cursor."""
        page = list(rows[: self.limit])
        has_more = len(rows) > self.limit
        return page, (cursor_of(page[-1]) if has_more and page else None)


def page_params(
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description=f"Page size, 1 to {MAX_LIMIT}.")
    ] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, Query(description="`next_cursor` of the previous page (opaque).")
    ] = None,
) -> PageParams:
    """`?limit=` (default 50, max 500; out of range → 422 `validation_error`) and `?cursor=`."""
    return PageParams(limit=limit, cursor=cursor or None)


PageParamsDep = Annotated[PageParams, Depends(page_params)]


class Page(BaseModel, Generic[ItemT]):
    """One page of a list, newest first; `next_cursor` is null on the last page."""

    items: list[ItemT]
    next_cursor: str | None
