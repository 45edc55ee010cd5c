"""Export: checkpoint -> ONNX, ONNX -> TensorRT engine, and verification of one against another."""
