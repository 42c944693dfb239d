"""Model backends behind the manifesting engine's ports: ONNX Runtime, OpenCV DNN, Gemini."""
