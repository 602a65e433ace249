"""Monitoring fixtures: one churn-like training frame, one model registered WITH its training profile."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

REGIONS = ["EU", "US", "APAC"]


def frame(n: int, seed: int) -> pd.DataFrame:
    """Numeric inputs on different scales, a string category and a binary label."""
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({"age": rng.normal(40, 10, n), "income": rng.lognormal(10, 0.5, n),
                       "score": rng.uniform(0, 1, n), "region": rng.choice(REGIONS, n, p=[0.5, 0.3, 0.2])})
    df["y"] = ((df.age - 40) / 10 + df.score + (df.region == "EU") + rng.normal(0, 1, n) > 1).astype(int)
    return df


@pytest.fixture(scope="session")
def train() -> pd.DataFrame:
    return frame(4000, 0)


@pytest.fixture(scope="session")
def native(train):
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    ct = ColumnTransformer([("num", make_pipeline(SimpleImputer(), StandardScaler()), ["age", "income", "score"]),
                            ("cat", OneHotEncoder(handle_unknown="ignore"), ["region"])])
    return make_pipeline(ct, LogisticRegression()).fit(train.drop(columns="y"), train.y)


@pytest.fixture(scope="session")
def monitored(tmp_path_factory, train, native):
    """A registry holding churn/1 (alias prod) registered with training_data + labels: its profile is stored."""
    import sparkscore as ss

    reg = ss.Registry(tmp_path_factory.mktemp("monitor") / "registry")
    mv = reg.register("churn", native, training_data=train, training_labels="y", profile=True)
    reg.set_alias("churn", "prod", mv.version)
    return reg
