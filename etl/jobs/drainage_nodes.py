"""The drainage network's nodes from the water authority: manholes (检查井), pump stations (泵站),
treatment plants (污水处理厂), outfalls (排口) and gates (闸站). Load them before the pipes that join
them (etl.jobs.drainage_pipes); a nodes file of the two-file form (nodes + links by node codes) is
one of these layers' files."""

LAYERS = ("manholes", "pump_stations", "treatment_plants", "outfalls", "gates")
ALIASES = {"井编号": "code", "井号": "code", "节点编号": "code", "点号": "code", "编号": "code", "名称": "name",
           "类别": "kind", "井类型": "kind", "地面高程": "ground_m", "井深": "depth_m", "部件编码": "component_code",
           "受纳水体编码": "river_code", "河道编码": "river_code", "闸站类型": "gate_type", "节点": "node_code"}
