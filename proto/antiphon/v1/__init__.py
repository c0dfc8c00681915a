"""Generated stubs of antiphon.v1; regenerate with ``python proto/generate.py``, never edit by hand."""
