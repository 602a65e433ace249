"""Server settings: one frozen dataclass, so a test, the CLI and a config file build the same thing."""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sparkscore.errors import SparkscoreError


class ServeConfigError(SparkscoreError, ValueError):
    """A serve config file (or option) that names an unknown setting or gives it the wrong type."""


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
    # sampled request logging into a Delta prediction log (sparkscore.monitor.predlog), off the request path
    log_table: str | None = None       # Delta path; None: no request log
    log_sample: float = 0.01           # share of requests logged
    log_queue_size: int = 10_000       # records waiting for the writer; more are dropped and counted
    instance_id: str | None = None     # the log's ``source`` (default: serve-<host>-<pid>-<random>)

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> "ServeConfig":
        """Settings from a TOML file (``[serve]`` table or top level; keys = field names), then ``overrides``."""
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ServeConfigError(f"cannot read serve config {path}: {exc}") from None
        doc = doc.get("serve", doc)
        return cls.build({**doc, **overrides}, source=str(path))

    @classmethod
    def build(cls, values: dict[str, Any], source: str = "options") -> "ServeConfig":
        """A config from ``values`` (checked: known names, the field's type)."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        out: dict[str, Any] = {}
        for key, value in values.items():
            if key not in fields:
                raise ServeConfigError(f"{source}: unknown serve setting {key!r}; use one of {', '.join(fields)}")
            default = getattr(cls, key, None)
            if key == "models":
                value = tuple(value) if isinstance(value, (list, tuple)) else value
                if not isinstance(value, tuple) or not all(isinstance(m, str) for m in value):
                    raise ServeConfigError(f"{source}: 'models' must be a list of model names")
            elif key in ("token", "log_table", "instance_id"):
                if value is not None and not isinstance(value, str):
                    raise ServeConfigError(f"{source}: {key!r} must be a string")
            elif key == "log_sample" and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                          or not 0.0 <= value <= 1.0):
                raise ServeConfigError(f"{source}: 'log_sample' must be a share in [0, 1], got {value!r}")
            elif isinstance(default, bool) or not isinstance(value, (int, float)) or isinstance(value, bool) \
                    or (isinstance(default, int) and not isinstance(value, int)) or value < 0:
                if not (isinstance(default, str) and isinstance(value, str)):
                    raise ServeConfigError(f"{source}: {key!r} must be a non-negative "
                                           f"{type(default).__name__}, got {value!r}")
            out[key] = float(value) if isinstance(default, float) else value
        return cls(**out)
