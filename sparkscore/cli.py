"""``sparkscore`` command line: a thin shell over the registry, the engines, batch jobs and benchmarks.

Error contract: a failure prints ONE line ``error: ...`` on stderr and exits 1 (2 for usage
errors); ``--debug`` lets the exception and its traceback through instead.  User text (SQL, names,
paths) is never interpreted as rich markup.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from sparkscore.errors import SparkscoreError

FORMATS = ("auto", "lightgbm", "xgboost", "pyspark", "sparkscore", "pickle")
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
_TABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_MAX_ERROR_CHARS = 500
_CHECKOUT = Path(__file__).resolve().parents[1]  # jobs/, bench/ and conf/ live beside the package in a checkout
ENGINES = ("duckdb", "spark")


@dataclass(frozen=True)
class BenchSuite:
    """One bench/ script and where it leaves its results."""

    script: str
    quick_results: str
    full_results: str


BENCH_SUITES = {
    "kernels": BenchSuite("bench_kernels.py", "bench/results/kernels_quick.{json,md,png}",
                          "bench/results/kernels_full.{json,md,png}"),
    "optimizer": BenchSuite("bench_optimizer.py", "bench/results/optimizer_duckdb_quick.{json,md}",
                            "bench/results/optimizer_duckdb.{json,md}"),
    "duckdb": BenchSuite("bench_duckdb_udf.py", "stdout only (quick runs write no files)",
                         "bench/results/duckdb_udf.{json,md}"),
    "spark": BenchSuite("bench_spark.py", "bench/results/spark.{json,md}", "bench/results/spark.{json,md}"),
}


class _CommandFailed(typer.TyperException):
    """A command's exception, reduced to the one line the user sees."""

    exit_code = 1


