"""sparkscore packaging: library ranges here; exact pins live in constraints.txt."""

from setuptools import setup

CORE = [
    "numpy>=1.26,<2.5",
    "pandas>=2.1,<3",          # pyspark 4.2 warns on pandas >= 3
    "pyarrow>=15",
    "sqlglot>=30,<31",
    "duckdb>=1.1",
    "typer>=0.12",
    "rich>=13",
    "filelock>=3.12",
    "deltalake>=1.0",
    # the compiled CPU kernels backend="auto" runs (llvmlite comes with it): without them auto falls back to
    # the reference / torch CPU at 0.08x-0.35x native predict, so they belong in the default install
    "numba>=0.60",
    # monitoring (sparkscore.monitor): register(training_data=...) stores a training profile by default and
    # `sparkscore monitor` must work on a plain install; KLL quantile sketches (Apache DataSketches, numpy only)
    # and the KS / chi-square p-values and exact KS / Wasserstein (scipy) are what it cannot do without
    "datasketches>=5.0,<6",
    "scipy>=1.11",
]
EXTRAS = {
    "torch": ["torch==2.13.0"],
    "compiled": [],  # numba moved into CORE; the extra stays so `.[compiled]` installs keep working
    "sklearn": ["scikit-learn>=1.5"],
    "lightgbm": ["lightgbm>=4.3"],
    "xgboost": ["xgboost-cpu>=2.1"],
    # CatBoost importer (fitted objects and .cbm files; its JSON export converts without it); not in `models`:
    # the wheel is large and pulls plotly/graphviz, and the quickstart does not need it
    "catboost": ["catboost>=1.2,<1.3"],
    "spark": ["pyspark==4.2.*", "delta-spark>=4.0,<5"],
    "notebook": ["ipython>=8"],
    # MLflow interop (models:/ and runs:/ URIs, MLmodel files): the skinny client is enough (full mlflow needs
    # pyarrow<26); pyyaml reads MLmodel, cloudpickle only for the sklearn flavor's explicit allow_pickle opt-in
    "mlflow": ["mlflow-skinny>=3.0,<4", "pyyaml>=6", "cloudpickle>=2"],
    # ONNX classical-ML graphs (ss.convert("model.onnx")): read with onnx (protobuf), never onnxruntime
    "onnx": ["onnx>=1.16"],
    # registry on object storage (Registry("s3://bucket/prefix")): s3fs does S3's conditional PutObject
    # (If-None-Match, botocore>1.35.20); gs:// and abfs:// need gcsfs / adlfs installed by the user
    "s3": ["s3fs>=2024.10", "fsspec>=2024.10"],
    # already in CORE (see there); the extra names them for installs that pin the monitoring stack explicitly;
    # matplotlib (Agg, no display) draws the histograms of `sparkscore monitor --html`
    "monitor": ["datasketches>=5.0,<6", "scipy>=1.11", "matplotlib>=3.8"],
    # `sparkscore serve`: uvicorn runs the Starlette app; prometheus-client renders /metrics; uvicorn picks
    # uvloop + httptools when they are importable (its event loop and HTTP parser), which changes its speed,
    # so they are named here (same markers as uvicorn[standard]) instead of arriving by chance through
    # another package (evidently's uvicorn[standard]): every `.[serve]` install runs the measured server
    "serve": ["uvicorn>=0.30", "starlette>=0.37", "prometheus-client>=0.20", "httptools>=0.6",
              "uvloop>=0.15.1; sys_platform != 'win32' and sys_platform != 'cygwin' and "
              "platform_python_implementation != 'PyPy'"],
    # peers measured side by side; hummingbird-ml itself pins old onnx/xgboost, so the bench README
    # installs it with --no-deps (it needs psutil, dill and onnxconverter-common from here)
    # treelite + tl2cgen: the generated-C peer (needs gcc at bench time)
    # tpchgen-cli: generates the TPC-H parquet files bench_factorize_sweep.py --tpch validates the cost rule on
    # evidently + whylogs: the monitoring peers bench_monitor.py measures values and speed against
    "bench": ["matplotlib>=3.8", "onnxruntime>=1.17", "skl2onnx>=1.16", "onnxmltools>=1.12", "psutil>=5", "dill>=0.3",
              "treelite>=4.4", "tl2cgen>=1.0", "tpchgen-cli>=4.0,<5", "evidently>=0.7.23,<0.8", "whylogs>=1.6,<2",
              # bench_serve.py's peers: MLflow's own scoring server (skinny: full mlflow needs pyarrow<26)
              # and the FastAPI + native predict baseline; mlflow.pyfunc.spark_udf, the peer of bench_spark_path.py
              "mlflow-skinny>=3.17,<4", "fastapi>=0.110"],
}
EXTRAS["models"] = EXTRAS["sklearn"] + EXTRAS["lightgbm"] + EXTRAS["xgboost"]
EXTRAS["all"] = sorted({req for name, reqs in EXTRAS.items() if name != "bench" for req in reqs})
EXTRAS["test"] = EXTRAS["all"] + ["pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100", "import-linter>=2.1",
                                   # serving tests: in-process ASGI client; tritonclient is the real OIP v2 client
                                   "httpx>=0.27", "tritonclient[http]>=2.40",
                                   # ONNX importer tests: onnxruntime is the oracle, skl2onnx/onnxmltools the sources
                                   "onnxruntime>=1.17", "skl2onnx>=1.16", "onnxmltools>=1.12",
                                   # object-store registry tests: moto's S3 server on loopback, boto3 makes the bucket
                                   "moto[server]>=5.1,<6", "boto3>=1.35"]

setup(
    name="sparkscore",
    version="0.1.0",
    description="Score trained ML models inside Spark SQL / PySpark and DuckDB, with a query optimizer",
    python_requires=">=3.10",
    # explicit: a top-level jobs/ folder defeats setuptools' automatic discovery
    packages=[
        "sparkscore",
        "sparkscore.ir",
        "sparkscore.importers",
        "sparkscore.compiler",
        "sparkscore.registry",
        "sparkscore.optimizer",
        "sparkscore.engines",
        "sparkscore.serving",
        "sparkscore.monitor",
        "sparkscore.sql",
    ],
    # the user-facing example queries in sql/ ship inside the package as sparkscore/sql/*.sql
    package_dir={"sparkscore.sql": "sql"},
    package_data={"sparkscore": ["py.typed"], "sparkscore.sql": ["*.sql"]},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["sparkscore=sparkscore.cli:main"]},
)
