"""The city-management case loop: cases, routing, stages, Open311."""
