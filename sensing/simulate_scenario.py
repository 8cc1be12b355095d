"""What the simulated district's instruments read: plausible values for Wuxi's rivers and dischargers, as pure
functions of the device, the factor and the simulated time (the same seed gives the same feeds).

- Rivers (GB 3838 class III-IV water, the usual state of Xinwu's canals): dissolved oxygen follows the
  photosynthesis cycle (lowest before dawn, highest mid-afternoon) and pH a little with it; water temperature
  follows the season.
- A rain event starts RAIN_AFTER into the run: for some hours the runoff raises turbidity, ammonia and total
  phosphorus and lowers dissolved oxygen, rising in an hour and fading over the next hours.
- A pollution episode at one discharger (chosen by the seed) from EPISODE_AFTER for EPISODE_HOURS: its COD and
  ammonia run at 1.3 to about 3 times the outlet's limit (sensing/data/online_factors.toml); the others stay within.
- One station (chosen by the seed) goes silent SILENT_AFTER into the run and sends nothing more.
"""

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sensing.sources import online_factors

CHINA = ZoneInfo("Asia/Shanghai")
RAIN_AFTER, RAIN_HOURS = timedelta(hours=2), 6.0
EPISODE_AFTER, EPISODE_HOURS = timedelta(hours=1), 3.0
SILENT_AFTER = timedelta(minutes=30)

# river baselines (class III-IV), per parameter: (mean, spread between stations, noise)
RIVER = {"do": (6.2, 0.8, 0.12), "ph": (7.6, 0.2, 0.03), "conductivity": (560.0, 90.0, 6.0),
         "turbidity": (28.0, 8.0, 1.5), "codmn": (4.8, 0.8, 0.15), "nh3n": (0.75, 0.3, 0.04),
         "tp": (0.16, 0.04, 0.01), "tn": (2.3, 0.5, 0.08)}
# a discharger's outlet within its limits, per factor: (mean, spread between sources, noise)
OUTLET = {"w01001": (7.4, 0.3, 0.05), "w01018": (28.0, 6.0, 1.5), "w21003": (1.6, 0.6, 0.1),
          "w21011": (0.22, 0.06, 0.02), "w21001": (8.5, 1.5, 0.3), "w00000": (14.0, 6.0, 1.0)}


@dataclass(frozen=True)
class Scenario:
    start: datetime  # the simulated clock's start
    seed: int
    episode_source: str | None  # the MN of the discharger with the pollution episode
    silent_station: str | None  # the code of the station that goes silent

    @classmethod
    def of(cls, start: datetime, seed: int, stations: list[str], sources: list[str]) -> "Scenario":
        pick = random.Random(seed)
        return cls(start, seed, pick.choice(sorted(sources)) if sources else None,
                   pick.choice(sorted(stations)) if stations else None)

    def _offset(self, device: str, name: str) -> float:
        """A fixed standard-normal offset of this device and parameter (stations differ, each stays itself)."""
        return random.Random(f"{self.seed}:{device}:{name}").gauss(0, 1)

    def _noise(self, device: str, name: str, moment: datetime) -> float:
        return random.Random(f"{self.seed}:{device}:{name}:{moment.timestamp()}").gauss(0, 1)

    def rain(self, moment: datetime) -> float:
        """The runoff's strength, 0..1: up within an hour of the rain's start, fading over RAIN_HOURS."""
        hours = (moment - self.start - RAIN_AFTER).total_seconds() / 3600
        if hours < 0 or hours > RAIN_HOURS + 6:
            return 0.0
        return min(hours, 1.0) * math.exp(-max(hours - 1.0, 0.0) / (RAIN_HOURS / 3))

    def episode(self, moment: datetime) -> bool:
        hours = (moment - self.start - EPISODE_AFTER).total_seconds() / 3600
        return 0 <= hours < EPISODE_HOURS

    def silent(self, station: str, moment: datetime) -> bool:
        return station == self.silent_station and moment >= self.start + SILENT_AFTER

    def river(self, station: str, field: str, moment: datetime) -> float | None:
        """A station's reading of parameter `field` at `moment` (None for a parameter it does not simulate)."""
        local = moment.astimezone(CHINA)
        hour = local.hour + local.minute / 60
        day_cycle = math.sin(2 * math.pi * (hour - 9) / 24)  # peak at 15:00, lowest at 03:00
        rain = self.rain(moment)
        if field == "water_temp":
            season = math.cos(2 * math.pi * (local.timetuple().tm_yday - 210) / 365)
            value = 17.5 + 11.5 * season + 0.8 * day_cycle + 0.3 * self._offset(station, field)
            return round(value + 0.05 * self._noise(station, field, moment), 1)
        if field not in RIVER:
            return None
        mean, spread, noise = RIVER[field]
        value = mean + spread * self._offset(station, field)
        if field == "do":
            value += 1.4 * day_cycle - 1.5 * rain
        elif field == "ph":
            value += 0.15 * day_cycle
        elif field == "turbidity":
            value *= 1 + 4.0 * rain
        elif field == "nh3n":
            value += 1.2 * rain
        elif field == "tp":
            value += 0.15 * rain
        elif field == "codmn":
            value += 2.0 * rain
        value += noise * self._noise(station, field, moment)
        return round(max(value, 0.05 * mean), 3 if mean < 1 else 2)

    def outlet(self, mn: str, code: str, moment: datetime) -> float | None:
        """A discharger's outlet reading of factor `code` at `moment`."""
        if code not in OUTLET:
            return None
        mean, spread, noise = OUTLET[code]
        value = mean + spread * 0.5 * self._offset(mn, code) + noise * self._noise(mn, code, moment)
        limit = online_factors().get(code, {}).get("limit")
        if limit is not None:
            value = min(value, 0.9 * limit)
            if mn == self.episode_source and self.episode(moment):
                value = limit * max(1.6 + 0.4 * abs(self._offset(mn, code)) + 0.1 * self._noise(mn, code, moment), 1.3)
        return round(max(value, 0.01), 2)
