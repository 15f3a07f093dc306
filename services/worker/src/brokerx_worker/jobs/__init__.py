"""Worker jobs by domain. Each module exposes FUNCTIONS, CRON_JOBS and BACKGROUND_TASKS.

- FUNCTIONS: arq job coroutines `async def job(ctx, ...)` (may run more than once:
  each is idempotent).
- CRON_JOBS: `arq.cron(...)` entries.
- BACKGROUND_TASKS: `async def loop(ctx) -> None` coroutines started with the worker and
  cancelled at shutdown (stream consumers, relays, the market maker).
"""
