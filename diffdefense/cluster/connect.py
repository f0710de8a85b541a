"""Connecting to a Ray cluster: the local one by default, or one named by its address."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

LOCAL = "local"  # `--ray` with no address: ray.init() starts a cluster on this machine (or joins $RAY_ADDRESS's)
# What Ray takes as an address: 'auto' (the cluster `ray start` began on this node), host:port of a head node, or a
# Ray Client URL. Anything else is most likely a path the option swallowed (`--ray images.npz`).
ADDRESS = re.compile(r"^(auto|local|ray://\S+|[A-Za-z0-9.\-]+:\d+|\[[0-9A-Fa-f:.]+\]:\d+)$")


class RayMissing(ImportError):
    """Ray is not installed: the message says how to install it."""


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (the bulk defence needs Ray Data, which plain `pip install ray` lacks)
    except ImportError as err:
        raise RayMissing(
            f"Running on Ray needs the cluster extra: pip install 'diffdefense[cluster]' (from a checkout: "
            f"pip install -e '.[cluster]'); importing it failed with {err}."
        ) from err
    return ray


def check_address(address: str) -> str:
    """address as given, or ValueError saying what an address looks like."""
    if not ADDRESS.match(address):
        raise ValueError(
            f"Expected a Ray address ('auto', HOST:PORT or ray://HOST:PORT), but got {address!r}; a bare --ray "
            "before the inputs takes the next word as the address: put --ray after them, or write --ray=ADDRESS."
        )
    return address


@contextmanager
def ray_cluster(address: str = LOCAL) -> Iterator:
    """The ray module, connected: to a cluster already joined by this process (left running), else to address
    (LOCAL: ray.init() on this machine), shut down again on leaving."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    check_address(address)
    if address == LOCAL:
        ray.init(include_dashboard=False, logging_level=logging.WARNING)
    else:
        ray.init(address=address, logging_level=logging.WARNING)
    try:
        yield ray
    finally:
        ray.shutdown()


def node_cpus(ray) -> list[int]:
    """The CPUs of each live node of the connected cluster, now (an autoscaling cluster may grow later)."""
    return [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]


def check_workers(ray, workers: int | None, cpus_per_worker: int) -> int:
    """The number of workers of cpus_per_worker CPUs each to run: workers, or as many as the cluster's nodes hold
    if None; ValueError where they hold fewer (Ray would wait for them for ever)."""
    if not isinstance(cpus_per_worker, int) or isinstance(cpus_per_worker, bool) or cpus_per_worker < 1:
        raise ValueError(f"Expected at least 1 CPU per worker, but got {cpus_per_worker!r}.")
    nodes = node_cpus(ray)
    fitting = sum(cpus // cpus_per_worker for cpus in nodes)
    if fitting < 1:
        raise ValueError(
            f"Expected a node with at least {cpus_per_worker} CPUs for a worker, but the cluster's nodes have {nodes}."
        )
    if workers is None:
        return fitting
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= fitting:
        raise ValueError(
            f"Expected between 1 and {fitting} workers of {cpus_per_worker} CPUs (the cluster's nodes have {nodes} "
            f"CPUs), but got {workers!r}."
        )
    return workers
