"""What ``load_bundle`` needs to know of an .onnx file before any backend opens it: the input
size of a bare export (no model.json) and whether an output comes from a Softmax.

Read straight from the file's protobuf, so that neither onnx nor ONNX Runtime loads the model
for it: the backend that runs the model is the only one to parse it (once), and a host with
neither package (a Nano with TensorRT only) still knows a bare export's input size. Only the
few fields below are decoded; the weights and everything else are skipped by their length
(the file is memory-mapped, not read whole). The field numbers are onnx.proto's, which
protobuf's compatibility rules keep fixed.
"""
import mmap

MODEL_GRAPH = 7                     # ModelProto.graph
GRAPH_NODE, GRAPH_INPUT = 1, 11     # GraphProto.node, GraphProto.input
VALUE_NAME, VALUE_TYPE = 1, 2       # ValueInfoProto.name, .type
TYPE_TENSOR = 1                     # TypeProto.tensor_type
TENSOR_SHAPE = 2                    # TypeProto.Tensor.shape
SHAPE_DIM = 1                       # TensorShapeProto.dim
DIM_VALUE = 1                       # TensorShapeProto.Dimension.dim_value
NODE_OUTPUT, NODE_OP_TYPE = 2, 4    # NodeProto.output, .op_type


def _varint(buf, pos):
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(buf, span):
    """(field number, value) for each field of the message at ``buf[start:end]``: a varint's
    value, a length-delimited field's (start, end); fixed-size fields give None."""
    pos, end = span
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            size, pos = _varint(buf, pos)
            value, pos = (pos, pos + size), pos + size
        elif wire in (1, 5):
            value, pos = None, pos + (8 if wire == 1 else 4)
        else:  # groups (3, 4) are not used in onnx.proto
            raise ValueError("wire type {} at byte {}".format(wire, pos))
        if pos > end:
            raise ValueError("a field runs past the end of its message")
        yield number, value


def _last(buf, span, number):
    """The field's value (the last one, as protobuf reads a repeated singular field), or None."""
    found = None
    for field, value in _fields(buf, span):
        if field == number:
            found = value
    return found


def _text(buf, span):
    return buf[span[0]:span[1]].decode("utf-8", "replace")


def _dims(buf, value_info):
    """A graph input's dimensions: ints, None for a symbolic one; None when it has no shape."""
    spans = [value_info]
    for number in (VALUE_TYPE, TYPE_TENSOR, TENSOR_SHAPE):
        spans.append(_last(buf, spans[-1], number))
        if spans[-1] is None:
            return None
    dims = []
    for field, dim in _fields(buf, spans[-1]):
        if field == SHAPE_DIM:
            value = _last(buf, dim, DIM_VALUE)
            dims.append(value if value is not None and value < 1 << 63 else None)
    return dims


class OnnxInfo(object):
    """``inputs``: {name: dims}; ``producers``: {tensor name: op_type of the node making it}."""

    def __init__(self, inputs, producers):
        self.inputs = inputs
        self.producers = producers

    def input_shape(self, input_name):
        """[C, H, W] of input ``input_name`` when the file fixes it, else None."""
        dims = self.inputs.get(input_name)
        if not dims or len(dims) != 4 or not all(isinstance(v, int) and v > 0
                                                 for v in dims[1:]):
            return None
        return [int(v) for v in dims[1:]]

    def output_activation(self, output_name):
        """'softmax' when ``output_name`` comes straight from a Softmax node, 'none' when from
        another node, None when no node makes it."""
        op_type = self.producers.get(output_name)
        if op_type is None:
            return None
        return "softmax" if op_type == "Softmax" else "none"


def _read(buf):
    graph = _last(buf, (0, len(buf)), MODEL_GRAPH)
    if graph is None:
        raise ValueError("no graph")
    inputs, producers = {}, {}
    for field, span in _fields(buf, graph):
        if field == GRAPH_INPUT:
            name = _last(buf, span, VALUE_NAME)
            inputs[_text(buf, name) if name else ""] = _dims(buf, span)
        elif field == GRAPH_NODE:
            op_type = _last(buf, span, NODE_OP_TYPE)
            for number, out in _fields(buf, span):
                if number == NODE_OUTPUT:
                    producers[_text(buf, out)] = _text(buf, op_type) if op_type else ""
    return OnnxInfo(inputs, producers)


def read_onnx_info(path):
    """The OnnxInfo of the .onnx file at ``path``, or None when it cannot be read as one
    (the backend that opens it then says why, in its own words)."""
    try:
        with open(path, "rb") as fh:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
            try:
                return _read(buf)
            finally:
                buf.close()
    except (EnvironmentError, ValueError, IndexError):  # unreadable, empty, not protobuf
        return None
