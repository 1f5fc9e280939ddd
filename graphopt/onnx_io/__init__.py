"""ONNX in and out: load a file or ModelProto into the IR, emit the IR as a checked file, write
it safely, the protobuf wire format, external data, opset conversion."""
