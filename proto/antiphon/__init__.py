"""The wire contract's Python package (stubs generated from proto/antiphon)."""
