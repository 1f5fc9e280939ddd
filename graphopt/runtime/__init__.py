"""onnxruntime: sessions, validation inputs, comparing outputs (lossless and lossy metrics)."""
