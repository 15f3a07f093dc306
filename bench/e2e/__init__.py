"""End-to-end load generator for BrokerX (`make bench`, `make chaos`).

Modules: `stack` starts the system, `clients` creates funded clients, `http` is a lean
keep-alive HTTP/1.1 client, `mix` chooses the next request of a client, `load` runs
closed- and open-loop traffic, `stream` listens to execution reports, `cpu` samples the
processes, `stats` and `report` turn samples into numbers, tables and plots.
"""
