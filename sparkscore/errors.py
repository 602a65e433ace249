"""One exception hierarchy for sparkscore.

Every error a user can trigger derives from :class:`SparkscoreError` *and* the matching builtin,
so ``except ValueError`` keeps working for callers that do not know sparkscore.  Messages are
one line that says what is wrong, where (model, column) and how to fix it.
"""

from __future__ import annotations


class SparkscoreError(Exception):
    """Base class of every error sparkscore raises on purpose."""


class ModelNotFoundError(SparkscoreError, LookupError):
    """A model name, version or alias that the registry does not hold."""


class InvalidModelNameError(SparkscoreError, ValueError):
    """A model name, alias or ref that fails validation (e.g. path traversal, SQL text)."""


class SignatureError(SparkscoreError, ValueError):
    """Input columns do not match a model's signature (missing, extra or mistyped column)."""


class IntegrityError(SparkscoreError, ValueError):
    """A stored model whose bytes do not match its recorded sha256, or an unreadable format."""


class FormatVersionError(IntegrityError):
    """A stored model written by a format version this sparkscore cannot read."""


class UnsupportedModelError(SparkscoreError, TypeError):
    """A native model class (or option) no importer supports."""


class RegistryError(SparkscoreError, RuntimeError):
    """A registry operation that cannot be carried out (conflict, bad URI, read-only store)."""


class QueryError(SparkscoreError, ValueError):
    """A PREDICT query that cannot be planned (bad arguments, unknown rule, unsupported shape)."""


class MonitorError(SparkscoreError, ValueError):
    """A profile or drift request that cannot be computed (unknown column, bad option, mismatched profiles)."""


class JobError(SparkscoreError, RuntimeError):
    """A batch scoring job that cannot run or commit its output."""


class ScoringError(SparkscoreError, ValueError):
    """Rows a model refuses to score because its native library refuses them (sklearn raises too)."""


class UnknownCategoryError(ScoringError):
    """A value a strict encoder never saw in training (OneHotEncoder ``handle_unknown='error'``).

    Keeps the parts of its one-line message so an engine can name the model by its registry ref
    (``churn/3``) instead of the class name the converted model carries.
    """

    def __init__(self, model: str, column: str, shown: str) -> None:
        self.model, self.column, self.shown = model, column, shown
        super().__init__(unknown_category_message(model, column, shown))

    def for_model(self, model: str) -> "UnknownCategoryError":
        return UnknownCategoryError(model, self.column, self.shown)


def unknown_category_message(model: str, column: str, shown: str) -> str:
    """The one line every path (Python, DuckDB ``error()``, Spark ``raise_error``) reports."""
    return (f"{model}: column {column!r} has value {shown}, a category its encoder did not see in training "
            f"(handle_unknown='error': sklearn raises on it too); refit the encoder with handle_unknown='ignore' "
            f"or 'infrequent_if_exist', or clean the data")


class SparkscoreWarning(UserWarning):
    """Base class of every warning sparkscore emits on purpose."""


class PerformanceWarning(SparkscoreWarning):
    """Results stay exact, but something makes them much slower than they should be (e.g. no numba)."""
