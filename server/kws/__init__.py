"""Keyword spotting: one second of 16 kHz audio -> zero..nine, unknown, silence."""
