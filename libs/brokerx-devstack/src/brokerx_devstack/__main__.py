"""`brokerx-devstack` / `python -m brokerx_devstack`: the local launcher behind `make run`.

brokerx-devstack [run]   servers + migrations + seed + api, matching, worker; Ctrl-C stops all
brokerx-devstack servers only PostgreSQL and Redis (left running); prints their URLs
brokerx-devstack stop    stops whatever a data dir still runs (leftovers of a killed run)
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from brokerx_devstack.binaries import PREFER_ENV
from brokerx_devstack.errors import DevstackError
from brokerx_devstack.launcher import Options, run, stop_everything
from brokerx_devstack.servers import ensure_servers

COMMANDS = ("run", "servers", "stop")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes", "on")


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="brokerx-devstack", description="Run BrokerX locally with throwaway servers."
    )
    commands = parser.add_subparsers(dest="command")

    def data_dir_option(command: argparse.ArgumentParser, default: str) -> None:
        command.add_argument(
            "--data-dir", type=Path, default=Path(default), help=f"(default {default})"
        )

    def prefer_option(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "--prefer",
            choices=("system", "bundled"),
            default=None,
            help=f"machine's binaries or the wheels' (default ${PREFER_ENV}, else system)",
        )

    run_parser = commands.add_parser("run", help="start the whole system (default)")
    data_dir_option(run_parser, ".devdata/run")
    prefer_option(run_parser)
    run_parser.add_argument("--fresh", action="store_true", help="wipe the data dir first")
    run_parser.add_argument(
        "--no-market-maker",
        dest="market_maker",
        action="store_false",
        help="no demo liquidity (the market maker is on by default)",
    )
    run_parser.add_argument("--api-port", type=int, default=_env_int("API_PORT", 3000))
    run_parser.add_argument("--matching-port", type=int, default=_env_int("MATCHING_PORT", 8001))
    run_parser.add_argument("--worker-port", type=int, default=_env_int("WORKER_PORT", 8002))
    run_parser.add_argument(
        "--api-workers",
        type=_positive,
        default=_env_int("API_WORKERS", 1),
        metavar="N",
        help="api worker processes (default $API_WORKERS, else 1)",
    )
    run_parser.add_argument(
        "--smtp-port",
        type=int,
        default=_env_int("MAILCATCHER_PORT", 1025),
        help="mail catcher port (another free one if taken)",
    )
    run_parser.add_argument(
        "--log-json",
        action=argparse.BooleanOptionalAction,
        default=_env_flag("LOG_JSON", False),
        help="JSON log lines instead of readable ones (default $LOG_JSON or off)",
    )
    run_parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    run_parser.add_argument("--startup-timeout", type=float, default=60.0, metavar="SECONDS")
    run_parser.add_argument("--stop-timeout", type=float, default=10.0, metavar="SECONDS")

    servers_parser = commands.add_parser("servers", help="start only PostgreSQL and Redis")
    data_dir_option(servers_parser, ".devdata/run")
    prefer_option(servers_parser)
    servers_parser.add_argument(
        "--prefix",
        default="",
        help="prefix of the printed variable names (TEST_ for the test suite)",
    )

    stop_parser = commands.add_parser("stop", help="stop what a data dir still runs")
    data_dir_option(stop_parser, ".devdata/run")
    return parser


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the command line; without a command (or with only options) it is `run`."""
    arguments = list(argv)
    if not arguments or arguments[0] not in (*COMMANDS, "-h", "--help"):
        arguments.insert(0, "run")
    return build_parser().parse_args(arguments)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.command == "servers":
            servers = ensure_servers(args.data_dir, prefer=args.prefer)
            for note in servers.notes:
                sys.stderr.write(f"devstack | {note}\n")
            # Shell assignments: `eval "$(brokerx-devstack servers --prefix TEST_)"` works.
            sys.stdout.write(f"{args.prefix}DATABASE_URL={shlex.quote(servers.database_url)}\n")
            sys.stdout.write(f"{args.prefix}REDIS_URL={shlex.quote(servers.redis_url)}\n")
            return
        if args.command == "stop":
            stopped = stop_everything(args.data_dir)
            sys.stdout.write(
                f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}\n"
            )
            return
    except DevstackError as error:
        sys.stderr.write(f"devstack | error: {error}\n")
        raise SystemExit(1) from None
    options = Options(
        data_dir=args.data_dir,
        api_port=args.api_port,
        matching_port=args.matching_port,
        worker_port=args.worker_port,
        smtp_port=args.smtp_port,
        market_maker=args.market_maker,
        log_json=args.log_json,
        log_level=args.log_level,
        api_workers=args.api_workers,
        fresh=args.fresh,
        prefer=args.prefer,
        startup_timeout=args.startup_timeout,
        stop_timeout=args.stop_timeout,
    )
    raise SystemExit(run(options))


if __name__ == "__main__":
    main()