class _Group(TyperGroup):
    """Turns every failure into ``error: <one line>`` + exit code (1, or 2 for usage errors)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (typer.TyperException, typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if isinstance(ctx.obj, _Settings) and ctx.obj.debug:
                raise
            raise _CommandFailed(_one_line(exc)) from exc

    def main(self, args: Optional[Sequence[str]] = None, prog_name: Optional[str] = None,
             complete_var: Optional[str] = None, standalone_mode: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as exc:
            message = exc.format_message()
            if not message:  # no arguments at all: the help text was the answer
                return _exit(exc.exit_code, standalone_mode)
            usage_ctx = getattr(exc, "ctx", None)
            if exc.exit_code == 2 and usage_ctx is not None:
                message = f"{message.rstrip('.')} (see '{usage_ctx.command_path} --help')"
            print(f"error: {message}", file=sys.stderr)
            rv = exc.exit_code
        except typer.Abort:
            print("error: aborted", file=sys.stderr)
            rv = 1
        return _exit(rv, standalone_mode)


def _exit(rv: Any, standalone_mode: bool) -> Any:
    if not standalone_mode:
        return rv
    sys.exit(rv if isinstance(rv, int) else 0)


@dataclass(frozen=True)
class _Settings:
    registry: Optional[str]
    debug: bool


app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Score trained models inside DuckDB and Spark SQL with PREDICT().")


@app.callback()
def _global_options(
    ctx: typer.Context,
    registry: Optional[str] = typer.Option(None, "--registry", metavar="PATH|file://URI",
                                           help="Registry root (default: $SPARKSCORE_HOME or ~/.sparkscore)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
) -> None:
    ctx.obj = _Settings(registry, debug)


def _registry(ctx: typer.Context):
    from sparkscore.registry import Registry

    return Registry(ctx.obj.registry)


def _out() -> Console:
    return Console(highlight=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False)


# ---------------------------------------------------------------------- commands
@app.command()
def quickstart(ctx: typer.Context,
               customers: int = typer.Option(20_000, min=100, help="Number of generated customers.")) -> None:
    """Train demo models on generated data, register them, run example PREDICT queries on DuckDB."""
    from sparkscore.quickstart import run_quickstart

    run_quickstart(_out(), _registry(ctx), n_customers=customers)


@app.command()
def register(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="Model name, e.g. churn."),
    path: Path = typer.Argument(..., metavar="PATH", help="Model file or directory."),
    alias: Optional[str] = typer.Option(None, "--alias", help="Point this alias at the new version."),
    fmt: str = typer.Option("auto", "--format", help=f"One of {', '.join(FORMATS)}."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle",
                                      help="Allow pickle/joblib files (unpickling runs code from the file)."),
    feature_names: Optional[str] = typer.Option(None, "--feature-names", help="Comma-separated input names."),
    lineage: List[str] = typer.Option([], "--lineage", metavar="KEY=VALUE",
                                      help="Lineage to record, e.g. code_version=abc123 (repeatable)."),
) -> None:
    """Register a model file as the next version of NAME."""
    if fmt not in FORMATS:
        raise typer.BadParameter(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}", param_hint="--format")
    from sparkscore.registry import validate_name

    if alias is not None:
        validate_name(alias, "alias")  # before registering: a bad alias must not leave a new version behind
    reg = _registry(ctx)
    names = [n.strip() for n in feature_names.split(",")] if feature_names else None
    record = {"source_file": str(path.absolute()), **_key_values(lineage, "--lineage")}
    with _err().status(Text(f"loading and converting {path}...")):
        native = load_model_file(path, fmt, allow_pickle)
        mv = reg.register(name, native, feature_names=names, lineage=record)
        if alias is not None:
            reg.set_alias(name, alias, mv.version)
    suffix = f", alias {name}@{alias}" if alias is not None else ""
    _out().print(Text(f"registered {mv.ref} (sha256 {mv.sha256[:12]}){suffix} in {reg.root}"))


@app.command()
def models(ctx: typer.Context) -> None:
    """List registered models with their versions and aliases."""
    reg = _registry(ctx)
    names = reg.models()
    if not names:
        _out().print(Text(f"no models in {reg.root}; add one with `sparkscore register` or `sparkscore quickstart`"))
        return
    table = Table("name", "versions", "latest", "aliases", "created (latest)", title=Text(str(reg.root)))
    for name in names:
        versions = reg.versions(name)
        aliases = ", ".join(f"{a} -> {v}" for a, v in reg.aliases(name).items())
        table.add_row(Text(name), Text(str(len(versions))), Text(str(versions[-1].version)), Text(aliases),
                      Text(versions[-1].created_at))
    _out().print(table)


@app.command()
def alias(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="Model name."),
    alias_name: str = typer.Argument(..., metavar="ALIAS", help="Alias, e.g. prod."),
    version: Optional[int] = typer.Argument(None, metavar="VERSION", help="Version the alias points at (not with --delete)."),
    delete: bool = typer.Option(False, "--delete", help="Remove the alias."),
) -> None:
    """Point NAME@ALIAS at VERSION (atomically), or remove it with --delete."""
    reg = _registry(ctx)
    if delete:
        if version is not None:
            raise typer.BadParameter("--delete takes no VERSION", param_hint="VERSION")
        reg.delete_alias(name, alias_name)
        _out().print(Text(f"deleted alias {name}@{alias_name}"))
        return
    if version is None:
        raise typer.BadParameter("give the VERSION the alias should point at (or --delete)", param_hint="VERSION")
    reg.set_alias(name, alias_name, version)
    _out().print(Text(f"{name}@{alias_name} -> {name}/{version}"))


@app.command()
def describe(ctx: typer.Context, ref: str = typer.Argument(..., metavar="REF", help="name, name/3 or name@alias.")) -> None:
    """Print a version's lineage, aliases and signature as JSON."""
    typer.echo(json.dumps(_registry(ctx).describe(ref), indent=2, sort_keys=True))


_TABLE_OPTION = typer.Option([], "--table", "-t", metavar="NAME=PATH",
                             help="Expose a parquet/csv/json file (or glob) as a view (repeatable).")


