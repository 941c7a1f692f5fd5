"""Waste-container fill sensor: wake, measure, report, deep-sleep (battery powered)."""
