"""Administrative and management boundaries: districts, streets (街道) and grids (网格)."""

LAYERS = ("districts", "streets", "grids")
ALIASES = {"adcode": "code", "区划代码": "code", "行政区划代码": "code", "街道编码": "code", "网格编码": "code",
           "名称": "name"}
