"""antiphon: a streaming generation server (text and audio) with an edge client."""

__version__ = "0.1.0"
