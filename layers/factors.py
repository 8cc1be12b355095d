"""The water-quality factors of HJ 212-2017 (附录B): each parameter's factor code, name, unit and the column-header
aliases seen in departments' tables (layers/data/hj212_factors.toml), shared by the file ETL and the observation
store."""

import tomllib
from functools import cache
from pathlib import Path

FACTORS = Path(__file__).parent / "data" / "hj212_factors.toml"


@cache
def factors() -> dict[str, dict]:
    """Field name -> {hj212, name, unit, aliases}."""
    with open(FACTORS, "rb") as f:
        return tomllib.load(f)["factors"]
