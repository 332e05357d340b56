"""Metering: token counting, usage read from answers (or estimated), and prices per model."""
