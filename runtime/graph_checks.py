"""What load_bundle checks inside a graph, read from its bytes without onnx (which the lean runtime does not
install) and without running it: whether any tensor keeps its data in an external file (a scan of the protobuf wire
format), and whether the inputs and outputs onnxruntime reports are those of the graph's role."""

from __future__ import annotations

# Where onnx.proto lets a TensorProto appear, by message and field number; a tensor's field 13 (external_data) or
# 14 (data_location = 1, EXTERNAL) sends the reader to another file.
_CHILDREN = {
    "model": {7: "graph", 20: "training", 25: "function"},
    "training": {1: "graph", 2: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "function": {7: "node"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
}


def external_tensors(data: bytes) -> int:
    """How many tensors in an ONNX model (subgraphs and functions included) point at external data. ValueError if
    the protobuf is malformed."""
    count, stack = 0, [("model", memoryview(data))]
    while stack:
        kind, message = stack.pop()
        if kind == "tensor":
            count += any(number == 13 or (number == 14 and value == 1) for number, value in _wire_fields(message))
            continue
        for number, value in _wire_fields(message):
            if number in _CHILDREN[kind]:
                if not isinstance(value, memoryview):
                    raise ValueError(f"field {number} of a {kind} is not a message")
                stack.append((_CHILDREN[kind][number], value))
    return count


def _wire_fields(message: memoryview):
    """(field number, int or memoryview) for each field of one protobuf message."""
    position = 0
    while position < len(message):
        key, position = _varint(message, position)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, position = _varint(message, position)
        elif wire_type in (1, 5):
            value, position = None, position + (8 if wire_type == 1 else 4)
        elif wire_type == 2:
            length, position = _varint(message, position)
            value, position = message[position : position + length], position + length
        else:
            raise ValueError(f"wire type {wire_type} at byte {position}")
        if position > len(message):
            raise ValueError("a field runs past the end of its message")
        yield number, value


def _varint(message: memoryview, position: int) -> tuple[int, int]:
    result = 0
    for shift in range(0, 70, 7):
        if position >= len(message):
            raise ValueError("a number runs past the end of its message")
        byte = message[position]
        result |= (byte & 0x7F) << shift
        position += 1
        if byte < 0x80:
            return result, position
    raise ValueError("a number longer than 10 bytes")


def role_signature(role: str, image_shape: list[int], num_labels: int) -> tuple[list, list]:
    """(inputs, outputs) a role needs, as (name, element type, shape) with 'batch' for the dynamic first
    dimension."""
    image = ("tensor(float)", ["batch", *image_shape])
    x, t, v = ("x", *image), ("t", "tensor(int64)", ["batch"]), ("v", *image)
    return {
        "unet": ([x, t], [("eps", *image)]),
        "unet_folded": ([x], [("eps", *image)]),  # one timestep folded in
        "unet_vjp": ([x, t, v], [("grad", *image)]),
        "classifier": ([("images", *image)], [("logits", "tensor(float)", ["batch", num_labels])]),
    }[role]


def signature_mismatch(session, role: str, image_shape: list[int], num_labels: int) -> str | None:
    """None when an onnxruntime session's inputs and outputs are the role's, else 'expected ..., but it has ...'."""
    expected = role_signature(role, image_shape, num_labels)
    found = tuple(
        [
            (a.name, a.type, ["batch" if i == 0 and not isinstance(d, int) else d for i, d in enumerate(a.shape)])
            for a in args
        ]
        for args in (session.get_inputs(), session.get_outputs())
    )
    if found == expected:
        return None
    return f"expected {_describe(expected)}, but it has {_describe(found)}"


def _describe(signature: tuple[list, list]) -> str:
    inputs, outputs = (
        ", ".join(
            f"{n} ({', '.join(map(str, shape))}) {kind.removeprefix('tensor(').rstrip(')')}" for n, kind, shape in args
        )
        for args in signature
    )
    return f"inputs {inputs} -> outputs {outputs}"
