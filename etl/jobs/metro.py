"""Metro stations and lines (transport)."""

LAYERS = ("metro_stations", "metro_lines")
ALIASES = {"id": "code", "线路": "lines", "line": "name"}
