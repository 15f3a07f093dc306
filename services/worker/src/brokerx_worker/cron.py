"""Five-field cron expressions (as operators write them) translated for `arq.cron`."""

from __future__ import annotations

_CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("weekday", 0, 7),
)


def arq_cron_kwargs(expression: str) -> dict[str, int | set[int] | None]:
    """Translate a 5-field cron expression ("0 2 * * *") into `arq.cron` keyword arguments.

    Supports `*`, numbers, lists, ranges and steps. Cron weekdays (0 or 7 = Sunday)
    become arq's (0 = Monday). arq requires day-of-month AND weekday to match, where
    cron accepts either: do not restrict both.
    """
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"cron expression needs 5 fields, got {expression!r}")
    kwargs: dict[str, int | set[int] | None] = {}
    for (name, low, high), field in zip(_CRON_FIELDS, fields, strict=True):
        values = _cron_values(field, low, high)
        if values is not None and name == "weekday":
            values = {(value + 6) % 7 for value in values}
        if values is None:
            kwargs[name] = None
        elif len(values) == 1:
            kwargs[name] = next(iter(values))
        else:
            kwargs[name] = values
    return kwargs


def _cron_values(field: str, low: int, high: int) -> set[int] | None:
    if field == "*":
        return None
    values: set[int] = set()
    for item in field.split(","):
        base, _, step_text = item.partition("/")
        step = int(step_text) if step_text else 1
        if step < 1:
            raise ValueError(f"bad cron step in {field!r}")
        if base == "*":
            start, stop = low, high
        elif "-" in base:
            start_text, stop_text = base.split("-", 1)
            start, stop = int(start_text), int(stop_text)
        else:
            start = int(base)
            stop = high if step_text else start
        if not low <= start <= stop <= high:
            raise ValueError(f"cron field {field!r} is outside {low}-{high}")
        values.update(range(start, stop + 1, step))
    return values
