"""'sparkscore ensemble': register an ensemble of registered versions from the command line."""

from __future__ import annotations

import numpy as np

import sparkscore as ss
from sparkscore.cli import app
from tests.registry.models import tiny_model


def invoke(runner, reg_path, *args):
    return runner.invoke(app, ["--registry", str(reg_path), *map(str, args)])


def test_ensemble_verb_pins_members_and_refuses_bad_weights(runner, tmp_path):
    reg_path = tmp_path / "registry"
    reg = ss.Registry(reg_path)
    reg.register("churn", tiny_model(1.0))
    reg.register("churn", tiny_model(2.0, names=("age", "tenure")))
    reg.set_alias("churn", "challenger", 2)
    result = invoke(runner, reg_path, "ensemble", "churn_ens", "churn/1", "churn@challenger",
                    "--combiner", "weighted", "--weights", "0.7,0.3", "--alias", "prod")
    assert result.exit_code == 0, result.output
    assert "registered churn_ens/1" in result.output and "churn@challenger=churn/2" in result.output
    model = reg.load("churn_ens@prod")
    assert model.signature.names == ("age", "income", "tenure")
    X = {"age": np.array([1.0, 2.0]), "income": np.array([3.0, 0.5]), "tenure": np.array([-1.0, 4.0])}
    expected = 0.7 * (X["age"] + 2 * X["income"] + 1.0) + 0.3 * (X["age"] + 2 * X["tenure"] + 2.0)
    np.testing.assert_allclose(model.predict(X), expected, rtol=1e-12)
    stacked = invoke(runner, reg_path, "ensemble", "churn_stack", "churn/1", "churn/2", "--combiner", "stack",
                     "--stack-coef", "0.5,2", "--stack-intercept", "1")
    assert stacked.exit_code == 0, stacked.output
    np.testing.assert_allclose(reg.load("churn_stack").predict(X),
                               0.5 * (X["age"] + 2 * X["income"] + 1.0) + 2 * (X["age"] + 2 * X["tenure"] + 2.0) + 1,
                               rtol=1e-12)
    bad = invoke(runner, reg_path, "ensemble", "churn_ens", "churn/1", "churn/2", "--combiner", "weighted",
                 "--weights", "1,-1")
    assert bad.exit_code != 0 and "finite positive" in bad.output and "Traceback" not in bad.output
