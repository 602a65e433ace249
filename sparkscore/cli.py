"""``sparkscore`` command line: a thin shell over the registry, the engines, batch jobs and benchmarks.

Error contract: a failure prints ONE line ``error: ...`` on stderr and exits 1 (2 for usage
errors; 3 is ``monitor --fail-on-drift`` finding drift, see ``EXIT_DRIFT``); ``--debug`` (accepted anywhere on the line) lets the exception and its traceback through
instead.  No library's exception class name reaches the user: an error sparkscore did not
anticipate prints its message and says to rerun with ``--debug``.  User text (SQL, names, paths)
is never interpreted as rich markup.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence

import typer
from rich.console import Console
from rich.progress import ProgressColumn
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from sparkscore.errors import SparkscoreError

FORMATS = ("auto", "lightgbm", "xgboost", "catboost", "pyspark", "sparkscore", "mlflow", "onnx", "pickle")
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
    "serve": BenchSuite("bench_serve.py", "bench/results/serve_quick.{json,md,png}", "bench/results/serve.{json,md,png}"),
    "routes": BenchSuite("bench_routes.py", "stdout only (quick runs write no files)", "bench/results/routes.{json,md}"),
    "monitor": BenchSuite("bench_monitor.py", "bench/results/monitor_quick.{json,md}", "bench/results/monitor.{json,md}"),
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
        args = _debug_first(sys.argv[1:] if args is None else list(args))
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


def _debug_first(args: List[str]) -> List[str]:
    """``--debug`` moved to the front, wherever it was typed (before a ``--`` that ends the options)."""
    end = args.index("--") if "--" in args else len(args)
    if "--debug" not in args[:end]:
        return args
    return ["--debug", *[a for a in args[:end] if a != "--debug"], *args[end:]]


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


def _print_version(value: bool) -> None:
    if value:
        from sparkscore import __version__

        typer.echo(f"sparkscore {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    ctx: typer.Context,
    registry: Optional[str] = typer.Option(None, "--registry", metavar="PATH|URI",
                                           help="Registry root: a path, file:// or s3:// (gs://, abfs://) URI "
                                                "(default: $SPARKSCORE_HOME or ~/.sparkscore)."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors (anywhere on the line)."),
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the sparkscore version and exit."),
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
               customers: int = typer.Option(20_000, min=100, help="Number of generated customers."),
               save_data: Optional[Path] = typer.Option(None, "--save-data", metavar="DIR",
                                                        help="Also write the demo customers to DIR/customers.parquet.")
               ) -> None:
    """Train demo models on generated data, register them, run example PREDICT queries on DuckDB.

    Running it again adds no versions: the demo models are byte-identical and already registered.
    """
    from sparkscore.quickstart import run_quickstart

    run_quickstart(_out(), _registry(ctx), n_customers=customers, data_dir=save_data)


@app.command()
def register(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="Model name, e.g. churn."),
    source: str = typer.Argument(..., metavar="PATH|URI",
                                 help="Model file or directory, an MLflow model directory, or an MLflow URI "
                                      "(models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH)."),
    alias: Optional[str] = typer.Option(None, "--alias", help="Point this alias at the new version."),
    fmt: str = typer.Option("auto", "--format", help=f"One of {', '.join(FORMATS)}."),
    allow_pickle: bool = typer.Option(False, "--allow-pickle",
                                      help="Allow pickle/joblib files and MLflow's sklearn flavor (unpickling runs "
                                           "code from the file)."),
    feature_names: Optional[str] = typer.Option(None, "--feature-names", help="Comma-separated input names."),
    lineage: List[str] = typer.Option([], "--lineage", metavar="KEY=VALUE",
                                      help="Lineage to record, e.g. code_version=abc123 (repeatable)."),
    training_data: Optional[Path] = typer.Option(None, "--training-data", metavar="PATH",
                                                 help="Parquet/csv training data: fingerprinted, and profiled into "
                                                      "the version (what `monitor` compares batches to)."),
    labels: Optional[str] = typer.Option(None, "--labels", metavar="COLUMN", help="Label column of --training-data."),
) -> None:
    """Register a model file, directory or MLflow model as the next version of NAME."""
    if fmt not in FORMATS:
        raise typer.BadParameter(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}", param_hint="--format")
    from sparkscore.importers.mlflow import URI_SCHEMES, is_mlflow_source
    from sparkscore.registry import validate_name

    if alias is not None:
        validate_name(alias, "alias")  # before registering: a bad alias must not leave a new version behind
    reg = _registry(ctx)
    names = [n.strip() for n in feature_names.split(",")] if feature_names else None
    is_uri = source.startswith(URI_SCHEMES)
    path = Path(source)
    record = {("source_uri" if is_uri else "source_file"): source if is_uri else str(path.absolute()),
              **_key_values(lineage, "--lineage")}
    profiling = {"training_data": training_data, "training_labels": labels,
                 "profile": True if training_data is not None else None}
    with _err().status(Text(f"loading and converting {source}...")):
        if fmt == "mlflow" or (fmt == "auto" and is_mlflow_source(source)):
            if not is_uri and not is_mlflow_source(path):
                raise SparkscoreError(f"{source}: not an MLflow model (no MLmodel file); pass an MLflow model "
                                      "directory or a models:/ or runs:/ URI")
            mv = reg.register(name, source if is_uri else path, feature_names=names, lineage=record,
                              allow_pickle=allow_pickle, **profiling)
        else:
            native = load_model_file(path, fmt, allow_pickle)
            mv = reg.register(name, native, feature_names=names, lineage=record, **profiling)
        if alias is not None:
            reg.set_alias(name, alias, mv.version)
    suffix = f", alias {name}@{alias}" if alias is not None else ""
    if mv.existing:
        _out().print(Text(f"already registered as {mv.ref} (same sha256 {mv.sha256[:12]}): no new version{suffix} "
                          f"in {reg.root}"))
        return
    _out().print(Text(f"registered {mv.ref} (sha256 {mv.sha256[:12]}){suffix} in {reg.root}"))


@app.command()
def ensemble(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="Ensemble name, e.g. churn_ens."),
    members: List[str] = typer.Argument(..., metavar="REF...", help="Member refs (churn/3, churn@challenger, ...); "
                                                                     "aliases are resolved and pinned now."),
    combiner: str = typer.Option("mean", "--combiner", help="mean, weighted, vote, margin_mean or stack."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Comma-separated member weights (weighted, vote, "
                                                                  "margin_mean), e.g. 0.7,0.3."),
    stack_coef: Optional[str] = typer.Option(None, "--stack-coef", help="stack: comma-separated GLM coefficients, "
                                                                        "one per member output."),
    stack_intercept: float = typer.Option(0.0, "--stack-intercept", help="stack: the GLM's intercept."),
    stack_link: str = typer.Option("identity", "--stack-link", help="stack: identity, logistic or exp."),
    classes: Optional[str] = typer.Option(None, "--classes", help="stack with a logistic link: comma-separated "
                                                                  "class labels, when the members do not share them."),
    alias: Optional[str] = typer.Option(None, "--alias", help="Point this alias at the new version."),
) -> None:
    """Register an ensemble of registered models (pinned versions) as the next version of NAME."""
    from sparkscore.ir import LinearModel
    from sparkscore.registry import validate_name

    if alias is not None:
        validate_name(alias, "alias")
    w = _floats(weights, "--weights") if weights is not None else None
    stack = None
    if stack_coef is not None:
        stack = LinearModel(_floats(stack_coef, "--stack-coef"), [stack_intercept], stack_link)
    labels = None
    if classes is not None:
        labels = [int(c) if c.strip().lstrip("-").isdigit() else c.strip() for c in classes.split(",")]
    reg = _registry(ctx)
    mv = reg.register_ensemble(name, members, combiner, w, stack=stack, classes=labels)
    if alias is not None:
        reg.set_alias(name, alias, mv.version)
    pinned = ", ".join(f"{m['ref']}={m['name']}/{m['version']}" for m in reg.lineage(mv.ref)["lineage"]["ensemble"]["members"])
    suffix = f", alias {name}@{alias}" if alias is not None else ""
    state = f"already registered as {mv.ref}" if mv.existing else f"registered {mv.ref}"
    _out().print(Text(f"{state} (sha256 {mv.sha256[:12]}): {combiner} of {pinned}{suffix} in {reg.root}"))


def _floats(text: str, option: str) -> List[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of numbers", param_hint=option) from None


@app.command()
def models(ctx: typer.Context) -> None:
    """List registered models with their versions and aliases."""
    reg = _registry(ctx)
    statuses = reg.check()
    if not statuses:
        _out().print(Text(f"no models in {reg.root}; add one with `sparkscore register` or `sparkscore quickstart`"))
        return
    table = Table("name", "versions", "latest", "aliases", "created (latest)", "damaged", title=Text(str(reg.root)))
    for status in statuses:
        latest = status.versions[-1] if status.versions else None
        aliases = ", ".join(f"{a} -> {v}" for a, v in status.aliases)
        table.add_row(Text(status.name), Text(str(len(status.versions))), Text(str(latest.version) if latest else "-"),
                      Text(aliases), Text(latest.created_at if latest else "-"),
                      Text(", ".join(d.ref for d in status.damaged)))
    _out().print(table)
    _report_damage(d for status in statuses for d in status.damaged)


@app.command()
def versions(ctx: typer.Context, name: str = typer.Argument(..., metavar="NAME", help="Model name.")) -> None:
    """List every version of NAME with its sha256, creation time and aliases (damaged ones marked)."""
    from sparkscore.registry import validate_name

    reg = _registry(ctx)
    status = reg.status(validate_name(name))
    if not status.versions and not status.damaged:
        reg.get(name)  # raises the usual "not in the registry" error
    by_version: dict[int, list[str]] = {}
    for alias_name, version in status.aliases:
        by_version.setdefault(version, []).append(alias_name)
    rows = [(mv.version, Text(mv.sha256[:12]), Text(mv.created_at), Text(", ".join(by_version.get(mv.version, []))),
             Text("ok")) for mv in status.versions]
    for damage in status.damaged:
        number = damage.ref.partition("/")[2]
        if number.isdigit():
            rows.append((int(number), Text("-"), Text("-"), Text(", ".join(by_version.get(int(number), []))),
                         Text(f"DAMAGED: {damage.problem}")))
    table = Table("version", "sha256", "created", "aliases", "status", title=Text(f"{name} in {reg.root}"))
    for number, *cells in sorted(rows, key=lambda row: row[0]):
        table.add_row(Text(str(number)), *cells)
    _out().print(table)
    _report_damage(status.damaged)


@app.command()
def delete(
    ctx: typer.Context,
    ref: str = typer.Argument(..., metavar="NAME[/VERSION]", help="A whole model (every version), or one version."),
    force: bool = typer.Option(False, "--force", help="Also remove aliases that point at what is deleted "
                                                        "(and, for a whole model, its routes)."),
) -> None:
    """Delete one version or a whole model; refused while an alias (or, for a whole model, a route)
    points at it unless --force.

    Version numbers are never reused: the next registration gets the next number after the highest
    ever minted, so a ref like churn/3 pinned in a job can never mean another model later.
    """
    from sparkscore.registry import parse_ref

    parsed = parse_ref(ref)
    if parsed.alias is not None:
        raise typer.BadParameter(f"{ref!r} is an alias; delete a version (NAME/VERSION) or a model (NAME), or remove "
                                 f"the alias with `sparkscore alias {parsed.name} {parsed.alias} --delete`",
                                 param_hint="NAME[/VERSION]")
    reg = _registry(ctx)
    deleted = reg.delete(parsed.name, parsed.version, force=force)
    what = (f"{deleted.name}/{deleted.versions[0]}" if parsed.version is not None
            else f"model {deleted.name} (versions {', '.join(map(str, deleted.versions))})")
    aliases = f" and alias {', '.join(deleted.aliases)}" if deleted.aliases else ""
    routes = f" and route {', '.join(deleted.routes)}" if deleted.routes else ""
    _out().print(Text(f"deleted {what}{aliases}{routes} from {reg.root}; version numbers are not reused"))


def _report_damage(damaged) -> None:
    """One stderr line per damaged entry: what is wrong, where, and the command that repairs it."""
    for damage in damaged:
        print(f"warning: damaged {damage}", file=sys.stderr)


@app.command()
def alias(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="Model name."),
    alias_name: Optional[str] = typer.Argument(None, metavar="ALIAS",
                                               help="Alias, e.g. prod (with --history: only its moves)."),
    version: Optional[int] = typer.Argument(None, metavar="VERSION", help="Version the alias points at (not with --delete)."),
    delete: bool = typer.Option(False, "--delete", help="Remove the alias."),
    reason: Optional[str] = typer.Option(None, "--reason", help="Why the alias moves (kept in its history)."),
    history: bool = typer.Option(False, "--history", help="List every recorded alias move of NAME instead."),
    as_json: bool = typer.Option(False, "--json", help="With --history: one JSON document on stdout."),
) -> None:
    """Point NAME@ALIAS at VERSION (atomically), remove it with --delete, or list moves with --history."""
    reg = _registry(ctx)
    if history:
        if version is not None or delete or reason is not None:
            raise typer.BadParameter("--history takes only NAME and an optional ALIAS", param_hint="--history")
        _print_alias_history(reg.alias_history(name, alias_name), as_json)
        return
    if as_json:
        raise typer.BadParameter("--json goes with --history", param_hint="--json")
    if alias_name is None:
        raise typer.BadParameter("give the ALIAS to move (or --history)", param_hint="ALIAS")
    if delete:
        if version is not None:
            raise typer.BadParameter("--delete takes no VERSION", param_hint="VERSION")
        reg.delete_alias(name, alias_name, reason=reason)
        _out().print(Text(f"deleted alias {name}@{alias_name}"))
        return
    if version is None:
        raise typer.BadParameter("give the VERSION the alias should point at (or --delete)", param_hint="VERSION")
    reg.set_alias(name, alias_name, version, reason=reason)
    _out().print(Text(f"{name}@{alias_name} -> {name}/{version}"))


route_app = typer.Typer(cls=_Group, no_args_is_help=True, help="Traffic splits of one model over its arms (NAME@ROUTE).")
app.add_typer(route_app, name="route")


@route_app.command("set")
def route_set(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="Model name."),
    route: str = typer.Argument(..., metavar="ROUTE", help="Route name: scored as 'NAME@ROUTE'."),
    arm: List[str] = typer.Option(..., "--arm", metavar="ALIAS|VERSION=WEIGHT",
                                  help="An arm and its weight (integer percent; all sum to 100, or basis points to 10000)."),
    key: Optional[str] = typer.Option(None, "--key", metavar="COLUMN",
                                      help="Column whose value picks the arm (required for a new route)."),
    shadow: List[str] = typer.Option([], "--shadow", metavar="ALIAS|VERSION", help="Arm scored but never returned."),
    salt: Optional[str] = typer.Option(None, "--salt", help="Hash salt (default NAME@ROUTE; kept by later versions)."),
    reason: Optional[str] = typer.Option(None, "--reason", help="Why (kept in the route version)."),
) -> None:
    """Write the next version of route NAME@ROUTE."""
    weights: dict[str, int] = {}
    for label, text in _key_values(arm, "--arm").items():
        try:
            weights[label] = int(text)
        except ValueError:
            raise typer.BadParameter(f"weight of arm {label!r} must be an integer, got {text!r}", param_hint="--arm") from None
    found = _registry(ctx).set_route(name, route, weights, key=key, shadow=shadow, salt=salt, reason=reason)
    _print_route(found, as_json=False)


@route_app.command("show")
def route_show(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="Model name."),
    route: str = typer.Argument(..., metavar="ROUTE", help="Route name."),
    version: Optional[int] = typer.Option(None, "--version", help="Route version (default: the latest)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Show a route version: key, salt, arms with weights and bucket ranges, and what each arm resolves to now."""
    _print_route(_registry(ctx).route(name, route, version), as_json, _registry(ctx))


