"""Builds the benchmark's data sets offline, from data files that installed packages ship.

    nice -n 19 bench/automl/.venvs/data/bin/python bench/automl/datasets.py [--force]

Writes bench/automl/data/<name>/{train,test}.parquet and meta.json: one fixed, seeded 75/25
split per set (stratified on the class for classification), so every system reads identical
files. Nothing is downloaded: scikit-learn's bundled `load_*` sets, palmerpenguins,
vega_datasets' local files and statsmodels' bundled data sets only.

Categorical columns are stored as strings. Missing values are the sets' own (penguins, cars),
except in anes96, where income and age are blanked on a seeded draw (see ANES96_MISSING).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
SEED = 0
TEST_SIZE = 0.25
PRIMARY = {"binary": "roc_auc", "multiclass": "log_loss", "regression": "rmse"}
ANES96_MISSING = {"income": 0.10, "age": 0.05}  # share of rows blanked, seeded (MCAR)


def breast_cancer() -> tuple[pd.DataFrame, str, str, str]:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer(as_frame=True).frame, "target", "binary", "scikit-learn"


def fair() -> tuple[pd.DataFrame, str, str, str]:
    """Fair's affairs survey (1974): did the wife report any extramarital affair?"""
    from statsmodels.datasets import fair as fair_data

    df = fair_data.load_pandas().data.copy()
    jobs = {1: "student", 2: "farming/semi-skilled/unskilled", 3: "white-collar",
            4: "teacher/nurse/writer/technician", 5: "managerial/business",
            6: "professional"}  # fmt: skip
    for col in ("occupation", "occupation_husb"):
        df[col] = df[col].round().astype(int).map(jobs).astype(object)
    df["had_affair"] = (df.pop("affairs") > 0).astype(int)
    return df, "had_affair", "binary", "statsmodels.datasets.fair"


def anes96() -> tuple[pd.DataFrame, str, str, str]:
    """1996 American National Election Study: Dole (1) or Clinton (0)."""
    from statsmodels.datasets import anes96 as anes

    df = anes.load_pandas().data.drop(columns=["logpopul"]).copy()
    pid = ["strong democrat", "weak democrat", "independent democrat", "independent",
           "independent republican", "weak republican", "strong republican"]  # fmt: skip
    df["PID"] = df["PID"].round().astype(int).map(dict(enumerate(pid))).astype(object)
    educ = {1: "grade school", 2: "some high school", 3: "high school", 4: "some college",
            5: "associate degree", 6: "bachelor", 7: "postgraduate"}  # fmt: skip
    df["educ"] = df["educ"].round().astype(int).map(educ).astype(object)
    rng = np.random.default_rng(SEED)
    for col, share in ANES96_MISSING.items():
        df[col] = df[col].astype(float)
        df.loc[rng.random(len(df)) < share, col] = np.nan
    df["vote"] = df["vote"].astype(int)
    return df, "vote", "binary", "statsmodels.datasets.anes96 (+ seeded missing income/age)"


def wine() -> tuple[pd.DataFrame, str, str, str]:
    from sklearn.datasets import load_wine

    return load_wine(as_frame=True).frame, "target", "multiclass", "scikit-learn"


def penguins() -> tuple[pd.DataFrame, str, str, str]:
    from palmerpenguins import load_penguins

    df = load_penguins()
    for col in ("species", "island", "sex"):
        df[col] = df[col].astype(object).where(df[col].notna(), None)
    return df, "species", "multiclass", "palmerpenguins"


def seattle_weather() -> tuple[pd.DataFrame, str, str, str]:
    """Daily Seattle weather 2012-2015: the day's label (sun, rain, drizzle, fog, snow)."""
    from vega_datasets import local_data

    df = local_data.seattle_weather()
    date = pd.to_datetime(df.pop("date"))
    df.insert(0, "year", date.dt.year)
    df.insert(1, "month", date.dt.month)
    df.insert(2, "day_of_year", date.dt.day_of_year)
    df["weather"] = df["weather"].astype(object)
    return df, "weather", "multiclass", "vega_datasets (local seattle-weather)"


def diabetes() -> tuple[pd.DataFrame, str, str, str]:
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True).frame, "target", "regression", "scikit-learn"


def cars() -> tuple[pd.DataFrame, str, str, str]:
    """Classic auto-mpg: miles per gallon from engine, weight, year and origin."""
    from vega_datasets import local_data

    df = local_data.cars().drop(columns=["Name"])  # Name: an identifier, nearly unique
    df["Year"] = pd.to_datetime(df["Year"]).dt.year
    df["Origin"] = df["Origin"].astype(object)
    df = df[df["Miles_per_Gallon"].notna()].reset_index(drop=True)
    return df, "Miles_per_Gallon", "regression", "vega_datasets (local cars)"


def randhie() -> tuple[pd.DataFrame, str, str, str]:
    """RAND health insurance experiment: outpatient visits per year (a count)."""
    from statsmodels.datasets import randhie as rand

    return rand.load_pandas().data, "mdvis", "regression", "statsmodels.datasets.randhie"


SETS: dict[str, Callable[[], tuple[pd.DataFrame, str, str, str]]] = {
    "breast_cancer": breast_cancer,
    "fair": fair,
    "anes96": anes96,
    "wine": wine,
    "penguins": penguins,
    "seattle_weather": seattle_weather,
    "diabetes": diabetes,
    "cars": cars,
    "randhie": randhie,
}


def build(name: str, out: Path) -> dict:
    df, target, task, source = SETS[name]()
    df = df.reset_index(drop=True)
    stratify = df[target] if task != "regression" else None
    train, test = train_test_split(df, test_size=TEST_SIZE, random_state=SEED, stratify=stratify)
    out.mkdir(parents=True, exist_ok=True)
    train.reset_index(drop=True).to_parquet(out / "train.parquet", index=False)
    test.reset_index(drop=True).to_parquet(out / "test.parquet", index=False)
    features = df.drop(columns=[target])
    meta = {
        "name": name,
        "task": task,
        "target": target,
        "metric": PRIMARY[task],
        "source": source,
        "rows": len(df),
        "train_rows": len(train),
        "test_rows": len(test),
        "features": features.shape[1],
        "categorical": [c for c in features.columns if features[c].dtype == object],
        "missing_cells": int(features.isna().sum().sum()),
        "missing_columns": [c for c in features.columns if features[c].isna().any()],
        "classes": sorted(df[target].unique().tolist()) if task != "regression" else None,
        "split": {"seed": SEED, "test_size": TEST_SIZE, "stratified": task != "regression"},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild sets that exist")
    parser.add_argument("--out", type=Path, default=DATA)
    args = parser.parse_args()
    for name in SETS:
        out = args.out / name
        if (out / "meta.json").exists() and not args.force:
            meta = json.loads((out / "meta.json").read_text())
        else:
            meta = build(name, out)
        print(f"{name:16} {meta['task']:10} rows {meta['rows']:6} "
              f"features {meta['features']:3} categorical {len(meta['categorical'])} "
              f"missing cells {meta['missing_cells']}")  # fmt: skip


if __name__ == "__main__":
    main()
