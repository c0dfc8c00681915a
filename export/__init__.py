"""Export: torch models to ONNX and TFLite files (float and int8) with parity checks and a manifest.

``antiphon export`` runs :func:`export.pipeline.export_models`; the files and ``manifest.json`` it writes are all
the edge client needs, with no torch.
"""
