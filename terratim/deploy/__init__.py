"""Deployment without the training stack: ONNX export of fine-tuned task models (see :mod:`terratim.deploy.onnx`)."""
