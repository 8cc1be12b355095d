"""Column headers of departments' water-quality tables mapped to our field names, by the HJ 212-2017 factor
codes and aliases of layers.factors."""

from functools import cache

from layers.factors import factors


@cache
def factor_aliases() -> dict[str, str]:
    """Lower-cased header alias, field name or HJ 212 code -> field name."""
    out = {}
    for field, f in factors().items():
        for alias in [field, f["hj212"], *f["aliases"]]:
            out[alias.lower()] = field
    return out
