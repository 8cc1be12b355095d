"""Live observations: the SensorThings model and API over the observation store (schema `sensing`)."""
