"""Weir's stand-in for kafka-python's `test/service.py`.

The kafka-python source distribution ships `test/integration` but not the
`test/service.py` that its fixtures import. Upstream, that module spawns a
Java broker and scans its log. Weir's suite runs against a broker that
`tests/compat/kafka_python.sh` has already started, so the fixtures only ever
take their external-broker path (`KAFKA_URI` is set), which needs
`ExternalService`. `SpawnedService` exists so the import succeeds; a test that
asks for a broker of its own (SSL, SASL) fails clearly instead of launching
anything.
"""

import logging
import socket

log = logging.getLogger(__name__)

# How long `ExternalService.wait_for` tries to reach the broker's port.
CONNECT_TIMEOUT_S = 10


class ExternalService:
    """A broker that something else started and stops."""

    def __init__(self, host, port):
        log.info("Using already running service at %s:%d", host, port)
        self.host = host
        self.port = port

    def open(self):
        pass

    def close(self):
        pass

    def start(self):
        pass

    def stop(self):
        pass

    def dump_logs(self):
        # The entry script prints the broker's stderr when a test fails.
        pass

    def wait_for(self, pattern, timeout=CONNECT_TIMEOUT_S):
        """Reports whether the broker accepts connections; there is no log to scan."""
        try:
            with socket.create_connection((self.host, self.port), timeout=min(timeout, CONNECT_TIMEOUT_S)):
                return True
        except OSError:
            return False


class SpawnedService:
    """Would run a broker process; Weir's suite never spawns one."""

    def __init__(self, args=None, env=None):
        raise RuntimeError(
            "this suite runs against an already running Weir broker (KAFKA_URI); "
            "tests that need a broker of their own (SSL, SASL) are not supported"
        )
