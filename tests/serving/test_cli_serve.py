"""``sparkscore serve`` as a real process on a free loopback port, called by httpx and tritonclient."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from sparkscore.serving.models import BACKEND  # the server's: row-stable

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(small_registry):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", "from sparkscore.cli import main; main()", "serve",
               "--registry", str(small_registry.root), "--port", str(port), "--models", "lin,clf"]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"sparkscore serve exited with {proc.returncode}: {proc.stdout.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"sparkscore serve not ready after {READY_TIMEOUT_S} s")
            time.sleep(0.2)
        yield url, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def test_serve_answers_both_protocols_and_metrics(server, small_registry):
    url, _ = server
    rows = {"a": [0.5, -1.0], "b": [1.0, 2.0], "c": [0.0, 0.25]}
    expected = small_registry.load("lin/1").predict(np.array(list(rows.values())).T, backend=BACKEND)
    body = {"inputs": [{"name": k, "shape": [2], "datatype": "FP64", "data": v} for k, v in rows.items()]}
    r = httpx.post(f"{url}/v2/models/lin@prod/infer", json=body, timeout=10)
    assert r.status_code == 200 and r.headers["x-sparkscore-model-version"] == "1"
    np.testing.assert_array_equal(r.json()["outputs"][0]["data"], expected)
    r = httpx.post(f"{url}/invocations?model=lin/1", json={"inputs": rows}, timeout=10)
    assert r.status_code == 200 and r.json()["predictions"] == expected.tolist()
    assert httpx.post(f"{url}/v2/models/other/infer", json=body, timeout=10).status_code == 404  # not in --models
    assert "sparkscore_request_latency_seconds" in httpx.get(f"{url}/metrics", timeout=10).text


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary-tensors"])
def test_tritonclient(server, small_registry, binary):
    http = pytest.importorskip("tritonclient.http")
    _, port = server
    client = http.InferenceServerClient(url=f"127.0.0.1:{port}")
    try:
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("lin")
        meta = client.get_model_metadata("lin", model_version="1")
        assert [i["name"] for i in meta["inputs"]] == ["a", "b", "c"]
        X = np.array([[0.5, 1.0, 0.0], [-1.0, 2.0, 0.25], [np.nan, 3.0, 1.0]])
        inputs = []
        for j, name in enumerate("abc"):
            tensor = http.InferInput(name, [len(X)], "FP64")
            tensor.set_data_from_numpy(X[:, j].copy(), binary_data=binary)
            inputs.append(tensor)
        for model_name, version, answered in (("lin", "", 2), ("lin", "1", 1), ("lin@prod", "", 1)):
            result = client.infer(model_name, inputs, model_version=version,
                                  outputs=[http.InferRequestedOutput("predict", binary_data=False)])
            expected = small_registry.load(f"lin/{answered}").predict(X, backend=BACKEND)
            np.testing.assert_array_equal(result.as_numpy("predict"), expected)
            assert result.get_response()["model_version"] == str(answered)
        proba = client.infer("clf", inputs).as_numpy("proba")
        np.testing.assert_array_equal(proba, small_registry.load("clf/1").predict_proba(X, backend=BACKEND))
    finally:
        client.close()


def test_serve_unknown_model_is_one_line_error(runner, registry):
    from sparkscore.cli import app

    result = runner.invoke(app, ["serve", "--registry", str(registry.root), "--models", "nope", "--port", "1"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: model 'nope' is not in the registry")
    assert len(result.output.strip().splitlines()) == 1


def test_serve_config_file_then_options(tmp_path):
    from sparkscore.serving.config import ServeConfig, ServeConfigError

    assert ServeConfig.from_file(ROOT / "conf" / "serve.toml") == ServeConfig()  # the shipped file = the defaults
    path = tmp_path / "serve.toml"
    path.write_text("[serve]\nport = 9000\nmax_body_bytes = 1000\nmodels = ['a']\n")
    config = ServeConfig.from_file(path, port=9001)
    assert (config.port, config.max_body_bytes, config.models) == (9001, 1000, ("a",))
    for bad in ("nope = 1", "port = 'x'", "max_delay_s = -1", "models = 'a'"):
        path.write_text(bad)
        with pytest.raises(ServeConfigError):
            ServeConfig.from_file(path)


def test_serve_cli_reads_the_config_file_and_typed_options_win(runner, small_registry, tmp_path, monkeypatch):
    import uvicorn

    from sparkscore.cli import app

    ran = {}
    monkeypatch.setattr(uvicorn, "run", lambda asgi, **kw: ran.update(config=asgi.state.server.config, **kw))
    path = tmp_path / "serve.toml"
    path.write_text("[serve]\nmodels = ['lin']\nport = 1234\nmax_delay_s = 0.001\n")
    root = str(small_registry.root)
    assert runner.invoke(app, ["serve", "--registry", root, "--config", str(path)]).exit_code == 0
    assert (ran["port"], ran["config"].models, ran["config"].max_delay_s) == (1234, ("lin",), 0.001)
    result = runner.invoke(app, ["serve", "--registry", root, "--config", str(path), "--port", "99", "--max-delay-ms", "3"])
    assert result.exit_code == 0 and (ran["port"], ran["config"].max_delay_s) == (99, 0.003)
    assert ran["host"] == "127.0.0.1"
