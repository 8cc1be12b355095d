"""River chiefs (河长制): every river of the district under chiefs at the levels Jiangsu practises. The canal and the
main rivers have a 区级 chief for their whole course in the district and a 街道级 chief for each street's stretch;
branches have 街道级 chiefs, ditches 村级 ones. The chiefs' duty phones go to a separate (private) table.
"""

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely

from etl.sample.geo import linear
from etl.sample.real import DISTRICT_CODE
from etl.sample.rivers import River

WHOLE_RIVER = ("流域性河道", "骨干河道")  # these have a 区级 chief besides their street ones
VILLAGE_LEVEL = ("沟渠",)
MIN_REACH = 200.0  # metres: shorter stretches of a river in a street are left to the neighbouring chief
POSTS = {"区级": ["区委副书记", "副区长", "区人大常委会副主任", "区政协副主席", "区委常委"],
         "街道级": ["街道党工委书记", "街道办事处主任", "街道党工委副书记", "街道办事处副主任"],
         "村级": ["村党委书记", "社区党委书记", "村委会主任"]}
SURNAMES = "王李张刘陈杨黄赵吴周徐孙朱马胡郭林何高罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁任沈姚卢钱顾"
GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华建国志红文斌晓云峰海燕鹏飞玲雪梅亮浩宇欣怡思远立新卫东振宁"
VILLAGES = ["新光", "伯渎", "梅里", "长安", "春潮", "新华", "金城", "锡梅", "鸿声", "后宅", "坊前", "南星", "薛典", "新友",
            "泰伯", "高浪", "蠡塘", "华庄", "周泾", "旺庄"]
OFFICE = "新吴区河长办"
OFFICE_PHONE = "0510-81190000"


def chiefs(rivers: list[River], streets: gpd.GeoDataFrame, district: shapely.Polygon,
           rng: np.random.Generator) -> tuple[gpd.GeoDataFrame, gpd.GeoDataFrame]:
    """(reaches with their chiefs, the chiefs' contacts)."""
    people = _People(rng)
    district_chiefs = [people.new("区级", None) for _ in range(5)]
    street_chiefs = {code: [people.new("街道级", (code, name)) for _ in range(3)]
                     for code, name in zip(streets["code"], streets["name"])}
    records, geoms = [], []
    whole = 0
    for r, river in enumerate(rivers):
        course = linear(shapely.intersection(river.line, district), MIN_REACH)
        pieces = [] if course.is_empty else [(None, "新吴区", course)] if river.river_class in WHOLE_RIVER else []
        for code, name, area in zip(streets["code"], streets["name"], streets.geometry.values):
            stretch = linear(shapely.intersection(course, area), MIN_REACH)
            if not stretch.is_empty:
                pieces.append(((code, name), name, stretch))
        for k, (street, place, line) in enumerate(pieces, start=1):
            if street is None:
                chief, whole = district_chiefs[whole % len(district_chiefs)], whole + 1
            elif river.river_class in VILLAGE_LEVEL:
                chief, place = people.new("村级", street), f"{rng.choice(VILLAGES)}村"
            else:
                chief = street_chiefs[street[0]][int(rng.integers(3))]
            records.append(_reach(river, r, k, place, line, chief, street and street[0]))
            geoms.append(line)
    reaches = gpd.GeoDataFrame(records, geometry=geoms)
    reaches["appointed_on"] = pd.to_datetime(reaches["appointed_on"]).astype("datetime64[ms]")
    return reaches, _contacts(reaches, people)


def _reach(river: River, r: int, k: int, place: str, line, chief: dict, street: str | None) -> dict:
    return {"code": f"{DISTRICT_CODE}HD{r:03d}-{k:03d}", "river_code": f"XWHD{r:03d}", "river_name": river.name,
            "reach_name": f"{river.name}（{place}段）", "level": chief["level"], "chief_code": chief["chief_code"],
            "chief_name": chief["chief_name"], "chief_post": chief["post"], "street_code": street,
            "length_km": round(line.length / 1000, 3), "appointed_on": chief["appointed_on"]}


def _contacts(reaches: gpd.GeoDataFrame, people: "_People") -> gpd.GeoDataFrame:
    """One row per chief with a reach, drawn along all of the chief's reaches."""
    held = reaches.groupby("chief_code", sort=True).geometry.agg(lambda g: linear(shapely.union_all(g.values)))
    rows = [people.contact(code) for code in held.index]
    return gpd.GeoDataFrame(rows, geometry=list(held.values))


class _People:
    """Chiefs with unique codes and names, and a mobile phone each."""

    def __init__(self, rng: np.random.Generator):
        self.rng, self.by_code, self.names = rng, {}, set()

    def new(self, level: str, street: tuple[str, str] | None) -> dict:
        """A chief of a level, in a street (code, name) or, for 区级, the whole district."""
        while (name := self._name()) in self.names:
            pass
        self.names.add(name)
        code = f"{DISTRICT_CODE}HZ{len(self.by_code) + 1:04d}"
        year = int(self.rng.integers(2017, 2026))
        chief = {"level": level, "chief_code": code, "chief_name": name, "post": str(self.rng.choice(POSTS[level])),
                 "street": street, "appointed_on": f"{year}-{int(self.rng.integers(1, 13)):02d}-01",
                 "phone": f"1{self.rng.choice(['39', '38', '37', '58', '80', '89'])}{self.rng.integers(0, 10**8):08d}"}
        self.by_code[code] = chief
        return chief

    def contact(self, code: str) -> dict:
        chief = self.by_code[code]
        street = chief["street"]
        office, phone = (OFFICE, OFFICE_PHONE) if street is None else (f"{street[1]}河长办", f"0510-8529{street[0][-4:]}")
        return {"chief_code": code, "chief_name": chief["chief_name"], "duty_phone": chief["phone"],
                "office": office, "office_phone": phone}

    def _name(self) -> str:
        given = "".join(self.rng.choice(list(GIVEN), int(self.rng.integers(1, 3))))
        return str(self.rng.choice(list(SURNAMES))) + given
