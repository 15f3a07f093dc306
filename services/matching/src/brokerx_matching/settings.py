"""Settings of the matching process."""

from __future__ import annotations

import os
import socket

from pydantic import Field

from brokerx_core.settings import BrokerXSettings


class MatchingSettings(BrokerXSettings):
    """Settings of the matching process (environment variables of the same names).

    `fault_exit_after_commit` (`FAULT_EXIT_AFTER_COMMIT`) is a test hook, never set in
    production: when > 0 the process calls `os._exit(137)` right after its Nth batch
    commit (every shard counted together), before publishing that batch's reports and
    market data or acknowledging its entries (faults.py; the crash tests of the report
    outbox use it).
    """

    service_name: str = "matching"
    ops_host: str = "127.0.0.1"
    ops_port: int = 8001
    consumer_name: str | None = None  # defaults to host:pid
    batch_size: int = Field(default=500, ge=1, le=10_000)
    block_ms: int = Field(default=1000, ge=1, le=5000)  # stays under the Redis socket timeout
    # Under load a shard starts a batch at most this often (unless the last one was
    # full): batches grow instead of multiplying. Below two entries per interval it
    # does not wait (pacing.py). Adds at most this much to a fill; 0 turns it off.
    min_batch_interval_ms: int = Field(default=30, ge=0, le=1000)
    # A command whose processing raised this many times goes to `orders.dead`.
    max_deliveries: int = Field(default=5, ge=1)
    # ... unless this many were retired in a row: then the engine, not the commands, is
    # at fault and the shard halts (retrying with back-off) instead of rejecting them all.
    poison_streak_limit: int = Field(default=3, ge=1)
    # Entries delivered to another consumer and idle this long are claimed (a process
    # that lost its shard may have read entries just before noticing).
    claim_idle_ms: int = 10_000
    shard_poll_seconds: float = 1.0
    # Scale-out: a process owns at most this many shards (None: all it can get). Two
    # processes with 2 of 4 shards each use two cores; a third one is the standby.
    max_owned_shards: int | None = Field(default=None, ge=1)
    db_pool_size: int = 8
    # Advisory lock key of shard n is `shard_lock_base + n` (pg_try_advisory_lock).
    shard_lock_base: int = 72_430_000
    # `executions` is trimmed below what every consumer group on it acknowledged (the
    # worker's notifier), at the housekeeping pace; this cap applies only while it has
    # no group at all (executions_stream.py).
    executions_maxlen: int = Field(default=100_000, ge=1)
    # Reports younger than this are never trimmed, acknowledged or not: the api's live
    # fan-out reads outside any group and may stall briefly behind the notifier.
    executions_retention_seconds: float = Field(default=60.0, ge=0)
    # `marketdata` has no group (the api's live fan-out reads it by id): trimmed by
    # length, approximately, on each XADD.
    marketdata_maxlen: int = 100_000
    # Trim `orders.<shard>` and `executions` below what their groups acknowledged and
    # refresh lag gauges.
    housekeeping_seconds: float = 5.0
    # Server-side guards on the shard connections: a dead client is noticed within
    # seconds even when the kernel did not close the socket (host crash, partition).
    db_keepalive_idle_seconds: int = 5
    db_statement_timeout_ms: int = 30_000
    # Test hook (see the class docstring): 0 = off.
    fault_exit_after_commit: int = Field(default=0, ge=0)

    @property
    def consumer(self) -> str:
        """This process's consumer name in the `matching` group."""
        return self.consumer_name or f"{socket.gethostname()}:{os.getpid()}"
