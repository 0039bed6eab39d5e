"""ONNX export, static TensorRT checks, TensorRT engine build and the engine runtimes."""
