"""The command lines, configuration and environments the launcher builds."""

from __future__ import annotations

import dataclasses
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from brokerx_devstack.__main__ import parse_args
from brokerx_devstack.binaries import PostgresBinaries
from brokerx_devstack.children import (
    SERVICES,
    StackSettings,
    mailcatcher_command,
    service_command,
    service_env,
)
from brokerx_devstack.errors import DevstackError
from brokerx_devstack.mailcatcher import mail_file_name, summary_line
from brokerx_devstack.pgconf import conf_text, extra_settings
from brokerx_devstack.postgres import (
    Layout,
    initdb_command,
    parse_pid_file,
    pg_ctl_start_command,
    pg_ctl_stop_command,
)
from brokerx_devstack.redisserver import redis_command
from brokerx_devstack.servers import asyncpg_url, ensure_servers

BINARIES = PostgresBinaries(Path("/usr/lib/postgresql/15/bin"), (15, 20), bundled=False)


def test_initdb_creates_a_trust_cluster_for_the_postgres_superuser() -> None:
    command = initdb_command(BINARIES, Path("/d/postgres/data.initdb"))
    assert command[0] == "/usr/lib/postgresql/15/bin/initdb"
    assert command[command.index("--auth") + 1] == "trust"
    assert command[command.index("--username") + 1] == "postgres"
    assert command[command.index("--pgdata") + 1] == "/d/postgres/data.initdb"


def test_pg_ctl_waits_for_start_and_stops_fast() -> None:
    layout = Layout(Path("/d/postgres"))
    start = pg_ctl_start_command(BINARIES, layout)
    assert start[:2] == ["/usr/lib/postgresql/15/bin/pg_ctl", "start"]
    assert "--wait" in start
    assert start[start.index("--log") + 1] == "/d/postgres/postgres.log"
    stop = pg_ctl_stop_command(BINARIES, layout.pgdata, 30)
    assert stop[stop.index("--mode") + 1] == "fast"


def test_postgres_listens_on_localhost_tcp_and_a_socket_in_the_data_dir() -> None:
    text = conf_text(55432, Path("/d/postgres/socket"))
    assert "listen_addresses = '127.0.0.1'" in text
    assert "port = 55432" in text
    assert "unix_socket_directories = '/d/postgres/socket'" in text


def test_postgres_conf_quotes_paths_and_drops_sockets_too_long_for_unix() -> None:
    assert "unix_socket_directories = '/it''s/socket'" in conf_text(1, Path("/it's/socket"))
    too_long = Path("/" + "x" * 100)
    assert "unix_socket_directories = ''" in conf_text(1, too_long)  # TCP only


def test_extra_settings_from_the_environment_go_last_and_quoted() -> None:
    extra = extra_settings(
        " shared_preload_libraries=pg_stat_statements; pg_stat_statements.track = all ;"
    )
    assert extra == {
        "shared_preload_libraries": "pg_stat_statements",
        "pg_stat_statements.track": "all",
    }
    lines = conf_text(1, None, extra).splitlines()
    assert lines[-2:] == [
        "shared_preload_libraries = 'pg_stat_statements'",
        "pg_stat_statements.track = 'all'",
    ]
    assert extra_settings("") == {}


@pytest.mark.parametrize("text", ["fsync", "fsync off=1", "x=1\nfsync = on", "=on"])
def test_extra_settings_refuse_what_is_not_one_setting(text: str) -> None:
    with pytest.raises(DevstackError, match="DEVSTACK_PG_SETTINGS"):
        extra_settings(text)


def test_postmaster_pid_file_gives_pid_and_port() -> None:
    content = "4242\n/d/postgres/data\n1700000000\n55432\n/d/postgres/socket\n127.0.0.1\n"
    assert parse_pid_file(content) == (4242, 55432)
    assert parse_pid_file("4242\n") is None
    assert parse_pid_file("") is None


def test_redis_runs_daemonized_on_localhost_without_persistence() -> None:
    command = redis_command(Path("/usr/bin/redis-server"), 56379, Path("/d/redis"))
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--bind"] == "127.0.0.1"
    assert options["--port"] == "56379"
    assert options["--save"] == ""
    assert options["--appendonly"] == "no"
    assert options["--dir"] == "/d/redis"
    assert options["--daemonize"] == "yes"
    assert options["--pidfile"] == "/d/redis/redis.pid"


STACK = StackSettings(
    database_url="postgresql+asyncpg://postgres@127.0.0.1:55432/brokerx",
    redis_url="redis://127.0.0.1:56379/0",
    ports={"api": 3100, "matching": 8101, "worker": 8102},
    smtp_port=1125,
    data_dir=Path("/d"),
    postgres_bin_dir=Path("/usr/lib/postgresql/15/bin"),
)


