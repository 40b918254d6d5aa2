"""Formats winspect recognises but does not read, so that a refusal names them.

When no loader takes a file or directory, the registry asks :func:`recognise_magic` (before
trusting a suffix), :func:`recognise_file` and :func:`recognise_dir` what it is, and the error says ``a TFLite flatbuffer: not read by
winspect`` instead of showing the first bytes. Recognition is by magic bytes where the
format has them, else by suffix or by the files a folder holds; nothing is parsed.
"""

from __future__ import annotations

from pathlib import Path

# (offset, magic, description) for formats with magic bytes
MAGICS = [
    (4, b"TFL3", "a TFLite flatbuffer"),
    (4, b"ORTM", "an ONNX Runtime .ort flatbuffer"),
    (4, b"ET12", "an ExecuTorch program (.pte)"),
    (0, b"lmgg", "a GGML file (the format before GGUF)"),
    (0, b"fmgg", "a GGML file (the format before GGUF)"),
    (0, b"tjgg", "a GGML file (the format before GGUF)"),
]
# suffix -> description, for formats without magic bytes (mostly protobuf)
SUFFIXES = {
    ".tflite": "a TFLite flatbuffer",
    ".mlmodel": "a Core ML model",
    ".pb": "a TensorFlow protobuf (GraphDef or SavedModel)",
    ".pbtxt": "a TensorFlow text protobuf",
    ".caffemodel": "a Caffe model",
    ".pdmodel": "a PaddlePaddle model",
    ".pdiparams": "PaddlePaddle parameters",
    ".engine": "a TensorRT engine",
    ".plan": "a TensorRT engine",
    ".trt": "a TensorRT engine",
    ".ort": "an ONNX Runtime .ort flatbuffer",
    ".pte": "an ExecuTorch program (.pte)",
    ".mnn": "an MNN model",
}
# a folder holding one of these files (or named with the suffix) -> description
FOLDERS = [
    (("saved_model.pb", "saved_model.pbtxt"), (), "a TensorFlow SavedModel folder"),
    (("Manifest.json",), (".mlpackage",), "a Core ML package"),
    (("coremldata.bin",), (".mlmodelc",), "a compiled Core ML model"),
]


def recognise_magic(head: bytes) -> str | None:
    """The format of a file no loader sniffs, known by its magic bytes (before any suffix is trusted)."""
    return next((what for offset, magic, what in MAGICS if head[offset : offset + len(magic)] == magic), None)


def recognise_file(path: Path, head: bytes) -> str | None:
    """What a file no loader reads is, when winspect knows the format; else None."""
    known = recognise_magic(head)
    if known:
        return known
    name = path.name.lower()
    if name.endswith(".xml") and b"<net" in head:
        return "an OpenVINO IR model"
    if ".data-" in name and "-of-" in name or name.endswith(".index") and head[:1] == b"\x00":
        return "a TensorFlow checkpoint"
    return next((what for suffix, what in SUFFIXES.items() if name.endswith(suffix)), None)


def recognise_dir(path: Path) -> str | None:
    """What a folder no loader reads is, when winspect knows the format; else None."""
    name = path.name.lower()
    for files, suffixes, what in FOLDERS:
        if any((path / f).is_file() for f in files) or name.endswith(suffixes or ("\0",)):
            return what
    if any(path.glob("*.index")) and any(path.glob("*.data-*-of-*")):
        return "a TensorFlow checkpoint folder"
    return None


def refusal(path: Path, what: str) -> str:
    return f"{path}: {what}: not read by winspect"
