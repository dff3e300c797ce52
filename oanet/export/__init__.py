"""ONNX export of a trained OANet (``oanet export``); the exported file runs on :mod:`oanet.runtime`.

Needs torch and the ``deploy`` extra's ``onnx`` (the TorchScript exporter used here does not need ``onnxscript``,
which only torch's dynamo exporter does).
"""
