"""The driver program of tests/engines/test_spark_cluster.py: one ``local-cluster[2,1,1024]`` session.

A ``local-cluster`` master runs a standalone master and two workers inside this JVM; each worker
launches its executor as a separate JVM with its own Python workers, as on a real cluster.  A
process holds one SparkContext, and the test run already holds a ``local[2]`` one, so this
program runs as a subprocess: it scores, records what it saw, and writes one JSON file.

    python tests/engines/cluster_driver.py CONFIG.json      # config written by the test fixture
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MASTER = "local-cluster[2,1,1024]"


def session(load_log: str):
    from pyspark.sql import SparkSession

    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    os.environ.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable, PYTHONPATH=path)
    return (SparkSession.builder.master(MASTER).appName("sparkscore-cluster-tests")
            .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "4").config("spark.executor.memory", "640m")
            .config("spark.executorEnv.PYTHONPATH", path).config("spark.executorEnv.PYSPARK_PYTHON", sys.executable)
            .config("spark.executorEnv.SPARKSCORE_LOAD_LOG", load_log)
            .config("spark.executorEnv.SPARKSCORE_CALIBRATION_BUDGET_S", "0.3")
            .config("spark.sql.execution.arrow.maxRecordsPerBatch", "200").getOrCreate())


def executors(spark, want: int, timeout_s: float = 120.0) -> int:
    """How many executors have registered (waiting up to ``timeout_s`` for ``want``; the driver is not one)."""
    deadline = time.time() + timeout_s
    while True:
        found = len(spark.sparkContext._jsc.sc().statusTracker().getExecutorInfos()) - 1
        if found >= want or time.time() > deadline:
            return found
        time.sleep(0.5)


def executor_of(pids: list[int]) -> dict[str, int | None]:
    """pid of a Python worker -> pid of the executor JVM above it (None: not under an executor)."""
    def parent(pid: int) -> int | None:
        try:
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            return None

    out: dict[str, int | None] = {}
    for pid in set(pids):
        found, p = None, parent(pid)
        while p and p > 1:
            if b"CoarseGrainedExecutorBackend" in Path(f"/proc/{p}/cmdline").read_bytes():
                found = p
                break
            p = parent(p)
        out[str(pid)] = found
    return out


def main(config_path: str) -> None:
    import sparkscore as ss
    from sparkscore.engines import spark as ss_spark

    config = json.loads(Path(config_path).read_text())
    started = time.time()
    spark = session(config["load_log"])
    spark.sparkContext.setLogLevel("ERROR")
    out: dict = {"startup_s": None, "executors": executors(spark, 2)}
    out["startup_s"] = time.time() - started
    registry = ss.Registry(config["registry"])
    data = spark.read.parquet(config["input"]).repartition(4)
    data.createOrReplaceTempView("cluster_input")

    # PREDICT (kernel UDF), twice: a second query must not load the model again in any executor
    query = "SELECT id, PREDICT('trees', *) AS p, PREDICT_PROBA('trees', *) AS pp FROM cluster_input"
    for i in range(2):
        frame = ss_spark.sql(spark, query, registry)
        rows = frame.toPandas().sort_values("id")
    # PREDICT + PREDICT_PROBA of one model: one fused struct UDF, so one ArrowEvalPython node (and worker)
    final_plan = frame._jdf.queryExecution().executedPlan().toString().split("== Initial Plan ==")[0]  # AQE prints both
    out["predict_python_nodes"] = final_plan.count("ArrowEvalPython")
    out["predict"] = {"id": rows.id.tolist(), "p": rows.p.tolist(), "pp": [list(v) for v in rows.pp]}
    # ss.spark.predict on both streaming paths (the same model registered as trees_arrow / trees_udf, so
    # the load log tells the paths apart), twice each; mapInArrow returns both outputs from one pass
    for path in ("arrow", "udf"):
        for i in range(2):
            rows = (ss_spark.predict(data, f"trees_{path}", "p", registry, proba_col="pp", path=path)
                    .toPandas().sort_values("id"))
        out[f"predict_{path}"] = {"id": rows.id.tolist(), "p": rows.p.tolist()}
    # the scoring scan: the executors' Python workers read the file's row groups with pyarrow themselves
    scanned = spark.read.parquet(config["input"])
    for i in range(2):
        frame = ss_spark.predict(scanned, "trees_scan", "p", registry, proba_col="pp", path="scan")
        rows = frame.toPandas().sort_values("id")
    out["predict_scan"] = {"id": rows.id.tolist(), "p": rows.p.tolist(), "partitions": frame.rdd.getNumPartitions()}

    # factorized star join: GLM partial sums below the join, on two executors, against the plain plan
    spark.read.parquet(config["fact"]).createOrReplaceTempView("cluster_fact")
    star = (f"SELECT SUM(PREDICT('star', *)) AS total FROM parquet.`{config['fact']}` AS s "
            f"JOIN parquet.`{config['dim']}` AS r ON s.k = r.k")
    plan = ss_spark.explain(star, spark, registry)
    out["factorize"] = {
        "decision": next((d.reason for d in plan.decisions if d.rule == "factorize_linear" and d.fired), None),
        "total": ss_spark.sql(spark, star, registry).collect()[0][0],
        "total_off": ss_spark.sql(spark, star, registry, disable_rules=("factorize_linear", "inline_models"))
        .collect()[0][0]}
    # which executor JVM each loading Python worker runs under (while the idle workers still live)
    out["executor_of"] = executor_of([int(line.split()[0]) for line in Path(config["load_log"]).read_text().splitlines()])
    spark.stop()
    out["seconds"] = time.time() - started
    Path(config["result"]).write_text(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
