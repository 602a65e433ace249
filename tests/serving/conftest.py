"""Serving fixtures: small models in a session registry and an in-process app driven by httpx.

``httpx.ASGITransport`` sends no lifespan events, so :func:`serving` starts and stops the
:class:`~sparkscore.serving.Server` itself; every test runs its own event loop (``asyncio.run``).
"""

from __future__ import annotations

import contextlib

import httpx
import numpy as np
import pytest

import sparkscore as ss
from sparkscore.serving import ServeConfig, Server

FEATURES = ["a", "b", "c"]


@contextlib.asynccontextmanager
async def serving(registry, config: ServeConfig = ServeConfig()):
    """(server, client) of a started app over ``registry``; stopped on exit."""
    server = Server(registry, config)
    await server.start()
    try:
        transport = httpx.ASGITransport(app=server.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving.test") as client:
            yield server, client
    finally:
        await server.stop()


def glm(seed: int, scale: float = 1.0):
    """A tiny sparkscore GLM (no native library needed) whose predictions depend on ``seed``."""
    from sklearn.linear_model import LinearRegression

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(64, 3))
    y = X @ (scale * rng.normal(size=3)) + seed
    return ss.convert(LinearRegression().fit(X, y), feature_names=FEATURES)


@pytest.fixture(scope="session")
def small_registry(tmp_path_factory):
    """``lin`` (regression, versions 1 and 2, alias prod -> 1) and ``clf`` (binary logistic)."""
    from sklearn.linear_model import LogisticRegression

    reg = ss.Registry(tmp_path_factory.mktemp("serving") / "registry")
    reg.register("lin", glm(1))
    reg.register("lin", glm(2))
    reg.set_alias("lin", "prod", 1)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(64, 3))
    reg.register("clf", LogisticRegression().fit(X, (X[:, 0] > 0).astype(int)), feature_names=FEATURES)
    return reg


def v2_body(columns: dict, datatype: str = "FP64") -> dict:
    return {"inputs": [{"name": k, "shape": [len(v)], "datatype": datatype, "data": list(v)} for k, v in columns.items()]}


def post(client, url: str, doc, **kwargs):
    """POST ``doc`` as JSON with NaN/Infinity allowed (Python's json; httpx's ``json=`` refuses them)."""
    import json

    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return client.post(url, content=json.dumps(doc).encode(), headers=headers, **kwargs)