def test_each_service_gets_the_stack_and_its_own_port() -> None:
    envs = {
        service.name: service_env({"PATH": "/usr/bin", "OPS_PORT": "9"}, service, STACK)
        for service in SERVICES
    }
    assert envs["api"]["API_PORT"] == "3100"
    assert envs["matching"]["OPS_PORT"] == "8101"
    assert envs["worker"]["OPS_PORT"] == "8102"
    for env in envs.values():
        assert env["DATABASE_URL"] == STACK.database_url
        assert env["REDIS_URL"] == STACK.redis_url
        assert env["SMTP_HOST"] == "127.0.0.1"
        assert env["SMTP_PORT"] == "1125"
        assert env["MARKET_MAKER_ENABLED"] == "true"
        assert env["LOG_JSON"] == "false"
        # pg_dump for the worker's backups must match the server's version.
        assert env["PATH"] == "/usr/lib/postgresql/15/bin:/usr/bin"


def test_no_market_maker_and_json_logs_reach_the_services() -> None:
    quiet = dataclasses.replace(STACK, market_maker=False, log_json=True)
    env = service_env({}, SERVICES[2], quiet)
    assert env["MARKET_MAKER_ENABLED"] == "false"
    assert env["LOG_JSON"] == "true"


def test_children_run_with_the_launchers_interpreter() -> None:
    assert [service_command(s) for s in SERVICES] == [
        [sys.executable, "-m", "brokerx_api"],
        [sys.executable, "-m", "brokerx_matching"],
        [sys.executable, "-m", "brokerx_worker"],
    ]
    command = mailcatcher_command(Path("/d/mail"), 1125)
    assert command[:3] == [sys.executable, "-m", "brokerx_devstack.mailcatcher"]
    assert command[command.index("--dir") + 1] == "/d/mail"


def test_urls_from_the_environment_are_used_as_they_are(tmp_path: Path) -> None:
    servers = ensure_servers(
        tmp_path / "never-created",
        environ={"DATABASE_URL": "postgresql://u:p@db:5432/x", "REDIS_URL": "redis://r:6379/1"},
    )
    assert servers.database_url == "postgresql+asyncpg://u:p@db:5432/x"
    assert servers.redis_url == "redis://r:6379/1"
    assert servers.pids == []
    assert not (tmp_path / "never-created").exists()
    servers.stop()  # nothing of ours to stop: a no-op


def test_asyncpg_url_keeps_an_explicit_driver() -> None:
    assert asyncpg_url("postgres://a@h/db") == "postgresql+asyncpg://a@h/db"
    assert asyncpg_url("postgresql+asyncpg://a@h/db") == "postgresql+asyncpg://a@h/db"


def test_mail_files_sort_in_arrival_order() -> None:
    first = mail_file_name(datetime(2025, 1, 2, 3, 4, 5, 6, tzinfo=UTC), 1)
    second = mail_file_name(datetime(2025, 1, 2, 3, 4, 5, 7, tzinfo=UTC), 2)
    assert first == "20250102T030405.000006Z-0001.eml"
    assert first < second


def test_mail_summary_names_recipient_and_subject() -> None:
    raw = b"Subject: =?utf-8?q?V=C3=A9rifiez?= your e-mail\r\nTo: ada@example.com\r\n\r\nbody"
    line = summary_line(raw, ["ada@example.com"], Path("/d/mail/1.eml"))
    assert line == "mail | to ada@example.com | Vérifiez your e-mail | /d/mail/1.eml"


def test_run_is_the_default_command() -> None:
    assert parse_args([]).command == "run"
    args = parse_args(["--fresh", "--no-market-maker"])
    assert args.command == "run"
    assert args.fresh is True
    assert args.market_maker is False
    assert args.data_dir == Path(".devdata/run")


def test_ports_come_from_flags_then_environment_then_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("API_PORT", "3300")
    args = parse_args(["run", "--worker-port", "9002"])
    assert args.api_port == 3300
    assert args.worker_port == 9002
    assert args.matching_port == 8001


def test_servers_prints_variables_with_an_optional_prefix() -> None:
    assert parse_args(["servers", "--prefix", "TEST_"]).prefix == "TEST_"
    assert parse_args(["servers"]).prefix == ""


def test_api_workers_come_from_the_flag_then_the_environment_then_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("API_WORKERS", raising=False)
    assert parse_args(["run"]).api_workers == 1
    monkeypatch.setenv("API_WORKERS", "3")
    assert parse_args(["run"]).api_workers == 3
    assert parse_args(["run", "--api-workers", "2"]).api_workers == 2
    with pytest.raises(SystemExit):
        parse_args(["run", "--api-workers", "0"])


def test_only_the_api_runs_in_multiprocess_mode_in_a_directory_of_its_own() -> None:
    base = {"PROMETHEUS_MULTIPROC_DIR": "/somewhere/else", "API_WORKERS": "7"}
    several = dataclasses.replace(STACK, api_workers=2)
    envs = {service.name: service_env(base, service, several) for service in SERVICES}
    assert envs["api"]["API_WORKERS"] == "2"
    assert envs["api"]["PROMETHEUS_MULTIPROC_DIR"] == "/d/api-metrics"
    for name in ("matching", "worker"):
        assert "PROMETHEUS_MULTIPROC_DIR" not in envs[name], name
    single = service_env(base, SERVICES[0], STACK)
    assert single["API_WORKERS"] == "1"
    assert "PROMETHEUS_MULTIPROC_DIR" not in single  # one process: plain single-process mode