@route_app.command("history")
def route_history(
    ctx: typer.Context,
    name: str = typer.Argument(..., metavar="NAME", help="Model name."),
    route: str = typer.Argument(..., metavar="ROUTE", help="Route name."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Every version of route NAME@ROUTE, oldest first."""
    found = _registry(ctx).route_history(name, route)
    if as_json:
        typer.echo(json.dumps([_route_json(r) for r in found], indent=2, sort_keys=True))
        return
    table = Table("version", "time (UTC)", "key", "arms", "shadow", "reason", title=Text(f"history of {name}@{route}"))
    for r in found:
        table.add_row(str(r.version), Text(r.created_at), Text(r.key),
                      Text(", ".join(f"{a.label}={a.percent:g}%" for a in r.arms if a.buckets)),
                      Text(", ".join(r.shadow)), Text(r.reason or ""))
    _out().print(table)


@route_app.command("update")
def route_update(
    ctx: typer.Context,
    ref: str = typer.Argument(..., metavar="NAME@ROUTE", help="The route to update."),
    log: str = typer.Option(..., "--log", metavar="TABLE", help="Prediction log (Delta table path)."),
    feedback: str = typer.Option(..., "--feedback", metavar="TABLE", help="Feedback table (request_id, ts, label)."),
    policy: Optional[str] = typer.Option(None, "--policy", help="exp3 | exp4 | thompson (default: the route's "
                                         "current policy, else exp3; a new one restarts the state)."),
    eta: Optional[float] = typer.Option(None, "--eta", help="Learning rate per labelled row (exp3/exp4; default 0.01)."),
    floor: Optional[int] = typer.Option(None, "--floor", help="Minimum basis points per arm (default 500 = 5%)."),
    decay: Optional[float] = typer.Option(None, "--decay", help="Forgetting factor in (0, 1] (default 1)."),
    loss: Optional[str] = typer.Option(None, "--loss", help="auto | zero_one | abs | squared (default auto)."),
    scale: Optional[float] = typer.Option(None, "--scale", help="Regression loss scale (default: the label range)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Thompson sampling seed (default 0)."),
    full: bool = typer.Option(False, "--full", help="Count every label, not only those newer than the last update."),
    engine: str = typer.Option("duckdb", "--engine",
                               help="duckdb (embedded), or spark: the join and per-arm aggregate run as one Spark SQL "
                                    "query (the active or a new SparkSession: spark-defaults / PYSPARK_* apply)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Learn the route's weights from feedback (bandit) and write them as its next version."""
    from sparkscore.monitor.bandit import update_from_log

    if engine not in ENGINES:
        raise typer.BadParameter(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}", param_hint="--engine")
    params = {k: v for k, v in dict(eta=eta, floor=floor, decay=decay, loss=loss, scale=scale, seed=seed).items()
              if v is not None}
    if engine == "spark":
        up = _route_update_spark(_registry(ctx), ref, log, feedback, policy, full, params)
    else:
        up = update_from_log(_registry(ctx), ref, log, feedback, policy=policy, full=full, **params)
    r = up.route
    doc = {"route": r.ref, "version": r.version, "policy": r.policy["params"]["policy"], "weights": up.weights,
           "stats": {a: {"n": s.n, "loss_sum": s.loss_sum} for a, s in up.stats.items()},
           "window": r.policy["window"]}
    if as_json:
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    _out().print(Text(f"{r.ref} version {r.version} ({doc['policy']}): " + ", ".join(
        f"{a}={w / 100:g}% (n={up.stats[a].n if a in up.stats else 0}, "
        f"mean loss {up.stats[a].loss_sum / up.stats[a].n if a in up.stats else float('nan'):.4g})"
        for a, w in up.weights.items())))


def _route_update_spark(reg, ref: str, log: str, feedback: str, policy: Optional[str], full: bool, params: dict):
    """The batch bandit update with Spark computing the window (the session this process has, or a new one)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise SparkscoreError("--engine spark needs pyspark; install sparkscore[spark] or use --engine duckdb") from None
    from sparkscore.engines.feedback import update_from_log as update_on_spark

    from pyspark import SparkContext

    running = SparkContext._active_spark_context is not None  # a session this process already has: keep it
    spark = SparkSession.builder.appName(f"sparkscore route update {ref}").getOrCreate()
    try:
        return update_on_spark(spark, reg, ref, log, feedback, policy=policy, full=full, **params)
    finally:
        if not running:
            spark.stop()


def _route_json(r) -> dict:
    return {"model": r.name, "route": r.route, "version": r.version, "key": r.key, "salt": r.salt,
            "created_at": r.created_at, "sha256": r.sha256, "reason": r.reason, "shadow": list(r.shadow),
            "arms": [{"arm": a.label, "percent": a.percent, "buckets": a.buckets,
                      "ranges": [list(x) for x in a.ranges]} for a in r.arms],
            "policy": r.policy}  # the bandit's record (sparkscore/monitor/bandit.py); None for fixed weights


def _print_route(r, as_json: bool, reg=None) -> None:
    from sparkscore.registry.routes import arm_ref

    doc = _route_json(r)
    doc["shadow"] = [{"arm": s} for s in r.shadow]
    if reg is not None:  # where each arm points now (a query pins this when it resolves the route)
        for a in [*doc["arms"], *doc["shadow"]]:
            try:
                a["resolves_to"] = reg.get(arm_ref(r.name, a["arm"])).ref
            except SparkscoreError as exc:
                a["resolves_to"] = f"unresolvable: {_one_line(exc)}"
    if as_json:
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    _out().print(Text(f"{r.name}@{r.route} version {r.version}: key {r.key}, salt {r.salt!r}, sha256 {r.sha256[:12]}"))
    table = Table("arm", "weight", "buckets", "resolves to")
    for a in doc["arms"]:
        ranges = " ".join(f"[{s},{e})" for s, e in a["ranges"]) or "-"
        table.add_row(Text(a["arm"]), f"{a['percent']:g}%", Text(ranges), Text(a.get("resolves_to", "")))
    for a in doc["shadow"]:
        table.add_row(Text(a["arm"]), "shadow", "-", Text(a.get("resolves_to", "")))
    _out().print(table)


def _print_alias_history(found, as_json: bool) -> None:
    """Alias moves as a table (or JSON); damaged log lines as warnings on stderr, never fatal."""
    _report_damage(found.damaged)
    if as_json:
        typer.echo(json.dumps({"name": found.name, "moves": [m.to_json() for m in found.moves],
                               "damaged": [str(d) for d in found.damaged]}, indent=2, sort_keys=True))
        return
    table = Table("time (UTC)", "alias", "from", "to", "user", "host", "reason", title=Text(f"alias history of {found.name}"))
    for m in found.moves:
        table.add_row(Text(m.ts), Text(m.alias), Text("-" if m.from_version is None else str(m.from_version)),
                      Text("(removed)" if m.to_version is None else str(m.to_version)), Text(m.user), Text(m.host),
                      Text(m.reason or ""))
    _out().print(table)


@app.command()
def describe(ctx: typer.Context, ref: str = typer.Argument(..., metavar="REF", help="name, name/3 or name@alias.")) -> None:
    """Print a version's lineage, aliases and signature as JSON."""
    typer.echo(json.dumps(_registry(ctx).describe(ref), indent=2, sort_keys=True))


@app.command()
def lineage(
    ctx: typer.Context,
    ref: str = typer.Argument(..., metavar="REF", help="name, name/3, name@alias or name@alias#TIME."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
    outputs: bool = typer.Option(False, "--outputs",
                                 help="Instead: the Delta tables and table versions batch jobs wrote with it."),
    table: List[str] = typer.Option([], "--table", "-t", metavar="PATH",
                                    help="With --outputs: a Delta table, or a folder of tables, to search (repeatable)."),
    conf: Optional[Path] = typer.Option(None, "--conf", metavar="FILE", envvar="SPARKSCORE_CONF",
                                        help="With --outputs: properties file whose spark.sparkscore.lineage.outputs "
                                             "lists tables/folders to search (default $SPARKSCORE_CONF)."),
) -> None:
    """Which code, data, configuration and environment made a version (--outputs: what it wrote)."""
    if outputs:
        _print_outputs(ctx, ref, table, conf, as_json)
        return
    if table:
        raise typer.BadParameter("--table only applies with --outputs; add --outputs", param_hint="--table")
    doc = _registry(ctx).lineage(ref)
    if as_json:
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    out = _out()
    out.print(Text(f"{doc['ref']}  sha256 {doc['sha256'][:12]}…  created {doc['created_at']}  task {doc['task']}"))
    from sparkscore.registry.lineage import LINEAGE_SECTIONS

    for section in LINEAGE_SECTIONS:
        value = doc.get(section)
        if value in (None, {}, ""):
            out.print(Text(f"{section}: -"))
            continue
        out.print(Text(f"{section}:"))
        for key, leaf in _leaves(value):
            out.print(Text(f"  {key}: {_shown_leaf(leaf)}"))


def _print_outputs(ctx: typer.Context, ref: str, tables: Sequence[str], conf: Optional[Path], as_json: bool) -> None:
    from sparkscore.engines.outputs import model_outputs

    found = model_outputs(ref, tables, registry=_registry(ctx), conf=conf)
    if as_json:
        typer.echo(json.dumps(found.to_json(), indent=2, sort_keys=True))
        return
    out = _out()
    out.print(Text(f"{found.ref} (sha256 {found.sha256[:12]}…): {len(found.commits)} commit(s) in "
                   f"{len({c.table for c in found.commits})} of {len(found.searched)} table(s) searched"))
    if found.commits:
        grid = Table(box=None, pad_edge=False)
        routed = any(c.route for c in found.commits)
        for column in ("table", "version", "job id", "rows", "time", "writer", *(("as arm of",) if routed else ())):
            grid.add_column(column, justify="right" if column in ("version", "rows") else "left",
                            overflow="fold", no_wrap=column in ("version", "rows"))  # paths shown whole
        for c in found.commits:
            grid.add_row(c.table, str(c.table_version), c.job_id, "?" if c.rows is None else f"{c.rows:,}", c.time,
                         c.writer, *((c.route or "",) if routed else ()))
        out.print(grid)
    for location, reason in found.unreadable:
        _err().print(Text(f"warning: could not search {location}: {reason}"))


@app.command()
def diff(
    ctx: typer.Context,
    a: str = typer.Argument(..., metavar="A", help="First ref (name/3, name@alias, ...)."),
    b: str = typer.Argument(..., metavar="B", help="Second ref."),
    data: Optional[Path] = typer.Option(None, "--data", help="Parquet or CSV file: also compare predictions on it."),
    as_json: bool = typer.Option(False, "--json", help="One JSON document on stdout."),
) -> None:
    """Compare two versions: parameters, signature, data fingerprints, environment (and predictions with --data)."""
    frame = None
    if data is not None:
        frame = _read_frame(data)
    doc = _registry(ctx).diff(a, b, data=frame)
    if as_json:
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    out = _out()
    out.print(Text(f"{doc['a']} vs {doc['b']}" + ("  (same model bytes)" if doc["same_model"] else "")))
    for group in ("parameters", "signature", "data", "environment", "code", "other"):
        changed = doc[group]
        out.print(Text(f"{group}: {len(changed)} changed" if changed else f"{group}: same"))
        for key, (left, right) in changed.items():
            out.print(Text(f"  {key}: {_shown_leaf(left)} -> {_shown_leaf(right)}"))
    if "predictions" in doc:
        p = doc["predictions"]
        line = f"predictions on {p['rows']} rows of {data}: compared {p['compared']}"
        if "changed_labels" in p:
            line += f"; labels changed {p['changed_labels']} ({100 * p['changed_label_share']:.2f}%)"
        if "max_abs_diff" in p:
            line += (f"; max abs diff {p['max_abs_diff']:.6g}, mean abs diff {p['mean_abs_diff']:.6g}"
                     f"{'; NaN on one side ' + str(p['nan_on_one_side']) if p['nan_on_one_side'] else ''}")
        out.print(Text(line))


def _read_frame(path: Path):
    """A parquet or CSV file as a pandas DataFrame (diff --data)."""
    if not path.is_file():
        raise typer.BadParameter(f"{path} is not a file", param_hint="--data")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pandas()
    if suffix == ".csv":
        import pandas as pd

        return pd.read_csv(path)
    raise typer.BadParameter(f"{path}: use a .parquet or .csv file", param_hint="--data")


def _leaves(value, prefix: str = ""):
    """(dotted key, leaf) pairs of a JSON value, for the plain-text lineage view."""
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            yield from _leaves(value[key], f"{prefix}{key}.")
    else:
        yield prefix.rstrip(".") or "value", value


def _shown_leaf(value) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 200 else text[:197] + "..."


_TABLE_OPTION = typer.Option([], "--table", "-t", metavar="NAME=PATH",
                             help="Expose a parquet/csv/json file (or glob) as a view (repeatable).")


@app.command()
def sql(
    ctx: typer.Context,
    query: str = typer.Argument(..., metavar="QUERY", help="SQL with PREDICT()/PREDICT_PROBA()."),
    table: List[str] = _TABLE_OPTION,
    max_rows: int = typer.Option(20, "--max-rows", min=1, help="Rows to print."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write all rows to .parquet or .csv instead."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --output if it exists."),
) -> None:
    """Run a PREDICT query on DuckDB over files (progress on stderr while it runs)."""
    import sparkscore as ss
    from sparkscore.quickstart import relation_table

    if output is not None:
        _check_output(output, overwrite)
    con = _connection(table)
    started = time.perf_counter()
    relation = ss.duckdb.sql(con, query, registry=_registry(ctx), namespace={})
    if output is not None:
        run_with_progress(con, lambda: _write(relation, output), _progress_reporter("running query"))
        _out().print(Text(f"wrote {output} in {time.perf_counter() - started:.1f}s"))
    else:
        rendered = run_with_progress(con, lambda: relation_table(relation, max_rows), _progress_reporter("running query"))
        _out().print(rendered)


@app.command()
def explain(ctx: typer.Context, query: str = typer.Argument(..., metavar="QUERY", help="SQL with PREDICT()/PREDICT_PROBA()."),
            table: List[str] = _TABLE_OPTION) -> None:
    """Print the rewritten SQL and every optimizer rule, fired or declined, with its reason."""
    from sparkscore.engines import duckdb as duckdb_engine

    typer.echo(str(duckdb_engine.explain(query, _connection(table), _registry(ctx), namespace={})))


@app.command()
def score(
    ctx: typer.Context,
    model: str = typer.Option(..., "--model", metavar="REF",
                              help="Model ref: name, name/3 or name@alias; or a route name@route (each row by its arm)."),
    input_path: str = typer.Option(..., "--input", metavar="PATH|GLOB",
                                   help="Parquet or csv file(s); the spark engine also takes tables and Delta paths."),
    output: str = typer.Option(..., "--output", metavar="DELTA_PATH", help="Delta table to write (created if absent)."),
    mode: str = typer.Option("append", "--mode", help="append, or overwrite (replaces the table in one commit)."),
    job_id: Optional[str] = typer.Option(None, "--job-id", metavar="ID",
                                         help="Idempotency key: re-running it with the same model version adds "
                                              "nothing (default: derived from the input files' paths, sizes and "
                                              "mtimes, the model version, the output and the options, so re-running "
                                              "the same command adds nothing)."),
    keep_columns: Optional[str] = typer.Option(None, "--keep-columns", metavar="a,b",
                                               help="Input columns copied to the output (default: all)."),
    batch_rows: Optional[int] = typer.Option(None, "--batch-rows", min=1, metavar="N",
                                             help="Most rows per Arrow batch handed to the model (duckdb: "
                                                  "default 1,000,000, DuckDB may yield smaller batches)."),
    engine: str = typer.Option("duckdb", "--engine", help="duckdb (embedded, no JVM) or spark (spark-submit)."),
    schema: str = typer.Option("strict", "--schema",
                               help="strict: columns that differ from the table's fail before writing; merge: "
                                    "evolve the table (Delta schema evolution: add columns, missing ones are NULL)."),
    model_columns: Optional[bool] = typer.Option(None, "--model-columns/--no-model-columns",
                                                 help="Store the model name and version per row (columns model, "
                                                      "model_version; default: on for new tables, as the table has "
                                                      "it for appends)."),
    log: Optional[str] = typer.Option(None, "--log", metavar="DELTA_PATH",
                                      help="Also append a sampled part of the inputs and outputs to this prediction "
                                           "log (Delta), all-or-nothing with the job."),
    log_fraction: float = typer.Option(0.01, "--log-fraction", metavar="F",
                                       help="Share of rows logged, sampled by a hash of (job id, request id)."),
    log_max_rows: int = typer.Option(100_000, "--log-max-rows", metavar="N", help="Most rows logged per job."),
    log_id: Optional[str] = typer.Option(None, "--log-id", metavar="COLUMN",
                                         help="Input column whose value is each row's request_id (the feedback "
                                              "table's key; default: <job id>:<row ordinal>)."),
    with_arm: bool = typer.Option(False, "--with-arm",
                                  help="A route: also write the columns arm, arm_version and route_version (which "
                                       "arm scored each row). With --log, shadow arms are logged too."),
) -> None:
    """Batch-score files into a Delta table: one atomic, idempotent commit recording the model version.

    A route ref (name@route) scores each row by the arm its key picks, as PREDICT does; the commit
    is stamped with the route version and its arms' versions.  Its shadow arms are scored only with
    --log: on the logged rows, logged with shadow = true, never written to the output."""
    from sparkscore.engines.batch import MODES
    from sparkscore.engines.delta import SCHEMA_MODES

    if mode not in MODES:
        raise typer.BadParameter(f"unknown mode {mode!r}; use one of {', '.join(MODES)}", param_hint="--mode")
    if engine not in ENGINES:
        raise typer.BadParameter(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}", param_hint="--engine")
    if schema not in SCHEMA_MODES:
        raise typer.BadParameter(f"unknown schema mode {schema!r}; use one of {', '.join(SCHEMA_MODES)}",
                                 param_hint="--schema")
    keep = [c.strip() for c in keep_columns.split(",") if c.strip()] if keep_columns else None
    log_spec = None
    if log is not None:
        from sparkscore.monitor.predlog import LogSpec

        log_spec = LogSpec(log, log_fraction, log_max_rows, log_id)  # checks the numbers before any work
    if engine == "spark":
        command = spark_submit_command(model, input_path, output, mode, job_id, keep_columns, batch_rows,
                                       ctx.obj.registry, schema, model_columns, log_spec, with_arm)
        _err().print(Text(f"running {shlex.join(command)}"))
        rc = subprocess.run(command, env=_checkout_env(), check=False).returncode
        if rc != 0:
            raise SparkscoreError(f"spark-submit exited with status {rc}; its output above says why")
        return
    try:
        result = _score_embedded(ctx, model, input_path, output, mode, job_id, keep, batch_rows, schema,
                                 model_columns, log_spec, with_arm)
    except KeyboardInterrupt:
        from sparkscore.engines.delta import table_state

        print(f"error: interrupted: staging files removed, {table_state(output)}", file=sys.stderr)
        raise typer.Exit(130) from None
    mv = result.stamp
    pinned = f"route {mv.model} v{mv.version}" if "@" in mv.model else f"{mv.model}/{mv.version}"
    logged = (f"; {result.log_rows:,} rows logged to {log}" + (f" version {result.log_version}"
              if result.log_version is not None else "")) if result.log_rows is not None else ""
    if result.already_committed:
        _out().print(Text(f"0 rows added: job {mv.job_id} is already committed to {output} with "
                          f"{pinned}{logged}"), soft_wrap=True)
        return
    _out().print(Text(f"scored {result.rows:,} rows in {result.seconds:.1f}s "
                      f"({result.rows / max(result.seconds, 1e-9):,.0f} rows/s) with {pinned} "
                      f"(sha256 {mv.sha256[:12]}) -> {output} version {result.table_version} "
                      f"[job {mv.job_id}, {mode}]{logged}"), soft_wrap=True)


class _RateColumn(ProgressColumn):
    """Rows per second of a progress task (rich's own speed column counts bytes)."""

    def render(self, task) -> Text:
        return Text(f"{task.speed:,.0f} rows/s" if task.speed else "- rows/s")


def _score_embedded(ctx: typer.Context, model: str, input_path: str, output: str, mode: str,
                    job_id: Optional[str], keep: Optional[List[str]], batch_rows: Optional[int], schema: str,
                    model_columns: Optional[bool], log=None, with_arm: bool = False):
    """Run the DuckDB batch job under a rich progress bar on stderr (what it does, rows, rate, ETA)."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    from sparkscore.engines.batch import DEFAULT_BATCH_ROWS, score_files

    console = _err()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
               _RateColumn(), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        task = progress.add_task("starting", total=None)

        def advance(rows: int, total: Optional[int]) -> None:
            progress.update(task, completed=rows, total=total)
            progress.refresh()  # batches are large: show each one now, not at the next timer tick

        def status(message: str) -> None:
            if message.startswith(("job ", "removed ")):
                console.print(Text(message), soft_wrap=True)  # stays after the bar: the id to re-run with
            else:
                progress.update(task, description=message)
                progress.refresh()
                if not console.is_terminal:  # no live bar in logs/pipes: one line per step instead
                    console.print(Text(f"{message}..."), soft_wrap=True)

        return score_files(model, input_path, output, registry=_registry(ctx), mode=mode, job_id=job_id,
                           keep_columns=keep, batch_rows=batch_rows or DEFAULT_BATCH_ROWS, progress=advance,
                           schema_mode=schema, model_columns=model_columns, status=status, log=log,
                           with_arm=with_arm)


@app.command()
def vacuum(
    table: str = typer.Argument(..., metavar="TABLE", help="Local Delta table path."),
    retention_hours: Optional[int] = typer.Option(
        None, "--retention-hours", min=0, metavar="H",
        help="Also run Delta's VACUUM: delete files no version newer than H hours references (Delta's default 168)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed, remove nothing."),
) -> None:
    """Remove staging files of killed score runs (Delta's own VACUUM never sees them); optionally Delta VACUUM."""
    from sparkscore.engines import delta

    if not delta.is_delta_path(table):
        raise SparkscoreError(f"{table} is not a local Delta table (no _delta_log folder); pass the --output path of "
                              "a `sparkscore score` run")
    if dry_run:
        found = delta.remove_leftovers(table, include_unlocked=True, dry_run=True)
        _out().print(Text(f"would remove {len(found)} leftover staging folder(s)" +
                          "".join(f"\n  {p}" for p in found)))
        return
    removed = delta.remove_leftovers(table, include_unlocked=True)
    _out().print(Text(f"removed {len(removed)} leftover staging folder(s) from {table}" +
                      "".join(f"\n  {p}" for p in removed)))
    if retention_hours is not None:
        from deltalake import DeltaTable

        files = DeltaTable(table).vacuum(retention_hours=retention_hours, dry_run=False,
                                         enforce_retention_duration=False)
        _out().print(Text(f"Delta VACUUM removed {len(files)} unreferenced file(s) older than {retention_hours} h"))


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
    registry: Optional[str] = typer.Option(None, "--registry", metavar="PATH|URI",
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
    log: Optional[str] = typer.Option(None, "--log", metavar="DELTA_PATH",
                                      help="Log sampled requests (inputs, outputs, version) to this Delta prediction "
                                           "log, off the request path (a full queue drops and counts)."),
    log_sample: float = typer.Option(0.01, "--log-sample", min=0.0, max=1.0, metavar="F",
                                     help="Share of requests logged with --log."),
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
               "memory_budget_bytes": int(memory_budget_mb * 1024 * 1024), "poll_s": poll_s,
               "log_table": log, "log_sample": log_sample}
    params = {"max_delay_s": "max_delay_ms", "latency_objective_s": "latency_objective_ms",
              "memory_budget_bytes": "memory_budget_mb", "log_table": "log"}
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


@app.command()
def ab(
    ctx: typer.Context,
    log: str = typer.Argument(..., metavar="LOG", help="Prediction log (Delta path) with an arm column."),
    feedback: str = typer.Option(..., "--feedback", metavar="DELTA_PATH",
                                 help="Feedback table (request_id, ts, label)."),
    route: Optional[str] = typer.Option(None, "--route", metavar="NAME@ALIAS",
                                        help="Take the expected arm weights from this registry route."),
    expected: Optional[str] = typer.Option(None, "--expected", metavar="a=90,b=10",
                                           help="Expected arm weights (the first arm is the control)."),
    metric: str = typer.Option("accuracy", "--metric", help="accuracy or logloss (classifiers), rmse or mae."),
    control: Optional[str] = typer.Option(None, "--control", metavar="ARM", help="Control arm (default: first "
                                          "expected arm, else the largest)."),
    confidence: float = typer.Option(0.95, "--confidence", metavar="C", help="Confidence level of the intervals."),
    start: Optional[str] = typer.Option(None, "--start", metavar="ISO", help="Only rows with ts >= this (UTC)."),
    end: Optional[str] = typer.Option(None, "--end", metavar="ISO", help="Only rows with ts < this (UTC)."),
    as_json: bool = typer.Option(False, "--json", help="Print the readout as JSON."),
    fail_on_srm: bool = typer.Option(False, "--fail-on-srm",
                                     help="Exit with status 3 on a sample-ratio mismatch (chi-square p < 0.001)."),
) -> None:
    """A/B readout over a prediction log + labels: per arm counts, metric with CI, lift vs control, SRM check."""
    from sparkscore.monitor import abtest

    if route is not None and expected is not None:
        raise typer.BadParameter("give --route or --expected, not both", param_hint="--route")
    weights = abtest.parse_expected(expected) if expected is not None else None
    reg = _registry(ctx)
    if route is not None:
        get_route = getattr(reg, "get_route", None)
        if get_route is None:
            raise SparkscoreError(f"--route {route}: this registry has no routes yet; pass the weights with "
                                  "--expected prod=90,challenger=10")
        weights = {str(k): float(v) for k, v in dict(get_route(route).arms).items()}
    report = abtest.readout(log, feedback, metric=metric, expected=weights, control=control, confidence=confidence,
                            start=start, end=end, registry=reg)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        _out().print(_ab_table(report))
    if report.srm is not None and report.srm.alert:
        extra = f"; arms not in the weights: {', '.join(report.srm.unexpected_arms)}" if report.srm.unexpected_arms else ""
        print(f"warning: sample-ratio mismatch: chi-square {report.srm.chi2:.2f} with {report.srm.dof} dof, "
              f"p = {report.srm.p_value:.2e} < {abtest.SRM_ALPHA}{extra}; the split is not the expected one, do not "
              "trust the lift", file=sys.stderr)
        if fail_on_srm:
            raise typer.Exit(abtest.EXIT_SRM)


def _ab_table(report):
    from rich.table import Table

    def num(v, fmt="{:.4f}"):
        return "-" if v is None else fmt.format(v)
    pct = int(round(report.confidence * 100))
    table = Table(title=f"A/B readout: {report.metric} (control {report.control}; {report.method})")
    for col in ("arm", "versions", "rows", "share (exp)", "labelled", report.metric, f"{pct}% CI", "lift",
                f"lift {pct}% CI", "p", "relative"):
        table.add_column(col)
    for a in report.arms:
        table.add_row(a.arm, ",".join(a.versions), f"{a.rows:,}",
                      f"{a.observed_share:.3f} ({num(a.expected_share, '{:.3f}')})", f"{a.labelled:,}", num(a.value),
                      f"[{num(a.ci_low)}, {num(a.ci_high)}]", num(a.lift, "{:+.4f}"),
                      "-" if a.lift is None else f"[{num(a.lift_ci_low, '{:+.4f}')}, {num(a.lift_ci_high, '{:+.4f}')}]",
                      num(a.lift_p_value, "{:.3g}"), num(a.relative_lift, "{:+.1%}"))
    if report.srm is not None:
        s = report.srm
        table.caption = (f"SRM chi-square {s.chi2:.2f} ({s.dof} dof), p = {s.p_value:.3g}: "
                         f"{'MISMATCH' if s.alert else 'ok'}" + "".join(f"; {n}" for n in report.notes))
    return table
#: ``sparkscore monitor --fail-on-drift`` exit status when a metric crosses its threshold (distinct from
#: 1 = error, 2 = usage error, 130 = interrupted), so schedulers can tell drift from failure
EXIT_DRIFT = 3


@app.command()
def profile(
    ctx: typer.Context,
    ref: str = typer.Argument(..., metavar="REF", help="name, name/3 or name@alias."),
    data: str = typer.Option(..., "--data", metavar="PATH", help="Parquet/csv file or glob to profile."),
    bins: int = typer.Option(10, "--bins", min=1, help="Histogram bins (edges at the data's quantiles)."),
    topk: int = typer.Option(20, "--topk", min=1, help="Categories kept per categorical column."),
    labels: Optional[str] = typer.Option(None, "--labels", metavar="COLUMN", help="Label column to profile too."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="FILE.json",
                                          help="Write the profile (JSON, the format `monitor --reference` reads)."),
    as_json: bool = typer.Option(False, "--json", help="Print the profile as JSON instead of a table."),
) -> None:
    """Profile data against a model version: every input, the prediction and the label.

    The profile stored WITH a version (what `monitor` compares to by default) is computed at
    registration: `sparkscore register NAME PATH --training-data DATA [--labels COL]`.
    """
    import sparkscore as ss

    found = ss.monitor.profile(ref, data, registry=_registry(ctx), bins=bins, labels=labels, topk=topk)
    if output is not None:
        found.save(output if output.suffix == ".json" else output)
        _err().print(Text(f"wrote {output}"))
    if as_json:
        typer.echo(json.dumps(found.to_json(), indent=2, sort_keys=True))
        return
    table = Table("column", "role", "kind", "rows", "nulls", "NaN", "±inf", "min", "max", "mean", "std", "top",
                  title=Text(f"profile of {data} against {ref} ({found.rows:,} rows)"))
    for col in found.columns:
        top = ", ".join(f"{v}: {c}" for v, c in col.categories[:3])
        table.add_row(*(Text(str(x)) for x in (
            col.name, col.role, col.kind, col.count, col.nulls, col.nans, col.pos_inf + col.neg_inf,
            _num(col.min), _num(col.max), _num(col.mean), _num(col.std), top)))
    _out().print(table)


def _num(value) -> str:
    return "-" if value is None else f"{value:.6g}"


@app.command()
def monitor(
    ctx: typer.Context,
    ref: str = typer.Argument(..., metavar="REF", help="name, name/3 or name@alias."),
    input_path: Optional[str] = typer.Option(None, "--input", metavar="PATH", help="Current batch: parquet/csv file or glob."),
    query: Optional[str] = typer.Option(None, "--sql", metavar="QUERY", help="Current batch as a SELECT over --table views."),
    table: List[str] = _TABLE_OPTION,
    reference: Optional[str] = typer.Option(None, "--reference", metavar="PATH|PROFILE.json",
                                            help="Reference batch file, or a saved profile (.json); default: the "
                                                 "training profile stored with the version.  With --log: training "
                                                 "or previous (the window before)."),
    labels: Optional[str] = typer.Option(None, "--labels", metavar="COLUMN",
                                         help="Label column (label drift; quality metrics per slice)."),
    slices: List[str] = typer.Option([], "--slice", metavar="COLS|PREDICATE",
                                     help="Slice by columns ('region', crossed 'region,plan') or a predicate "
                                          "('age >= 60'); repeatable, all in the same scan."),
    config_file: Optional[Path] = typer.Option(None, "--config", metavar="TOML",
                                               help="Thresholds TOML: tables monitor.thresholds and monitor.features.NAME (see conf/monitor.toml)."),
    fail_on_drift: bool = typer.Option(False, "--fail-on-drift",
                                       help=f"Exit with status {EXIT_DRIFT} and one line naming the drifted features."),
    as_json: bool = typer.Option(False, "--json", help="Print the JSON summary (drifted features + every metric)."),
    log_table: Optional[str] = typer.Option(None, "--log", metavar="TABLE",
                                            help="Prediction log (Delta): drift per --window instead of one batch."),
    window: str = typer.Option("1d", "--window", metavar="DURATION", help="With --log: window length (1d, 6h, 15m, 1w)."),
    feedback: Optional[str] = typer.Option(None, "--feedback", metavar="TABLE",
                                           help="With --log: feedback table (request_id, ts, label) for quality metrics."),
    metrics_table: Optional[str] = typer.Option(None, "--metrics-table", metavar="TABLE",
                                                help="With --log: store the rows in this Delta table (re-runs replace "
                                                     "their windows, never duplicate them)."),
    start: Optional[str] = typer.Option(None, "--start", metavar="ISO", help="With --log: first time monitored (UTC)."),
    end: Optional[str] = typer.Option(None, "--end", metavar="ISO", help="With --log: end of the monitored range (excluded)."),
    html_path: Optional[Path] = typer.Option(None, "--html", metavar="FILE.html",
                                             help="Also write a self-contained HTML report (summary table, "
                                                  "histograms of the drifted features)."),
    engine: str = typer.Option("duckdb", "--engine",
                               help="With --log: duckdb (embedded, no JVM) or spark (spark-submit jobs/monitor.py)."),
) -> None:
    """Drift of a batch from the training profile (or a reference): PSI, JS, Wasserstein, KS, chi-square.

    With --log TABLE: drift per window of the prediction log (--reference training, the default,
    or previous: the window before), stored with --metrics-table; --engine spark runs it as a Spark job.

    Exit status: 0, or with --fail-on-drift 3 when any metric crosses its threshold (1 = error).
    """
    import sparkscore as ss
    from sparkscore.monitor import Profile, Thresholds

    if engine not in ENGINES:
        raise typer.BadParameter(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}", param_hint="--engine")
    if engine == "spark" and log_table is None:
        raise typer.BadParameter("--engine spark tracks a prediction log (--log TABLE); for one batch on Spark call "
                                 "ss.monitor.drift(ref, spark_dataframe)", param_hint="--engine")
    thresholds = Thresholds.from_file(config_file) if config_file is not None else Thresholds()
    if log_table is not None:
        if html_path is not None:
            raise typer.BadParameter("--html reports one batch; with --log the windows go to --metrics-table "
                                     "(drop --html, or monitor one window with --input)", param_hint="--html")
        if engine == "spark":
            _monitor_log_spark(ctx, ref, log_table, window, reference, feedback, metrics_table, start, end,
                               config_file, slices, labels, input_path or query, fail_on_drift, as_json)
            return
        _monitor_log(ctx, ref, log_table, window, reference, feedback, metrics_table, start, end, thresholds,
                     slices, labels, input_path or query, fail_on_drift, as_json)
        return
    if (input_path is None) == (query is None):
        raise typer.BadParameter("give exactly one of --input PATH or --sql QUERY (or --log TABLE)",
                                 param_hint="--input/--sql")
    ref_arg = reference
    if reference is not None and reference.lower().endswith(".json"):
        ref_arg = Profile.load(reference)
    con = _connection(table)
    result = ss.monitor.drift(ref, query if query is not None else input_path, reference=ref_arg, engine=con,
                              registry=_registry(ctx), labels=labels, thresholds=thresholds, namespace={},
                              slices=slices)
    if html_path is not None:
        _err().print(Text(f"wrote {ss.monitor.write_report(result, html_path)}"))
    if as_json:
        typer.echo(json.dumps(result.summary(), indent=2, sort_keys=True))
    else:
        shown = Table("feature", "metric", "value", "threshold", "drift", "p-value", "n_ref", "n_cur", "method",
                      *(("slice",) if slices else ()),
                      title=Text(f"drift of {input_path or 'query'} vs {result.reference} of {ref}"))
        for row in result.rows:
            where = (f"{row.slice_key} = {row.slice_value}" if row.slice_key else "all",) if slices else ()
            shown.add_row(*(Text(str(x)) for x in (
                row.feature, row.metric, _num(row.value), _num(row.threshold), "DRIFT" if row.is_anomaly else "",
                _num(row.p_value), row.n_ref, row.n_cur, row.method, *where)))
        _out().print(shown)
    if fail_on_drift and result.drifted:
        worst = {}
        for row in result.rows:
            if row.is_anomaly and row.role != "quality" and row.feature not in worst:
                tested = row.p_value if row.p_value is not None else row.value
                where = f" in {row.slice_key} = {row.slice_value}" if row.slice_key else ""
                worst[row.feature] = f"{row.feature} ({row.metric} {_num(tested)} vs {_num(row.threshold)}{where})"
        print(f"drift: {len(worst)} feature(s) past their thresholds: {', '.join(worst.values())}", file=sys.stderr)
        raise typer.Exit(EXIT_DRIFT)


def _monitor_log(ctx, ref, log_table, window, reference, feedback, metrics_table, start, end, thresholds, slices,
                 labels, batch, fail_on_drift, as_json) -> None:
    """``monitor --log``: drift per window of a prediction log (``ss.monitor.track``)."""
    import sparkscore as ss

    if batch is not None or labels is not None:
        raise typer.BadParameter("--log monitors the log itself: drop --input/--sql and --labels (labels come "
                                 "from --feedback)", param_hint="--log")
    from sparkscore.monitor import tracking

    tracking.no_slices(slices)
    result = ss.monitor.track(ref, log_table, window, reference=reference, feedback=feedback,
                              metrics_table=metrics_table, start=start, end=end, registry=_registry(ctx),
                              thresholds=thresholds)
    if as_json:
        typer.echo(json.dumps(result.summary(), indent=2, sort_keys=True))
    else:
        shown = Table("window", "feature", "metric", "value", "threshold", "drift", "p-value", "n_ref", "n_cur",
                      title=Text(f"drift per {window} window of {log_table} vs {result.reference} of {ref}"))
        for w in result.windows:
            for row in w.rows:
                shown.add_row(*(Text(str(x)) for x in (
                    w.start.isoformat(), row.feature, row.metric, _num(row.value), _num(row.threshold),
                    "DRIFT" if row.is_anomaly else "", _num(row.p_value), row.n_ref, row.n_cur)))
        _out().print(shown)
    if metrics_table is not None:
        print(f"metrics: {sum(len(w.rows) for w in result.windows)} rows of {len(result.windows)} window(s) "
              f"written to {metrics_table}", file=sys.stderr)
    if fail_on_drift and result.drifted:
        print(result.alert_line(), file=sys.stderr)
        raise typer.Exit(EXIT_DRIFT)


def _monitor_log_spark(ctx, ref, log_table, window, reference, feedback, metrics_table, start, end, config_file,
                       slices, labels, batch, fail_on_drift, as_json) -> None:
    """``monitor --log --engine spark``: ``spark-submit jobs/monitor.py`` (same options, same exit status)."""
    if batch is not None or labels is not None:
        raise typer.BadParameter("--log monitors the log itself: drop --input/--sql and --labels (labels come "
                                 "from --feedback)", param_hint="--log")
    from sparkscore.monitor import predlog, tracking

    tracking.no_slices(slices)
    tracking.check_reference(reference)  # the job's own checks, before a JVM starts
    predlog.window_interval(window)
    command = monitor_submit_command(ref, log_table, window, reference, feedback, metrics_table, start, end,
                                     ctx.obj.registry, config_file, fail_on_drift, as_json)
    _err().print(Text(f"running {shlex.join(command)}"))
    rc = subprocess.run(command, env=_checkout_env(), check=False).returncode
    if rc == EXIT_DRIFT and fail_on_drift:
        raise typer.Exit(EXIT_DRIFT)
    if rc != 0:
        raise SparkscoreError(f"spark-submit exited with status {rc}; its output above says why")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="sparkscore")


# ---------------------------------------------------------------------- helpers
def _spark_submit(job: str) -> list[str]:
    """pyspark's own ``spark-submit`` with the checkout's defaults, and the job script ``job``."""
    try:
        import pyspark
    except ImportError:
        raise SparkscoreError("--engine spark needs pyspark; install sparkscore[spark] or use --engine duckdb") from None
    command = [str(Path(pyspark.__file__).parent / "bin" / "spark-submit")]
    defaults = _CHECKOUT / "conf" / "spark-defaults.conf"
    if defaults.is_file():
        command += ["--properties-file", str(defaults)]
    return command + [str(_checkout_file(job))]


def spark_submit_command(model: str, input_path: str, output: str, mode: str, job_id: Optional[str],
                         keep_columns: Optional[str], batch_rows: Optional[int], registry: Optional[str],
                         schema: str = "strict", model_columns: Optional[bool] = None, log=None,
                         with_arm: bool = False) -> list[str]:
    """``spark-submit jobs/score.py ...`` with pyspark's own spark-submit and the checkout's defaults."""
    command = _spark_submit("jobs/score.py")
    command += ["--model", model, "--input", input_path, "--output", output, "--mode", mode]
    for flag, value in (("--job-id", job_id), ("--keep-columns", keep_columns), ("--batch-rows", batch_rows),
                        ("--registry", registry)):
        if value is not None:
            command += [flag, str(value)]
    if schema != "strict":
        command += ["--schema", schema]
    if model_columns is not None:
        command += ["--model-columns" if model_columns else "--no-model-columns"]
    if log is not None:
        command += ["--log", log.table, "--log-fraction", repr(log.fraction), "--log-max-rows", str(log.max_rows)]
        command += ["--log-id", log.id_column] if log.id_column else []
    if with_arm:
        command += ["--with-arm"]
    return command


def monitor_submit_command(ref: str, log_table: str, window: str, reference: Optional[str], feedback: Optional[str],
                           metrics_table: Optional[str], start: Optional[str], end: Optional[str],
                           registry: Optional[str], config_file: Optional[Path] = None, fail_on_drift: bool = False,
                           as_json: bool = False) -> list[str]:
    """``spark-submit jobs/monitor.py ...``: ``sparkscore monitor --log ... --engine spark``."""
    command = _spark_submit("jobs/monitor.py") + ["--model", ref, "--log", log_table, "--window", window]
    for flag, value in (("--reference", reference), ("--feedback", feedback), ("--metrics-table", metrics_table),
                        ("--start", start), ("--end", end), ("--registry", registry), ("--config", config_file)):
        if value is not None:
            command += [flag, str(value)]
    return command + ["--fail-on-drift"] * fail_on_drift + ["--json"] * as_json


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
    try:
        return _load_as(path, fmt, allow_pickle)
    except SparkscoreError:
        raise
    except Exception as exc:  # the library's own reader failed: say which format was tried and how to fix it
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise SparkscoreError(f"{path} could not be read as a {fmt} model ({reason}); check the file, or pass the "
                              f"right --format ({', '.join(f for f in FORMATS if f != 'auto')})") from exc


def _load_as(path: Path, fmt: str, allow_pickle: bool) -> Any:
    if fmt == "sparkscore":
        from sparkscore.ir import Model

        return Model.load(path)
    if fmt == "lightgbm":
        from sparkscore.importers import lightgbm

        return lightgbm.load_file(path)
    if fmt == "xgboost":
        from sparkscore.importers import xgboost

        return xgboost.load_file(path)
    if fmt == "catboost":
        from sparkscore.importers import catboost

        return catboost.load_file(path)
    if fmt == "pyspark":
        from sparkscore.importers import pyspark_ml

        return pyspark_ml.convert_saved(path)
    if fmt == "onnx":
        from sparkscore.importers import onnx

        return onnx.load_file(path)
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
    if path.suffix.lower() == ".onnx":
        return "onnx"

    from sparkscore.importers.catboost import is_catboost_file  # light (numpy only); reads the first 4 KiB

    if is_catboost_file(path):
        return "catboost"
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
    from sparkscore.engines.batch import connect, read_files

    con = connect()  # DuckDB's own bar stays off stdout; run_with_progress draws query_progress on stderr
    for name, location in _key_values(tables, "--table").items():
        if not _TABLE_NAME.fullmatch(name):
            raise typer.BadParameter(f"table name {name!r} must be a plain SQL identifier", param_hint="--table")
        read_files(con, location, f"--table {name}={location}").create_view(name)
    return con


def _check_output(output: Path, overwrite: bool) -> None:
    """Refuse to overwrite an existing --output (it may be one of the query's inputs) without --overwrite."""
    if output.suffix.lower() not in (".csv", ".parquet", ".pq"):
        raise typer.BadParameter(f"cannot write {output.suffix or 'files without a suffix'}; use .parquet or .csv",
                                 param_hint="--output")
    if output.is_dir():
        raise SparkscoreError(f"--output {output} is a directory; pass a .parquet or .csv file path")
    if output.exists() and not overwrite:
        raise SparkscoreError(f"--output {output} already exists; pick another path or pass --overwrite to replace it")


def run_with_progress(con, work, report, interval_s: float = 0.2):
    """Run ``work()`` while a thread polls DuckDB's ``query_progress`` and hands percentages to ``report``.

    DuckDB computes the progress itself (the same number its own progress bar shows); polling it
    from a second thread keeps the bar on stderr, out of the result printed on stdout.
    ``report(None)`` is called once at the end so a display can clear itself.
    """
    done = threading.Event()

    def poll() -> None:
        while not done.wait(interval_s):
            try:
                percent = con.query_progress()
            except Exception:  # the connection is busy closing: stop reporting, never fail the query
                return
            if percent is not None and 0 <= percent <= 100:
                report(float(percent))

    poller = threading.Thread(target=poll, name="sparkscore-progress", daemon=True)
    poller.start()
    try:
        return work()
    finally:
        done.set()
        poller.join()
        report(None)


def _progress_reporter(label: str):
    """A transient rich progress bar on stderr (nothing when stderr is not a terminal)."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn(label), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                        console=_err(), transient=True)
    state: dict[str, Any] = {}

    def report(percent: Optional[float]) -> None:
        if percent is None:
            if state:
                progress.stop()
            return
        if not state:
            progress.start()
            state["task"] = progress.add_task(label, total=100.0)
        progress.update(state["task"], completed=percent)

    return report


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
    """An exception as one bounded line, without any library's exception class name.

    A SparkscoreError already says what is wrong and how to fix it.  An OSError becomes
    ``path: reason``.  Anything else was not anticipated: its message is kept (it usually names the
    problem) and the line says how to get the traceback.
    """
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    if isinstance(exc, SparkscoreError):
        text = text or type(exc).__name__
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    else:
        library = type(exc).__module__.split(".")[0]
        origin = "" if library == "builtins" else f" from {library}"
        text = f"{text or 'failed'} (unexpected error{origin}; rerun with --debug for the traceback)"
    if len(text) > _MAX_ERROR_CHARS:
        text = text[:_MAX_ERROR_CHARS - 3] + "..."
    return text


if __name__ == "__main__":
    main()
