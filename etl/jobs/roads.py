"""Road centre lines."""

LAYERS = ("roads",)
ALIASES = {"道路名称": "name", "路名": "name", "等级": "road_class"}
