"""Export to ONNX and TensorRT bundles."""