@app.command()
def sql(
    ctx: typer.Context,
    query: str = typer.Argument(..., metavar="QUERY", help="SQL with PREDICT()/PREDICT_PROBA()."),
    table: List[str] = _TABLE_OPTION,
    max_rows: int = typer.Option(20, "--max-rows", min=1, help="Rows to print."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write all rows to .parquet or .csv instead."),
) -> None:
    """Run a PREDICT query on DuckDB over files."""
    import sparkscore as ss
    from sparkscore.quickstart import relation_table

    con = _connection(table)
    with _err().status("running query..."):
        relation = ss.duckdb.sql(con, query, registry=_registry(ctx))
        if output is not None:
            _write(relation, output)
    if output is not None:
        _out().print(Text(f"wrote {output}"))
    else:
        _out().print(relation_table(relation, max_rows))


@app.command()
def explain(ctx: typer.Context, query: str = typer.Argument(..., metavar="QUERY", help="SQL with PREDICT()/PREDICT_PROBA()."),
            table: List[str] = _TABLE_OPTION) -> None:
    """Print the rewritten SQL and every optimizer rule, fired or declined, with its reason."""
    import sparkscore as ss

    typer.echo(str(ss.explain(query, engine=_connection(table), registry=_registry(ctx))))


@app.command()
def score(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", metavar="REF", help="Model ref: name, name/3 or name@alias."),
    input_path: str = typer.Option(..., "--input", metavar="PATH|GLOB",
                                   help="Parquet or csv file(s); the spark engine also takes tables and Delta paths."),
    output: str = typer.Option(..., "--output", metavar="DELTA_PATH", help="Delta table to write (created if absent)."),
    mode: str = typer.Option("append", "--mode", help="append, or overwrite (replaces the table in one commit)."),
    job_id: Optional[str] = typer.Option(None, "--job-id", metavar="ID",
                                         help="Idempotency key: re-running it with the same model version adds "
                                              "nothing (default: a fresh random id)."),
    keep_columns: Optional[str] = typer.Option(None, "--keep-columns", metavar="a,b",
                                               help="Input columns copied to the output (default: all)."),
    batch_rows: Optional[int] = typer.Option(None, "--batch-rows", min=1, metavar="N",
                                             help="Most rows per Arrow batch handed to the model (duckdb: "
                                                  "default 1,000,000, DuckDB may yield smaller batches)."),
    engine: str = typer.Option("duckdb", "--engine", help="duckdb (embedded, no JVM) or spark (spark-submit)."),
) -> None:
    """Batch-score files into a Delta table: one atomic, idempotent commit recording the model version."""
    from sparkscore.engines.batch import MODES

    if mode not in MODES:
        raise typer.BadParameter(f"unknown mode {mode!r}; use one of {', '.join(MODES)}", param_hint="--mode")
    if engine not in ENGINES:
        raise typer.BadParameter(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}", param_hint="--engine")
    keep = [c.strip() for c in keep_columns.split(",") if c.strip()] if keep_columns else None
    if engine == "spark":
        command = spark_submit_command(model, input_path, output, mode, job_id, keep_columns, batch_rows,
                                       ctx.obj.registry)
        _err().print(Text(f"running {shlex.join(command)}"))
        rc = subprocess.run(command, env=_checkout_env(), check=False).returncode
        if rc != 0:
            raise SparkscoreError(f"spark-submit exited with status {rc}; its output above says why")
        return
    result = _score_embedded(ctx, model, input_path, output, mode, job_id, keep, batch_rows)
    mv = result.stamp
    if result.already_committed:
        _out().print(Text(f"0 rows added: job {mv.job_id} is already committed to {output} with "
                          f"{mv.model}/{mv.version}"))
        return
    _out().print(Text(f"scored {result.rows:,} rows in {result.seconds:.1f}s "
                      f"({result.rows / max(result.seconds, 1e-9):,.0f} rows/s) with {mv.model}/{mv.version} "
                      f"(sha256 {mv.sha256[:12]}) -> {output} version {result.table_version} "
                      f"[job {mv.job_id}, {mode}]"), soft_wrap=True)


def _score_embedded(ctx: typer.Context, model: str, input_path: str, output: str, mode: str,
                    job_id: Optional[str], keep: Optional[List[str]], batch_rows: Optional[int]):
    """Run the DuckDB batch job under a rich progress bar on stderr."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sparkscore.engines.batch import DEFAULT_BATCH_ROWS, score_files

    columns = (TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"), TimeElapsedColumn())
    with Progress(*columns, console=_err(), transient=True) as progress:
        task = progress.add_task("score", total=None)

        def advance(rows: int, total: Optional[int]) -> None:
            progress.update(task, completed=rows, total=total)

        return score_files(model, input_path, output, registry=_registry(ctx), mode=mode, job_id=job_id,
                           keep_columns=keep, batch_rows=batch_rows or DEFAULT_BATCH_ROWS, progress=advance)


@app.command()
def bench(
    suite: str = typer.Option("all", "--suite", help=f"One of {', '.join(BENCH_SUITES)}, all."),
    quick: bool = typer.Option(False, "--quick", help="The scripts' CI smoke sizes (about a minute each)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the commands instead of running them."),
) -> None:
    """Run the bench/ scripts with this Python and say where their results went."""
    if suite != "all" and suite not in BENCH_SUITES:
        raise typer.BadParameter(f"unknown suite {suite!r}; use one of {', '.join(BENCH_SUITES)}, all",
                                 param_hint="--suite")
    for name in BENCH_SUITES if suite == "all" else (suite,):
        spec = BENCH_SUITES[name]
        command = [sys.executable, str(_checkout_file(f"bench/{spec.script}"))] + (["--quick"] if quick else [])
        results = spec.quick_results if quick else spec.full_results
        if dry_run:
            typer.echo(shlex.join(command))
            continue
        _err().print(Text(f"[{name}] {shlex.join(command)}"))
        rc = subprocess.run(command, cwd=_CHECKOUT, env=_checkout_env(), check=False).returncode
        if rc != 0:
            raise SparkscoreError(f"bench suite {name} ({spec.script}) exited with status {rc}; its output above says why")
        _out().print(Text(f"[{name}] results: {results}"))


@app.command()
def serve(
    ctx: typer.Context,
    registry: Optional[str] = typer.Option(None, "--registry", metavar="PATH|file://URI",
                                           help="Registry to serve (default: the global --registry, "
                                                "$SPARKSCORE_HOME or ~/.sparkscore)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (loopback unless you say otherwise)."),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="TCP port."),
    models: Optional[str] = typer.Option(None, "--models", metavar="a,b", help="Model names to serve (default: all)."),
    max_body_bytes: int = typer.Option(4 * 1024 * 1024, "--max-body-bytes", min=1, help="Larger bodies get 413."),
    max_concurrency: int = typer.Option(256, "--max-concurrency", min=1, help="Requests in flight; more get 503."),
    max_batch_rows: int = typer.Option(1024, "--max-batch-rows", min=1, help="Most rows per coalesced kernel call."),
    max_delay_ms: float = typer.Option(2.0, "--max-delay-ms", min=0.0, help="Largest batching window (AIMD cap)."),
    latency_objective_ms: float = typer.Option(5.0, "--latency-objective-ms", min=0.01,
                                               help="Queue + compute latency the AIMD window keeps under."),
    memory_budget_mb: float = typer.Option(2048.0, "--memory-budget-mb", min=0.0,
                                           help="LRU budget for loaded model versions."),
    poll_s: float = typer.Option(0.5, "--poll-s", min=0.05, max=1.0, help="Registry watcher period (alias moves)."),
    config_file: Optional[Path] = typer.Option(None, "--config", metavar="TOML",
                                               help="Settings file (conf/serve.toml); options given here win."),
) -> None:
    """Serve registry models over HTTP: Open Inference Protocol v2 and MLflow /invocations (uvicorn).

    A bearer token, if wanted, comes from $SPARKSCORE_SERVE_TOKEN (not the command line, which
    other users can read).
    """
    try:
        import uvicorn
    except ImportError:
        raise SparkscoreError("sparkscore serve needs uvicorn: pip install 'sparkscore[serve]'") from None
    from sparkscore.registry import Registry
    from sparkscore.serving import ServeConfig, create_app

    options = {"host": host, "port": port,
               "models": tuple(m.strip() for m in (models or "").split(",") if m.strip()),
               "max_body_bytes": max_body_bytes, "max_concurrency": max_concurrency, "max_batch_rows": max_batch_rows,
               "max_delay_s": max_delay_ms / 1e3, "latency_objective_s": latency_objective_ms / 1e3,
               "memory_budget_bytes": int(memory_budget_mb * 1024 * 1024), "poll_s": poll_s}
    params = {"max_delay_s": "max_delay_ms", "latency_objective_s": "latency_objective_ms",
              "memory_budget_bytes": "memory_budget_mb"}
    if config_file is not None:  # the file, then only the options the user actually typed
        options = {k: v for k, v in options.items()
                   if getattr(ctx.get_parameter_source(params.get(k, k)), "name", "DEFAULT") != "DEFAULT"}
    token = os.environ.get("SPARKSCORE_SERVE_TOKEN") or None
    if token:
        options["token"] = token
    config = ServeConfig.from_file(config_file, **options) if config_file is not None else ServeConfig.build(options)
    host, port = config.host, config.port
    reg = Registry(registry if registry is not None else ctx.obj.registry)
    for ref in config.models:  # fail here in one line, not as a start-up traceback inside uvicorn
        reg.get(ref)
    _err().print(Text(f"serving {', '.join(config.models) or 'every model'} of {reg.root} on http://{host}:{port} "
                      "(OIP v2 under /v2, MLflow at /invocations, metrics at /metrics)"), soft_wrap=True)
    uvicorn.run(create_app(reg, config), host=host, port=port, log_level="warning", access_log=False,
                lifespan="on", timeout_graceful_shutdown=5)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="sparkscore")


# ---------------------------------------------------------------------- helpers
def spark_submit_command(model: str, input_path: str, output: str, mode: str, job_id: Optional[str],
                         keep_columns: Optional[str], batch_rows: Optional[int], registry: Optional[str]) -> list[str]:
    """``spark-submit jobs/score.py ...`` with pyspark's own spark-submit and the checkout's defaults."""
    try:
        import pyspark
    except ImportError:
        raise SparkscoreError("--engine spark needs pyspark; install sparkscore[spark] or use --engine duckdb") from None
    command = [str(Path(pyspark.__file__).parent / "bin" / "spark-submit")]
    defaults = _CHECKOUT / "conf" / "spark-defaults.conf"
    if defaults.is_file():
        command += ["--properties-file", str(defaults)]
    command += [str(_checkout_file("jobs/score.py")), "--model", model, "--input", input_path, "--output", output,
                "--mode", mode]
    for flag, value in (("--job-id", job_id), ("--keep-columns", keep_columns), ("--batch-rows", batch_rows),
                        ("--registry", registry)):
        if value is not None:
            command += [flag, str(value)]
    return command


def _checkout_file(relative: str) -> Path:
    path = _CHECKOUT / relative
    if not path.is_file():
        raise SparkscoreError(f"{relative} is not next to the sparkscore package ({_CHECKOUT}); this command needs "
                              "a source checkout of sparkscore (git clone, pip install -e .)")
    return path


def _checkout_env() -> dict[str, str]:
    """This Python for Spark's driver and workers, and the checkout importable by the subprocess."""
    path = os.pathsep.join(p for p in (str(_CHECKOUT), os.environ.get("PYTHONPATH")) if p)
    return {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable, **os.environ,
            "PYTHONPATH": path}


def load_model_file(path: Path, fmt: str, allow_pickle: bool) -> Any:
    """The model stored at ``path``: an ``ss.Model`` or a native model object for ``convert``."""
    if not path.exists():
        raise SparkscoreError(f"{path}: no such file or directory; pass a model file or saved model directory")
    fmt = _detect_format(path) if fmt == "auto" else fmt
    if fmt == "sparkscore":
        from sparkscore.ir import Model

        return Model.load(path)
    if fmt == "lightgbm":
        from sparkscore.importers import lightgbm

        return lightgbm.load_file(path)
    if fmt == "xgboost":
        from sparkscore.importers import xgboost

        return xgboost.load_file(path)
    if fmt == "pyspark":
        from sparkscore.importers import pyspark_ml

        return pyspark_ml.convert_saved(path)
    if not allow_pickle:
        raise SparkscoreError(f"{path} is a pickle file and unpickling can run arbitrary code; save the model natively "
                              "(LightGBM save_model, XGBoost .json/.ubj, Model.save) or pass --allow-pickle if you trust it")
    print(f"warning: unpickling {path} runs any code it contains; only do this for files you trust", file=sys.stderr)
    if path.suffix == ".joblib":
        import joblib

        return joblib.load(path)
    import pickle

    with path.open("rb") as fh:
        return pickle.load(fh)  # noqa: S301 - explicit --allow-pickle opt-in, warned above


def _detect_format(path: Path) -> str:
    """Guess a model file's format from its layout, suffix and first bytes."""
    if path.is_dir():
        if (path / "model.json").is_file() and (path / "sha256").is_file():
            return "sparkscore"
        if (path / "metadata").is_dir():
            return "pyspark"
        raise SparkscoreError(f"{path}: directory is neither a sparkscore model (model.json) nor a saved pyspark.ml "
                              "model (metadata/); pass --format")
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        return "pickle"
    with path.open("rb") as fh:
        head = fh.read(4096)
    if head.startswith(b"tree\n") or head.startswith(b"tree\r\n") or re.search(rb'"name"\s*:\s*"tree"', head):
        return "lightgbm"
    if b"learner" in head:  # XGBoost JSON and UBJ both open with the "learner" object
        return "xgboost"
    if head[:1] == b"\x80":  # pickle protocol 2+ opcode
        return "pickle"
    raise SparkscoreError(f"{path}: cannot tell the model format; pass --format "
                          f"({', '.join(f for f in FORMATS if f != 'auto')})")


def _connection(tables: Sequence[str]):
    """An in-memory DuckDB connection with each ``NAME=PATH`` exposed as a view over the file."""
    import duckdb

    from sparkscore.engines.batch import read_files

    con = duckdb.connect()
    for name, location in _key_values(tables, "--table").items():
        if not _TABLE_NAME.fullmatch(name):
            raise typer.BadParameter(f"table name {name!r} must be a plain SQL identifier", param_hint="--table")
        read_files(con, location).create_view(name)
    return con


def _write(relation, output: Path) -> None:
    if output.suffix.lower() == ".csv":
        relation.write_csv(str(output))
    elif output.suffix.lower() in (".parquet", ".pq"):
        relation.write_parquet(str(output))
    else:
        raise typer.BadParameter(f"cannot write {output.suffix or 'files without a suffix'}; use .parquet or .csv",
                                 param_hint="--output")


def _key_values(items: Sequence[str], option: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        pairs[key.strip()] = value.strip()
    return pairs


def _one_line(exc: BaseException) -> str:
    """An exception as one bounded line; foreign exceptions keep their type name for context."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
    if not isinstance(exc, SparkscoreError):
        text = f"{type(exc).__name__}: {text}"
    if len(text) > _MAX_ERROR_CHARS:
        text = text[:_MAX_ERROR_CHARS - 3] + "..."
    return text


if __name__ == "__main__":
    main()
