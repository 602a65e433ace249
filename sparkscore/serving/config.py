"""Server settings: one frozen dataclass, so a test, the CLI and a config file build the same thing."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServeConfig:
    """What ``sparkscore serve`` runs with; every limit a client could push against is here.

    ``models``: names (or refs) to serve, empty for every model of the registry.  ``token``: when
    set, every endpoint except ``/v2/health/*`` needs ``Authorization: Bearer <token>``.
    Batching fields are :class:`~sparkscore.serving.batcher.BatchPolicy`'s (see its docstring).
    """

    host: str = "127.0.0.1"           # loopback unless the user says otherwise
    port: int = 8080
    models: tuple[str, ...] = ()
    token: str | None = None
    max_body_bytes: int = 4 * 1024 * 1024
    max_concurrency: int = 256         # requests in flight at once; more get 503 (never an unbounded backlog)
    max_rows: int = 65_536             # rows in one request
    # batching (AIMD on the queue delay, see batcher.BatchPolicy)
    max_batch_rows: int = 1024
    max_delay_s: float = 0.002
    latency_objective_s: float = 0.005
    queue_size: int = 1024             # requests waiting per model version
    # reload / cache
    poll_s: float = 0.5                # registry watcher period (aliases picked up within ~1 s)
    memory_budget_bytes: int = 2 * 1024 ** 3
    drain_timeout_s: float = 10.0
