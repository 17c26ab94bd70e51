"""Deployment forms of the pipelines: ONNX graphs (`onnx`) and their onnxruntime runner (`runtime`)."""
