"""The OncoLens runtime: bundle contract, preprocessing, backends, sources, sinks, loop.

Never imports torch at module level: a Nano with only TensorRT, or a host with only
ONNX Runtime, uses this package without it.
"""
