"""From a raw table to what learners see: task detection, column screening, the column preparer.

The screening (`plan_columns`) decides which raw columns are used and reports why the others are
dropped. `ColumnPreparer` is the only step that reads raw columns: it turns them into a float
matrix (numbers as floats, booleans as 0/1, datetimes as parts, categoricals as integer codes with
rare values grouped). It is fitted without the target on the search data (never the holdout); the
statistics that depend on a fold (imputation, scaling, one-hot) live in each learner's pipeline.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
from sklearn.base import BaseEstimator, TransformerMixin

MAX_MISSING = 0.95
MAX_CLASSES = 200
_ID_NAME = re.compile(r"(^|_|\b)(id|uuid|guid|key|index|idx)$|^(id|uuid|guid)_", re.IGNORECASE)
_TEXT_TYPES = (pl.Utf8, pl.Categorical, pl.Enum)
_DATE_PARTS = ("year", "month", "day", "dayofweek")


def to_polars(frame: Any) -> pl.DataFrame:
    """Accept a polars DataFrame, a pyarrow Table or a pandas DataFrame."""
    if isinstance(frame, pl.DataFrame):
        return frame
    if isinstance(frame, pa.Table):
        return pl.from_arrow(frame)
    if type(frame).__module__.startswith("pandas"):
        return pl.from_pandas(frame)
    raise TypeError(
        f"expected a polars DataFrame, pyarrow Table or pandas DataFrame, got {frame!r}"
    )


def _kind(dtype: pl.DataType) -> str | None:
    if dtype == pl.Boolean:
        return "boolean"
    if dtype.is_numeric():
        return "numeric"
    if isinstance(dtype, _TEXT_TYPES) or dtype in _TEXT_TYPES:
        return "categorical"
    if dtype in (pl.Date, pl.Datetime) or isinstance(dtype, pl.Datetime):
        return "datetime"
    return None


def detect_task(target: pl.Series) -> str:
    """Binary or multiclass for labels; regression for numbers unless few integer values."""
    values = target.drop_nulls()
    n_unique = values.n_unique()
    if n_unique < 2:
        raise ValueError(f"target {target.name!r} has fewer than two distinct values")
    kind = _kind(target.dtype)
    if kind in ("boolean", "categorical"):
        return "binary" if n_unique == 2 else "multiclass"
    if kind != "numeric":
        raise ValueError(f"target {target.name!r} has unsupported type {target.dtype}")
    floats = values.cast(pl.Float64)
    integral = bool((floats.round(0) == floats).all())
    if integral and (n_unique == 2 or (n_unique <= 10 and n_unique <= 0.05 * len(values))):
        return "binary" if n_unique == 2 else "multiclass"
    return "regression"


def encode_target(target: pl.Series, task: str) -> tuple[np.ndarray, list | None]:
    """Encoded target (class indices or floats) and the classes, sorted, as in the data."""
    if task == "regression":
        if _kind(target.dtype) != "numeric":
            raise ValueError(f"target {target.name!r} is not numeric; regression needs numbers")
        return target.cast(pl.Float64).to_numpy(), None
    values = target.cast(pl.Utf8) if isinstance(target.dtype, pl.Categorical | pl.Enum) else target
    classes = sorted(values.unique().to_list())
    if len(classes) < 2:
        raise ValueError(f"target {target.name!r} has fewer than two classes")
    if len(classes) > MAX_CLASSES:
        raise ValueError(
            f"target {target.name!r} has {len(classes)} classes (at most {MAX_CLASSES})"
        )
    if task == "binary" and len(classes) != 2:
        raise ValueError(f"binary task but target {target.name!r} has {len(classes)} classes")
    index = {c: i for i, c in enumerate(classes)}
    codes = np.array([index[v] for v in values.to_list()], dtype=np.int64)
    return codes, classes


@dataclass
class ColumnPlan:
    numeric: list[str] = field(default_factory=list)
    boolean: list[str] = field(default_factory=list)
    datetime: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)

    @property
    def used(self) -> list[str]:
        return [*self.numeric, *self.boolean, *self.datetime, *self.categorical]


def _identifier_or_text(name: str, col: pl.Series, kind: str, n: int) -> str | None:
    values = col.drop_nulls()
    ratio = values.n_unique() / max(len(values), 1)
    if kind == "numeric":
        if not col.dtype.is_integer() or ratio < 0.99 or n < 20:
            return None
        steps = np.diff(np.sort(values.to_numpy()))
        if _ID_NAME.search(name) or (len(steps) and np.all(steps == steps[0])):
            return "identifier (unique integer per row)"
        return None
    if kind != "categorical":
        return None
    strings = values.cast(pl.Utf8)
    if ratio >= 0.95 and n >= 20 and (_ID_NAME.search(name) or not strings.str.contains(" ").any()):
        return "identifier (unique value per row)"
    if ratio > 0.5 and n >= 20:
        if strings.str.len_chars().mean() >= 20 and strings.str.contains(" ").mean() > 0.5:
            return "free text (not used yet)"
        return f"too many distinct values ({values.n_unique()}) for a category"
    return None


def _leakage(col: pl.Series, kind: str, target: pl.Series, task: str) -> str | None:
    mask = col.is_not_null() & target.is_not_null()
    x, y = col.filter(mask), target.filter(mask)
    if len(x) < 30:
        return None
    if kind != "datetime" and x.cast(pl.Utf8).equals(y.cast(pl.Utf8)):
        return "leakage: identical to the target"
    if task == "regression":
        if kind not in ("numeric", "boolean"):
            return None
        xs, ys = x.cast(pl.Float64).to_numpy(), y.cast(pl.Float64).to_numpy()
        if np.std(xs) == 0 or np.std(ys) == 0:
            return None
        rank = np.corrcoef(np.argsort(np.argsort(xs)), np.argsort(np.argsort(ys)))[0, 1]
        if abs(np.corrcoef(xs, ys)[0, 1]) >= 0.999 or abs(rank) >= 0.999:
            return "leakage: trivially derived from the target (correlation >= 0.999)"
        return None
    n_classes = y.n_unique()
    frame = pl.DataFrame({"x": x.cast(pl.Utf8), "y": y.cast(pl.Utf8)})
    if frame["x"].n_unique() <= 2 * n_classes:
        purity = frame.group_by("x").agg(pl.col("y").n_unique().alias("k"))["k"].max()
        if purity == 1:
            return "leakage: determines the target exactly"
    if task == "binary" and kind == "numeric":
        xs, ys = x.cast(pl.Float64).to_numpy(), y.cast(pl.Utf8).to_numpy()
        labels = np.unique(ys)
        a, b = xs[ys == labels[0]], xs[ys == labels[1]]
        if a.max() < b.min() or b.max() < a.min():
            return "leakage: separates the classes perfectly"
    return None


def plan_columns(df: pl.DataFrame, target: str, exclude: tuple[str, ...], task: str) -> ColumnPlan:
    """Sort the feature columns by kind and say why the others are left out."""
    plan = ColumnPlan()
    n = df.height
    for name in df.columns:
        if name == target:
            continue
        col = df[name]
        kind = _kind(col.dtype)
        reason = None
        if name in exclude:
            reason = "excluded by the user"
        elif kind is None:
            reason = f"unsupported type {col.dtype}"
        elif n and col.null_count() / n > MAX_MISSING:
            reason = f"too many missing values ({col.null_count() / n:.0%})"
        elif col.drop_nulls().n_unique() <= 1:
            reason = "constant"
        else:
            reason = _identifier_or_text(name, col, kind, n) or _leakage(
                col, kind, df[target], task
            )
        if reason:
            plan.dropped.append({"name": name, "reason": reason})
        else:
            getattr(plan, kind).append(name)
    if not plan.used:
        raise ValueError("no usable feature column left after screening: " + str(plan.dropped))
    return plan


class ColumnPreparer(TransformerMixin, BaseEstimator):
    """Raw columns -> float matrix; categoricals become codes 0..m (m = other/unseen)."""

    def __init__(
        self,
        numeric: list[str] | None = None,
        boolean: list[str] | None = None,
        datetime: list[str] | None = None,
        categorical: list[str] | None = None,
        max_categories: int = 64,
        min_category_count: int = 5,
    ):
        self.numeric = numeric
        self.boolean = boolean
        self.datetime = datetime
        self.categorical = categorical
        self.max_categories = max_categories
        self.min_category_count = min_category_count

    def fit(self, frame: Any, y: Any = None) -> ColumnPreparer:
        df = to_polars(frame)
        self.categories_: dict[str, list[str]] = {}
        for name in self.categorical or []:
            counts = (
                df[name]
                .cast(pl.Utf8)
                .drop_nulls()
                .value_counts(name="n")
                .sort(["n", name], descending=[True, False])
            )
            kept = counts.filter(pl.col("n") >= self.min_category_count)[name].to_list()
            if not kept:  # small data: keep the most frequent values anyway
                kept = counts[name].to_list()
            self.categories_[name] = [str(v) for v in kept[: self.max_categories]]
        self.datetime_parts_: dict[str, list[str]] = {}
        for name in self.datetime or []:
            parts = list(_DATE_PARTS)
            if df[name].dtype != pl.Date and df[name].dt.hour().drop_nulls().n_unique() > 1:
                parts.append("hour")
            self.datetime_parts_[name] = parts
        names, sources, cat_mask = [], [], []
        for name in [*(self.numeric or []), *(self.boolean or [])]:
            names.append(name), sources.append(name), cat_mask.append(False)
        for name, parts in self.datetime_parts_.items():
            for part in parts:
                names.append(f"{name}.{part}"), sources.append(name), cat_mask.append(False)
        for name in self.categorical or []:
            names.append(name), sources.append(name), cat_mask.append(True)
        self.feature_names_ = names
        self.source_columns_ = sources
        self.categorical_mask_ = np.array(cat_mask, dtype=bool)
        return self

    def input_columns(self) -> list[str]:
        return [
            *(self.numeric or []),
            *(self.boolean or []),
            *(self.datetime or []),
            *(self.categorical or []),
        ]

    def transform(self, frame: Any) -> np.ndarray:
        df = to_polars(frame)
        missing = [c for c in self.input_columns() if c not in df.columns]
        if missing:
            raise ValueError(f"missing input columns: {', '.join(missing)}")
        df = _coerced(df, self.numeric or [], self.boolean or [], self.datetime or [])
        exprs = [pl.col(c).cast(pl.Float64) for c in [*(self.numeric or []), *(self.boolean or [])]]
        for name, parts in self.datetime_parts_.items():
            col = pl.col(name)
            getters = {
                "year": col.dt.year(),
                "month": col.dt.month(),
                "day": col.dt.day(),
                "dayofweek": col.dt.weekday(),
                "hour": col.dt.hour(),
            }
            exprs += [getters[p].cast(pl.Float64).alias(f"{name}.{p}") for p in parts]
        for name, kept in self.categories_.items():
            mapping = {v: float(i) for i, v in enumerate(kept)}
            exprs.append(
                pl.when(pl.col(name).is_null())
                .then(None)
                .otherwise(
                    pl.col(name)
                    .cast(pl.Utf8)
                    .replace_strict(mapping, default=float(len(kept)), return_dtype=pl.Float64)
                )
                .alias(name)
            )
        out = df.select(exprs).to_numpy().astype(np.float64)
        return np.where(np.isfinite(out), out, np.nan) if out.size else out


_TRUE = ("true", "yes", "y", "t", "1")
_FALSE = ("false", "no", "n", "f", "0")


def _coerced(
    df: pl.DataFrame, numeric: list[str], boolean: list[str], datetime: list[str]
) -> pl.DataFrame:
    """Inputs as text (a CSV read without type inference, JSON from a client) turned into the
    types the model was trained on; what does not parse becomes missing."""
    exprs = []
    for name in numeric:
        if df[name].dtype == pl.String:
            exprs.append(pl.col(name).str.strip_chars().cast(pl.Float64, strict=False))
    for name in boolean:
        if df[name].dtype == pl.String:
            text = pl.col(name).str.strip_chars().str.to_lowercase()
            exprs.append(
                pl.when(text.is_in(_TRUE))
                .then(1.0)
                .when(text.is_in(_FALSE))
                .then(0.0)
                .otherwise(None)
                .alias(name)
            )
    for name in datetime:
        if df[name].dtype == pl.String:
            exprs.append(pl.col(name).str.to_datetime(strict=False, time_unit="us"))
    return df.with_columns(exprs) if exprs else df
