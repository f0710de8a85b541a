"""The lean runtime (numpy and onnxruntime, no torch): bundles, the Defender, its elementwise steps."""
