"""An existing Dask cluster (`--dask-address`), checked before Prefect starts.

The scheduler is asked for its workers first: a wrong address is one line after a few seconds,
not a traceback after a minute. The run's task runs must reach its Prefect API: the runner
(flows/dask_runner.py) hands the workers the temporary server's URL, but that server listens on
127.0.0.1 only, so with workers on other machines and no PREFECT_API_URL the run is refused,
saying to start a server they can reach. Imports neither Prefect nor Dask until asked.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from urllib.parse import urlparse

CONNECT_TIMEOUT_S = 5.0


class DaskClusterError(RuntimeError):
    """The Dask cluster cannot take this run; the message says what to do."""


def cluster_workers(address: str, timeout: float = CONNECT_TIMEOUT_S) -> list[str]:
    """The addresses of the scheduler's workers; DaskClusterError when none answers."""
    from distributed import Client

    try:
        with Client(address, timeout=timeout, set_as_default=False) as client:
            workers = list(client.scheduler_info().get("workers", {}))
    except (OSError, TimeoutError, ValueError) as exc:
        raise DaskClusterError(
            f"--dask-address {address}: no Dask scheduler answered within {timeout:g} s ({type(exc).__name__}: {exc}). "
            f"Start one (`dask scheduler`, then `dask worker {address}` on each machine) or fix the address"
        ) from None
    if not workers:
        raise DaskClusterError(f"--dask-address {address}: the scheduler has no workers; start some with "
                               f"`dask worker {address}` (with PREFECT_API_URL set, see docs/operations.md)")
    return workers


def is_this_machine(host: str) -> bool:
    """Whether `host` is an address of this machine: loopback, or one a socket can bind to."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    for family, _, _, _, address in infos:
        ip = address[0]
        try:
            if ipaddress.ip_address(ip).is_loopback:
                return True
        except ValueError:
            continue
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                probe.bind((ip, 0))  # only an address of one of this machine's interfaces binds
            return True
        except OSError:
            continue
    return False


def remote_workers(workers: list[str]) -> list[str]:
    """The workers that are not on this machine."""
    return [w for w in workers if not is_this_machine(urlparse(w).hostname or "")]


def check_cluster(address: str) -> list[str]:
    """Before Prefect starts: the cluster answers, and its workers can reach the run's API."""
    workers = cluster_workers(address)
    far = remote_workers(workers)
    if far and not os.environ.get("PREFECT_API_URL"):
        raise DaskClusterError(
            f"--dask-address {address}: worker(s) {', '.join(far[:3])} run on other machines and could not reach "
            "this run's temporary Prefect server (127.0.0.1). Start a Prefect server they can reach "
            "(`prefect server start --host 0.0.0.0`) and set PREFECT_API_URL=http://<this-host>:4200/api here "
            "and on every worker")
    return workers
