"""The layer catalog: every built-in layer is there, well-formed and consistent."""

from layers.catalog import catalog
from layers.codes import CHECKS

BUILT_IN = {"districts", "streets", "grids", "roads", "rivers", "water_bodies", "city_components",
            "pollution_sources", "monitoring_stations", "water_quality", "imagery",
            "pipes", "manholes", "pump_stations", "treatment_plants", "outfalls", "gates",
            "radiation_points", "water_source_zones", "green_spaces", "river_chiefs", "river_chief_contacts",
            "cameras", "camera_streams"}


def test_built_in_layers_are_in_the_catalog():
    assert BUILT_IN <= set(catalog())


def test_specs_are_consistent():
    for spec in catalog().values():
        names = [f.name for f in spec.fields]
        assert len(names) == len(set(names)), spec.id
        assert spec.title.zh and spec.title.en and spec.department and spec.group
        assert spec.minzoom <= spec.maxzoom
        if spec.kind == "vector":
            assert spec.geometry and spec.key
        for key in spec.key:
            assert key in names and spec.field(key).required, (spec.id, key)
        for f in spec.fields:
            assert f.zh, (spec.id, f.name)
            if f.check:
                assert f.check in CHECKS, (spec.id, f.check)
            if f.min is not None and f.max is not None:
                assert f.min < f.max
        if spec.time_field:
            assert spec.field(spec.time_field).type == "timestamptz"


def test_domain_fields_are_validated():
    assert catalog()["city_components"].field("code").check == "component_code"
    assert catalog()["pollution_sources"].field("credit_code").check == "credit_code"
    assert catalog()["pollution_sources"].field("permit_class").values == ["重点管理", "简化管理", "登记管理"]
    assert catalog()["monitoring_stations"].field("evaluation_type").values == ["river", "lake"]
    assert catalog()["cameras"].field("device_id").check == "camera_id"
    assert catalog()["water_source_zones"].field("level").values == ["一级保护区", "二级保护区", "准保护区"]
    assert catalog()["river_chiefs"].field("level").values == ["区级", "街道级", "村级"]


def test_private_details_live_in_private_companions():
    for public, private in (("river_chiefs", "river_chief_contacts"), ("cameras", "camera_streams")):
        assert not catalog()[public].private and catalog()[private].private
        assert catalog()[public].department == catalog()[private].department
    assert not {"duty_phone", "office_phone"} & {f.name for f in catalog()["river_chiefs"].fields}
    assert not {"stream_url", "sub_stream_url"} & {f.name for f in catalog()["cameras"].fields}
