"""Rivers, canals and water bodies from the water-resources bureau; lines drawn in flow direction."""

LAYERS = ("rivers", "water_bodies")
ALIASES = {"河流编码": "code", "河道名称": "name", "河流名称": "name", "等级": "river_class", "宽度": "width_m"}
