"""GCJ-02 and BD-09 (etl.offset): published reference pairs and round trips over the district.

Distances are geodesic, measured with pyproj.Geod on the WGS84 ellipsoid.
"""

import numpy as np
import pyproj
import pytest
import shapely

from etl.offset import (bd09_to_gcj02, bd09_to_wgs84, gcj02_to_bd09, gcj02_to_wgs84, transform_geometries,
                        wgs84_to_bd09, wgs84_to_gcj02)

GEOD = pyproj.Geod(ellps="WGS84")
DISTRICT = (120.30, 31.45, 120.60, 31.62)


def metres(lon1, lat1, lon2, lat2) -> np.ndarray:
    return np.asarray(GEOD.inv(lon1, lat1, lon2, lat2)[2])


# wandergis/coordtransform, test/app.js: results printed for the input (116.404, 39.915).
COORDTRANSFORM_INPUT = (116.404, 39.915)
COORDTRANSFORM_WGS84_TO_GCJ02 = (116.41024449916938, 39.91640428150164)
COORDTRANSFORM_GCJ02_TO_BD09 = (116.41036949371029, 39.92133699351021)
# Its inverses are the common closed-form approximations, good to about a metre, not exact solutions.
COORDTRANSFORM_GCJ02_TO_WGS84 = (116.39775550083061, 39.91359571849836)
COORDTRANSFORM_BD09_TO_GCJ02 = (116.39762729119315, 39.90865673957631)

# googollee/eviltransform, python/test.py, TESTS: (wgsLat, wgsLng, gcjLat, gcjLng), asserted there to 6 places.
EVILTRANSFORM = [
    (31.1774276, 121.5272106, 31.17530398364597, 121.531541859215),  # shanghai
    (22.543847, 113.912316, 22.540796131694766, 113.9171764808363),  # shenzhen
    (39.911954, 116.377817, 39.91334545536069, 116.38404722455657),  # beijing
]

# hujiulong/gcoord, test/fixtures/china-cities.json: (WGS84, GCJ02, BD09) of cities near Wuxi, 7 decimals
# (about 1 cm). gcoord checks them to 4 decimals; its WGS84/GCJ02 pairs sit about 0.7 m apart from the formula
# (they were taken from map services), its GCJ02/BD09 pairs agree with the formula to the rounding.
GCOORD_CITIES = {
    "泰州市": ((119.9183831, 32.4580023), (119.9231242, 32.4557802), (119.9296902, 32.4615531)),
    "铜陵市": ((117.8059091, 30.9477988), (117.8112693, 30.9455211), (117.8177498, 30.9515411)),
    "金华市": ((119.6427465, 29.0820414), (119.6474509, 29.0790641), (119.6538875, 29.0854003)),
}


def test_forward_formulas_match_coordtransform_exactly():
    assert np.allclose(wgs84_to_gcj02(*COORDTRANSFORM_INPUT), COORDTRANSFORM_WGS84_TO_GCJ02, rtol=0, atol=1e-12)
    assert np.allclose(gcj02_to_bd09(*COORDTRANSFORM_INPUT), COORDTRANSFORM_GCJ02_TO_BD09, rtol=0, atol=1e-12)


def test_inverses_agree_with_coordtransform_approximations_to_a_metre():
    assert metres(*gcj02_to_wgs84(*COORDTRANSFORM_INPUT), *COORDTRANSFORM_GCJ02_TO_WGS84) < 1.0
    assert metres(*bd09_to_gcj02(*COORDTRANSFORM_INPUT), *COORDTRANSFORM_BD09_TO_GCJ02) < 1.0
    # ours are exact: going forward again lands on the input, theirs do not
    assert metres(*wgs84_to_gcj02(*gcj02_to_wgs84(*COORDTRANSFORM_INPUT)), *COORDTRANSFORM_INPUT) < 0.001
    assert metres(*wgs84_to_gcj02(*COORDTRANSFORM_GCJ02_TO_WGS84), *COORDTRANSFORM_INPUT) > 0.01


@pytest.mark.parametrize("wgs_lat, wgs_lon, gcj_lat, gcj_lon", EVILTRANSFORM)
def test_eviltransform_pairs_both_ways(wgs_lat, wgs_lon, gcj_lat, gcj_lon):
    lon, lat = wgs84_to_gcj02(wgs_lon, wgs_lat)
    assert abs(lon - gcj_lon) < 1e-9 and abs(lat - gcj_lat) < 1e-9
    assert metres(*gcj02_to_wgs84(gcj_lon, gcj_lat), wgs_lon, wgs_lat) < 0.01


@pytest.mark.parametrize("city", GCOORD_CITIES)
def test_gcoord_city_pairs(city):
    wgs, gcj, bd = GCOORD_CITIES[city]
    assert metres(*gcj02_to_bd09(*gcj), *bd) < 0.02
    assert metres(*bd09_to_gcj02(*bd), *gcj) < 0.02
    assert metres(*wgs84_to_gcj02(*wgs), *gcj) < 1.0
    assert metres(*bd09_to_wgs84(*bd), *wgs) < 1.0


@pytest.fixture(scope="module")
def district_grid():
    lon, lat = np.meshgrid(np.linspace(DISTRICT[0], DISTRICT[2], 61), np.linspace(DISTRICT[1], DISTRICT[3], 35))
    return lon.ravel(), lat.ravel()


@pytest.mark.parametrize("forward, inverse", [(wgs84_to_gcj02, gcj02_to_wgs84), (wgs84_to_bd09, bd09_to_wgs84),
                                              (gcj02_to_bd09, bd09_to_gcj02)])
def test_round_trips_over_the_district_within_a_centimetre(district_grid, forward, inverse):
    lon, lat = district_grid
    shifted = forward(lon, lat)
    # the offset is real (hundreds of metres), and the inverse undoes it to well under a centimetre
    assert metres(*shifted, lon, lat).min() > 100
    assert metres(*inverse(*shifted), lon, lat).max() < 0.01
    # and the other way round: the inverse of a point, sent forward, is that point
    assert metres(*forward(*inverse(lon, lat)), lon, lat).max() < 0.01


def test_outside_china_nothing_moves():
    lon, lat = np.array([2.35, -74.0, 139.9]), np.array([48.85, 40.7, 35.7])  # Paris, New York, east of Tokyo
    assert np.array_equal(wgs84_to_gcj02(lon, lat), (lon, lat))
    assert np.array_equal(gcj02_to_wgs84(lon, lat), (lon, lat))


def test_geometries_convert_vertex_by_vertex():
    line = shapely.LineString([(120.35, 31.50), (120.40, 31.55), (120.45, 31.52)])
    [moved] = transform_geometries(np.array([line]), wgs84_to_gcj02)
    [back] = transform_geometries(np.array([moved]), gcj02_to_wgs84)
    expected = np.column_stack(wgs84_to_gcj02(*np.array(line.coords).T))
    assert np.allclose(np.array(moved.coords), expected, rtol=0, atol=1e-12)
    original, returned = np.array(line.coords), np.array(back.coords)
    assert metres(original[:, 0], original[:, 1], returned[:, 0], returned[:, 1]).max() < 0.01
