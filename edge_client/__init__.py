"""antiphon's edge client: exported models (TFLite or ONNX) run with NumPy and no torch (``antiphon-edge``)."""
