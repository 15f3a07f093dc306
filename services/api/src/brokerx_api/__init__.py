"""BrokerX's public api (FastAPI). Importing the package first makes Prometheus's
multiprocess values read a cached pid (`use_cached_pid`), before any metric exists."""

from brokerx_core.observability.multiprocess import use_cached_pid

use_cached_pid()
