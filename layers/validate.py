"""Validation of incoming features against a layer's spec, shared by the ETL and API writes.

Works column-wise on a DataFrame so a million rows validate in seconds. Every
rejected row gets a reason a person can act on; nothing is silently altered: the
only change made to a usable row is the repair of an invalid geometry, which is
counted and reported.
"""

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import shapely

from layers.catalog import LayerSpec
from layers.codes import CHECKS, SURELY_VALID

# Where a layer's data may plausibly lie (Wuxi and its surroundings, lon/lat): anything far
# outside is a CRS mistake, not a feature of the district.
MAX_REPAIR_VERTICES = 10_000  # repairing costs far more than checking: bound it
PLAUSIBLE_EXTENT = (119.3, 30.8, 121.0, 32.2)

_TRUE = {"true", "t", "1", "yes", "y", "是", "√", "✓"}
_FALSE = {"false", "f", "0", "no", "n", "否", "×", ""}
_MULTI = {"MultiPolygon": "Polygon", "MultiLineString": "LineString", "MultiPoint": "Point"}


@dataclass
class Validated:
    frame: pd.DataFrame  # usable rows, typed, with a `geom` column of shapely geometries when spatial
    rejects: dict[int, str] = field(default_factory=dict)  # row label -> reason
    repaired: int = 0
    repairs: dict[int, str] = field(default_factory=dict)  # row label -> what was wrong with its geometry


def _coerce(column: pd.Series, kind: str) -> pd.Series:
    """Typed values, <NA> where a present value cannot be read as `kind`."""
    if kind == "text":
        return column.astype("string").str.strip()
    if kind in ("integer", "real"):
        numbers = pd.to_numeric(column.astype("string").str.strip(), errors="coerce")
        if kind == "integer":
            numbers = numbers.where(numbers.isna() | (numbers == np.floor(numbers)))
            return numbers.astype("Int64")
        return numbers.astype("Float64")
    if kind == "boolean":
        text = column.astype("string").str.strip().str.lower()
        return text.map(lambda v: True if v in _TRUE else False if v in _FALSE else pd.NA,
                        na_action="ignore").astype("boolean")
    if kind == "date":
        return pd.to_datetime(column, errors="coerce", format="mixed").dt.date.astype("object")
    if kind == "timestamptz":
        text = column.astype("string").str.strip()
        aware = text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True, na=False)
        stamps = pd.Series(pd.NaT, index=column.index, dtype="datetime64[ns, UTC]")
        if aware.any():
            stamps[aware] = pd.to_datetime(text[aware], errors="coerce", format="mixed", utc=True)
        naive = ~aware & text.notna()
        if naive.any():  # times without an offset are Beijing time, the district's clock
            local = pd.to_datetime(text[naive], errors="coerce", format="mixed")
            stamps[naive] = local.dt.tz_localize("Asia/Shanghai", ambiguous="NaT", nonexistent="NaT").dt.tz_convert("UTC")
        return stamps
    raise ValueError(kind)


def _reject(rejects: dict[int, str], labels, reason) -> None:
    for label in labels:
        rejects.setdefault(label, reason if isinstance(reason, str) else reason(label))


