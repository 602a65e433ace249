"""Online serving over the registry (DESIGN section 13): OIP v2 + MLflow ``/invocations``.

``create_app(registry, ServeConfig(...))`` is the ASGI app; ``sparkscore serve`` runs it with
uvicorn.  An entry point like the engines: it imports the compiler, registry, IR and errors, and
nothing in sparkscore imports it.
"""

from sparkscore.serving.app import Server, create_app
from sparkscore.serving.batcher import Batcher, BatchPolicy
from sparkscore.serving.config import ServeConfig

__all__ = ["BatchPolicy", "Batcher", "ServeConfig", "Server", "create_app"]
