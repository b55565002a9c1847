"""The end-to-end tests' names for `orderflow.chaos.cluster` (the process management lives in the
package, once, so that `orderflow chaos` works from an installed orderflow)."""

from __future__ import annotations

from orderflow.chaos.cluster import (
    ADMIN_TOKEN,
    FAST_KNOBS,
    MAIL_FROM,
    ClusterError,
    Proc,
    ProcessGroup,
    clean_environ,
    free_ports,
    wait_http_ready,
    wait_log_line,
    wait_until,
)
from orderflow.chaos.cluster import Cluster as E2EStack
from orderflow.chaos.cluster import cluster as e2e_stack

__all__ = [
    "ADMIN_TOKEN",
    "FAST_KNOBS",
    "MAIL_FROM",
    "ClusterError",
    "E2EStack",
    "Proc",
    "ProcessGroup",
    "clean_environ",
    "e2e_stack",
    "free_ports",
    "wait_http_ready",
    "wait_log_line",
    "wait_until",
]
