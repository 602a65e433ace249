"""The hand-written baseline of bench_serve.py: FastAPI + LightGBM's own ``Booster.predict``, one uvicorn worker.

What a team writes in an afternoon instead of adopting a server: MLflow's request shape
(``{"dataframe_split": {"columns": [...], "data": [[...]]}}`` -> ``{"predictions": [...]}``), no
schema validation, no batching.  Run by bench_serve.py as
``python -m uvicorn --app-dir bench serve_fastapi_baseline:app --workers 1`` with
``SPARKSCORE_BENCH_LGB_MODEL`` naming a LightGBM text model file
(``SPARKSCORE_BENCH_LGB_THREADS``: ``num_threads``, default 1).
"""

from __future__ import annotations

import json
import os

import lightgbm as lgb
import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import Response

# one thread by default: at one row per request LightGBM's 2-thread OpenMP team was measured here at
# 7-37 ms a call under load (the team's spin-waits compete for 2 busy cores) against ~0.3 ms on one thread
THREADS = int(os.environ.get("SPARKSCORE_BENCH_LGB_THREADS", "1"))
booster = lgb.Booster(model_file=os.environ["SPARKSCORE_BENCH_LGB_MODEL"])
app = FastAPI()


@app.get("/ping")
async def ping() -> dict:
    return {"ok": True}


@app.post("/invocations")
async def invocations(request: Request) -> Response:
    doc = json.loads(await request.body())
    X = np.asarray(doc["dataframe_split"]["data"], dtype=np.float64)
    predictions = booster.predict(X, num_threads=THREADS)
    return Response(json.dumps({"predictions": predictions.tolist()}), media_type="application/json")
