"""A value missing where training never missed one: the model averages over typical values of
it instead of trusting the branch its trees send missing values down."""

import numpy as np
import polars as pl
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

from atelier.automl import artifacts
from atelier.automl.model import AutomlModel, missing_draws
from atelier.automl.prepare import ColumnPreparer, encode_target


def _frame(n: int = 400, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return pl.DataFrame(
        {
            "x": x,
            "noise": rng.normal(size=n),
            "sometimes": pl.Series(
                np.where(rng.random(n) < 0.3, np.nan, rng.normal(size=n))
            ).fill_nan(None),
            "y": np.where(x > 0, "up", "down"),
        }
    )


def _classifier(table: pl.DataFrame, *, fill: bool = True) -> AutomlModel:
    prep = ColumnPreparer(["x", "noise", "sometimes"], [], [], []).fit(table)
    y, classes = encode_target(table["y"], "binary")
    x = prep.transform(table)
    est = HistGradientBoostingClassifier(max_iter=50, random_state=0).fit(x, y)
    drawn = missing_draws(x, seed=0) if fill else None
    return AutomlModel(prep, [(est, None, 1.0)], "binary", classes, [], fill=drawn)


def test_only_columns_never_missing_in_training_get_draws_of_their_own_values():
    table = _frame()
    x = ColumnPreparer(["x", "noise", "sometimes"], [], [], []).fit(table).transform(table)
    columns, draws = missing_draws(x, seed=0)
    assert list(columns) == [0, 1]  # "sometimes" is missing in ~30 % of the rows: learned
    assert draws.shape == (16, 2)
    assert set(draws[:, 0]) <= set(x[:, 0])  # actual training values, not interpolations
    assert draws[:, 0].min() < -1 < 1 < draws[:, 0].max()  # spread over the distribution
    assert not np.array_equal(np.argsort(draws[:, 0]), np.argsort(draws[:, 1]))  # unpaired


def test_a_row_missing_the_decisive_value_gets_an_uncertain_prediction():
    model = _classifier(_frame())
    rows = pl.DataFrame(
        {"x": [None, 2.0, -2.0], "noise": [0.1, 0.1, 0.1], "sometimes": [None, None, 0.3]},
        schema={"x": pl.Float64, "noise": pl.Float64, "sometimes": pl.Float64},
    )
    trusted = model.predict_proba(rows, average_missing=False)
    averaged = model.predict_proba(rows)
    # The trees send a missing x down one side: a near-certain answer about nothing known.
    assert trusted[0].max() > 0.9
    assert 0.25 < averaged[0, 1] < 0.75
    # Rows with x known are untouched, a hole in a column that training often missed included.
    np.testing.assert_array_equal(averaged[1:], trusted[1:])
    assert averaged[1, model.classes.index("up")] > 0.9


def test_a_regression_row_missing_a_value_is_the_mean_over_its_draws():
    table = _frame().with_columns(target=pl.col("x") * 10)
    prep = ColumnPreparer(["x", "noise"], [], [], []).fit(table)
    x = prep.transform(table)
    est = HistGradientBoostingRegressor(max_iter=50, random_state=0).fit(x, table["target"])
    columns, draws = missing_draws(x, seed=0)
    model = AutomlModel(prep, [(est, None, 1.0)], "regression", None, [], fill=(columns, draws))
    row = pl.DataFrame({"x": [None], "noise": [0.5]}, schema={"x": pl.Float64, "noise": pl.Float64})
    filled = np.column_stack([draws[:, 0], np.full(len(draws), 0.5)])
    assert model.predict(row)[0] == pytest.approx(est.predict(filled).mean())
    assert model.predict(row)[0] != pytest.approx(model.predict(row, average_missing=False)[0])


def test_a_batch_missing_a_column_everywhere_costs_a_few_predictions_per_row():
    model = _classifier(_frame())
    calls = []
    est = model.members[0][0]
    original = est.predict_proba
    est.predict_proba = lambda x: calls.append(len(x)) or original(x)
    rows = pl.DataFrame(
        {"x": [None] * 1000, "noise": [0.0] * 1000, "sometimes": [0.0] * 1000},
        schema={"x": pl.Float64, "noise": pl.Float64, "sometimes": pl.Float64},
    )
    proba = model.predict_proba(rows)
    assert calls == [1000, 4000]  # every row once, then 4 draws each (not 16)
    assert np.all((proba[:, 1] > 0.1) & (proba[:, 1] < 0.9))


def test_the_draws_survive_saving_and_a_model_saved_without_them_predicts_as_before(tmp_path):
    table = _frame()
    model = _classifier(table)
    artifacts.save(tmp_path, model, target="y")
    loaded, _ = artifacts.load(tmp_path)
    rows = table.head(5).with_columns(x=pl.lit(None, dtype=pl.Float64))
    np.testing.assert_array_equal(loaded.predict_proba(rows), model.predict_proba(rows))
    older = _classifier(table, fill=False)
    np.testing.assert_array_equal(
        older.predict_proba(rows), older.predict_proba(rows, average_missing=False)
    )