def _typed(f, frame: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    """A field's raw values, whether each is blank, and its typed values (<NA> when blank or unreadable)."""
    raw = frame[f.name] if f.name in frame else pd.Series(pd.NA, index=frame.index, dtype="object")
    text = raw.astype("string").str.strip()
    blank = raw.isna() | text.eq("").fillna(False)
    return raw, blank, text.mask(blank) if f.type == "text" else _coerce(raw.mask(blank), f.type)


def _check_fields(spec: LayerSpec, frame: pd.DataFrame, rejects: dict[int, str]) -> pd.DataFrame:
    typed = pd.DataFrame(index=frame.index)
    for f in spec.fields:
        raw, blank, value = _typed(f, frame)
        label = f"{f.zh} ({f.name})"
        if f.required:
            _reject(rejects, frame.index[blank], f"{label} is required but empty")
        bad = ~blank & value.isna()
        _reject(rejects, frame.index[bad], lambda i, f=f, label=label:
                f"{label}: cannot read {raw[i]!r} as {f.type}")
        present = ~value.isna()
        if f.values is not None:
            outside = present & ~value.astype("string").isin(f.values)
            _reject(rejects, frame.index[outside], lambda i, f=f, label=label:
                    f"{label}: {value[i]!r} is not one of {', '.join(f.values)}")
        if f.min is not None or f.max is not None:
            low = present & (value < f.min) if f.min is not None else pd.Series(False, index=frame.index)
            high = present & (value > f.max) if f.max is not None else pd.Series(False, index=frame.index)
            unit = f" {f.unit}" if f.unit else ""
            span = (f"{f.min:g}–{f.max:g}" if f.min is not None and f.max is not None
                    else f"≥ {f.min:g}" if f.min is not None else f"≤ {f.max:g}")
            _reject(rejects, frame.index[(low | high).fillna(False)], lambda i, label=label, unit=unit, span=span:
                    f"{label}: {value[i]}{unit} is outside the plausible range {span}{unit}")
        if f.check:
            check, doubtful = CHECKS[f.check], present.to_numpy(dtype=bool, copy=True)
            if f.check in SURELY_VALID:
                doubtful &= ~SURELY_VALID[f.check](value)
            for i, v in zip(frame.index[doubtful], value[doubtful].tolist()):
                problem = check(v)
                if problem:
                    rejects.setdefault(i, f"{label}: {problem}")
        typed[f.name] = value
    return typed


def _joined(spec: LayerSpec, typed: pd.DataFrame) -> pd.Series:
    """Each row's key as one text, <NA> when a part of it is missing."""
    parts = typed[spec.key].astype("string")
    joined = parts[spec.key[0]]
    for k in spec.key[1:]:
        joined = joined + "\x1f" + parts[k]
    return joined


def keys(spec: LayerSpec, frame: pd.DataFrame) -> pd.Series:
    """The rows' keys (raw values, columns named by field) as validation compares them: typed, joined, <NA> when
    a part is missing; for finding the keys a large input repeats before validating it in pieces."""
    fields = {f.name: f for f in spec.fields}
    return _joined(spec, pd.DataFrame({k: _typed(fields[k], frame)[2] for k in spec.key}, index=frame.index))


def _check_keys(spec: LayerSpec, typed: pd.DataFrame, rejects: dict[int, str], repeated: set[str] | None) -> None:
    joined = _joined(spec, typed)
    if spec.kind == "series" and repeated is None:
        # published readings repeat a station's time (a file re-issues its last hours): the last usable row of a
        # key is loaded, the earlier ones are quarantined as superseded. Series are validated whole (their
        # jobs enrich the whole input), so "last" is known here.
        usable = joined[~joined.index.isin(list(rejects)) & joined.notna()]
        _reject(rejects, usable.index[usable.duplicated(keep="last")], lambda i: "superseded: a later row of "
                "this input has the same " + ", ".join(f"{k}={typed.at[i, k]}" for k in spec.key)
                + "; for readings the last row wins")
        return
    repeats = joined.duplicated(keep=False) if repeated is None else joined.isin(repeated)
    duplicated = repeats & joined.notna()
    _reject(rejects, typed.index[duplicated], lambda i: "duplicate key "
            + ", ".join(f"{k}={typed.at[i, k]}" for k in spec.key)
            + " appears more than once in this input; keep one row per key")


def _extent_reason(geom) -> str:
    x0, y0, x1, y1 = geom.bounds
    ex0, ey0, ex1, ey1 = PLAUSIBLE_EXTENT
    where = f"lands at ({x0:.4f}, {y0:.4f}), far outside the district's area ({ex0}–{ex1}E, {ey0}–{ey1}N)"
    if ey0 <= x0 <= ey1 and ex0 <= y0 <= ex1:
        return f"geometry {where}: the axes look swapped (latitude given as x); swap them or fix the CRS"
    if abs(x0) > 180 or abs(y0) > 90:
        return (f"geometry {where}: these look like projected metres read as degrees; give the file's CRS "
                "(e.g. --crs EPSG:4549 for CGCS2000 3° Gauss-Krüger CM 120E, or EPSG:4528 when eastings carry the zone prefix 40)")
    return f"geometry {where}: check the coordinate system (WGS84, CGCS2000, GCJ02, BD09 or a projected CRS)"


def _check_geometry(spec: LayerSpec, geoms: pd.Series, rejects: dict[int, str]) -> tuple[pd.Series, dict[int, str]]:
    values = np.array(geoms, dtype=object)
    missing = shapely.is_missing(values) | shapely.is_empty(values)
    _reject(rejects, geoms.index[missing], "geometry is missing or empty")
    ok = ~missing
    coords, owner = shapely.get_coordinates(values[ok], return_index=True)
    nonfinite = np.zeros(len(values), dtype=bool)
    nonfinite[np.flatnonzero(ok)[np.unique(owner[~np.isfinite(coords).all(axis=1)])]] = True
    _reject(rejects, geoms.index[nonfinite], "geometry has NaN or infinite coordinates")
    ok &= ~nonfinite
    raised = ok & shapely.has_z(values)
    values[raised] = shapely.force_2d(values[raised])  # layers are 2D; callers report dropped heights
    if spec.geometry == "Point":  # a one-point MultiPoint (common in Shapefiles) is that point
        lone = ok & (shapely.get_type_id(values) == shapely.GeometryType.MULTIPOINT.value) \
            & (shapely.get_num_geometries(values) == 1)
        values[lone] = shapely.get_geometry(values[lone], 0)
    wanted = {spec.geometry, _MULTI.get(spec.geometry)} - {None}
    wanted_ids = [shapely.GeometryType[name.upper()].value for name in wanted]
    wrong = ok & ~np.isin(shapely.get_type_id(values), wanted_ids)
    _reject(rejects, geoms.index[wrong], lambda i: f"geometry is a {geoms[i].geom_type}; layer '{spec.id}' "
            f"holds {spec.geometry} features")
    ok &= ~wrong
    invalid = ok & ~shapely.is_valid(values)
    repairs = {}
    for pos in np.flatnonzero(invalid):
        vertices = shapely.get_num_coordinates(values[pos])
        if vertices > MAX_REPAIR_VERTICES:
            rejects.setdefault(geoms.index[pos], f"geometry is invalid ({shapely.is_valid_reason(values[pos])}) "
                               f"and has too many vertices ({vertices}) to repair automatically; fix it at the source")
            ok[pos] = False
            continue
        # 'structure' (GEOS's GeometryFixer): linework's repair grows with the square of the self-intersections
        # (a 10,000-vertex zigzag ring: 21 s against 0.5 s)
        fixed = shapely.make_valid(values[pos], method="structure")
        # keep the repair only if it is still the layer's kind of geometry
        if fixed.geom_type == "GeometryCollection":
            parts = [g for g in fixed.geoms if g.geom_type in wanted or g.geom_type == spec.geometry]
            fixed = shapely.union_all(parts) if parts else fixed
        if fixed.is_empty or fixed.geom_type not in wanted:
            rejects.setdefault(geoms.index[pos], "geometry is invalid and cannot be repaired without changing "
                               f"its kind ({shapely.is_valid_reason(values[pos])})")
            ok[pos] = False
        else:
            repairs[geoms.index[pos]] = f"invalid geometry repaired by make_valid ({shapely.is_valid_reason(values[pos])})"
            values[pos] = fixed
    bounds = shapely.bounds(values[ok]) if ok.any() else np.empty((0, 4))
    ex0, ey0, ex1, ey1 = PLAUSIBLE_EXTENT
    far = (bounds[:, 2] < ex0) | (bounds[:, 0] > ex1) | (bounds[:, 3] < ey0) | (bounds[:, 1] > ey1)
    for pos in np.flatnonzero(ok)[far]:
        rejects.setdefault(geoms.index[pos], _extent_reason(values[pos]))
    if spec.geometry in _MULTI:
        single = shapely.get_type_id(values) == shapely.GeometryType[_MULTI[spec.geometry].upper()].value
        for pos in np.flatnonzero(single):
            values[pos] = getattr(shapely, spec.geometry)([values[pos]])
    return pd.Series(values, index=geoms.index, dtype=object), repairs


def validate(spec: LayerSpec, frame: pd.DataFrame, geometry: pd.Series | None = None,
             repeated: set[str] | None = None) -> Validated:
    """Check `frame` (raw values, columns named by field) and its geometries (lon/lat in the storage CRS).
    `frame` may be a piece of a larger input: then `repeated` holds the keys (see `keys`) the whole input
    gives more than once, and rows with those keys are rejected as duplicates."""
    rejects: dict[int, str] = {}
    typed = _check_fields(spec, frame, rejects)
    _check_keys(spec, typed, rejects, repeated)
    repairs: dict[int, str] = {}
    if spec.geometry:
        if geometry is None:
            geometry = pd.Series(None, index=frame.index, dtype=object)
        typed["geom"], repairs = _check_geometry(spec, geometry, rejects)
    repairs = {label: why for label, why in repairs.items() if label not in rejects}
    usable = typed.drop(index=list(rejects))
    return Validated(usable, rejects, len(repairs), repairs)
