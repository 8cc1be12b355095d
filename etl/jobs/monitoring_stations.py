"""水质监测站点 (national, provincial and district stations)."""

LAYERS = ("monitoring_stations",)
ALIASES = {"站点代码": "code", "断面编码": "code", "站点名称": "name", "断面名称": "name", "所属河流": "water_body",
           "河流": "water_body", "湖库": "water_body", "目标类别": "target_class", "水质目标": "target_class"}
