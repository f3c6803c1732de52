"""A minimal reader for MATLAB level-5 ``.mat`` files (what MATLAB writes with ``-v6`` / ``-v7``).

Only what the dataset annotation files need: numeric arrays, char arrays, cell arrays and
struct arrays, compressed (``miCOMPRESSED``, the MATLAB default) or not, either byte order.
MATLAB v7.3 files are HDF5 containers and are refused with a message saying how to re-save.

Values come back as plain Python objects, flattened in MATLAB's column-major order:

- numeric / logical array -> ``list`` of ``int`` / ``float`` (a 1x1 array is a one-element list)
- char array              -> ``str`` (one row), or ``list[str]`` (several rows)
- cell array              -> ``list`` of values
- struct (or object) array -> ``list`` of ``dict`` (field name -> value)
- anything else (sparse arrays, function handles) -> ``None``

Array shapes are dropped: the annotation files only hold vectors and 1x1 scalars.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import GcplError

# Data element types (MAT-file format, table 1-1).
_NUMERIC_DTYPES = {
    1: "i1",  # miINT8
    2: "u1",  # miUINT8
    3: "i2",  # miINT16
    4: "u2",  # miUINT16
    5: "i4",  # miINT32
    6: "u4",  # miUINT32
    7: "f4",  # miSINGLE
    9: "f8",  # miDOUBLE
    12: "i8",  # miINT64
    13: "u8",  # miUINT64
}
_MI_MATRIX = 14
_MI_COMPRESSED = 15
_MI_UTF8 = 16
_MI_UTF16 = 17
_MI_UTF32 = 18

# Array classes (table 1-3).
_MX_CELL = 1
_MX_STRUCT = 2
_MX_OBJECT = 3
_MX_CHAR = 4
_MX_NUMERIC = set(range(6, 16))  # double, single, int8 .. uint64

_FLAG_COMPLEX = 0x0800


class _Malformed(Exception):
    pass


class _Reader:
    def __init__(self, order: str):
        self.order = order  # "<" or ">"

    # -- data elements -------------------------------------------------------------
    def element(self, buf: bytes, pos: int, *, top: bool = False) -> tuple[int, bytes, int]:
        """Read the data element at `pos`: (type, payload, position of the next element)."""
        if pos + 8 > len(buf):
            raise _Malformed(f"truncated data element tag at byte {pos}")
        (first,) = struct.unpack_from(self.order + "I", buf, pos)
        if first >> 16:  # small data element: type and size packed in 4 bytes, data in the next 4
            mtype, n = first & 0xFFFF, first >> 16
            if n > 4:
                raise _Malformed(f"bad small data element at byte {pos}")
            return mtype, buf[pos + 4 : pos + 4 + n], pos + 8
        (n,) = struct.unpack_from(self.order + "I", buf, pos + 4)
        start, end = pos + 8, pos + 8 + n
        if end > len(buf):
            raise _Malformed(f"data element at byte {pos} runs past the end of the file")
        if top and first == _MI_COMPRESSED:
            nxt = end  # compressed top-level elements are not padded
        else:
            nxt = start + ((n + 7) // 8) * 8
        return first, buf[start:end], nxt

    def numbers(self, mtype: int, data: bytes) -> list:
        code = _NUMERIC_DTYPES.get(mtype)
        if code is None:
            raise _Malformed(f"unexpected data type {mtype} for numeric data")
        dtype = np.dtype(code).newbyteorder(self.order)
        if len(data) % dtype.itemsize:
            raise _Malformed("numeric data size is not a multiple of its element size")
        return np.frombuffer(data, dtype=dtype).tolist()

    def text(self, mtype: int, data: bytes) -> str:
        if mtype in (_MI_UTF8, 1, 2):
            return data.decode("utf-8", errors="replace")
        if mtype in (_MI_UTF16, 4, 3):
            return data.decode("utf-16-le" if self.order == "<" else "utf-16-be", errors="replace")
        if mtype in (_MI_UTF32, 6, 5):
            return data.decode("utf-32-le" if self.order == "<" else "utf-32-be", errors="replace")
        raise _Malformed(f"unexpected data type {mtype} for character data")

    # -- arrays --------------------------------------------------------------------
    def matrix(self, body: bytes) -> tuple[str, Any]:
        """Parse the payload of an miMATRIX element: (array name, value)."""
        if not body:  # an empty cell / field
            return "", []
        ftype, fdata, pos = self.element(body, 0)
        if ftype != 6 or len(fdata) < 4:
            raise _Malformed("array flags missing")
        (flags,) = struct.unpack_from(self.order + "I", fdata, 0)
        cls = flags & 0xFF
        dtype_, ddata, pos = self.element(body, pos)
        dims = [int(d) for d in self.numbers(dtype_, ddata)]
        count = 1
        for d in dims:
            count *= d
        ntype, ndata, pos = self.element(body, pos)
        name = bytes(ndata).decode("latin-1")

        if cls in _MX_NUMERIC:
            rtype, rdata, pos = self.element(body, pos)
            values = self.numbers(rtype, rdata)
            if flags & _FLAG_COMPLEX:
                itype, idata, pos = self.element(body, pos)
                imag = self.numbers(itype, idata)
                values = [complex(r, i) for r, i in zip(values, imag)]
            if len(values) != count:
                raise _Malformed(f"array {name!r} holds {len(values)} values for shape {dims}")
            return name, values
        if cls == _MX_CHAR:
            if count == 0:
                return name, ""
            ctype, cdata, pos = self.element(body, pos)
            chars = self.text(ctype, cdata)
            rows = dims[0] if dims else 1
            if len(chars) != count:
                raise _Malformed(f"char array {name!r} holds {len(chars)} characters for shape {dims}")
            if rows == 1:
                return name, chars
            return name, ["".join(chars[r::rows]) for r in range(rows)]
        if cls == _MX_CELL:
            out = []
            for _ in range(count):
                etype, edata, pos = self.element(body, pos)
                if etype != _MI_MATRIX:
                    raise _Malformed(f"cell array {name!r} holds a non-array element")
                out.append(self.matrix(edata)[1])
            return name, out
        if cls in (_MX_STRUCT, _MX_OBJECT):
            if cls == _MX_OBJECT:
                _, _, pos = self.element(body, pos)  # class name
            ltype, ldata, pos = self.element(body, pos)
            (flen,) = self.numbers(ltype, ldata)
            _, fdata, pos = self.element(body, pos)
            raw = bytes(fdata)
            fields = [
                raw[i : i + flen].split(b"\0", 1)[0].decode("latin-1") for i in range(0, len(raw), flen)
            ] if flen else []
            out = []
            for _ in range(count):
                row = {}
                for f in fields:
                    etype, edata, pos = self.element(body, pos)
                    if etype != _MI_MATRIX:
                        raise _Malformed(f"struct array {name!r} field {f!r} is not an array")
                    row[f] = self.matrix(edata)[1]
                out.append(row)
            return name, out
        # sparse arrays, function handles, ...: not needed by any loader; the element's length
        # is known, so skipping it keeps the other variables readable
        return name, None


def loadmat(path: str | Path) -> dict[str, Any]:
    """Read every named variable of a level-5 MAT file into plain Python values (see module doc)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise GcplError(f"cannot read {path}: {e.strerror or e}") from None
    head = data[:116]
    if data[:4] == b"\x89HDF" or b"MATLAB 7.3" in head:
        raise GcplError(
            f"{path} is a MATLAB v7.3 (HDF5) file, which gcpl does not read; "
            f"re-save it in MATLAB with save(..., '-v7')"
        )
    if len(data) < 128 or data[126:128] not in (b"IM", b"MI"):
        raise GcplError(f"{path} is not a MATLAB level-5 .mat file (bad header)")
    reader = _Reader("<" if data[126:128] == b"IM" else ">")
    out: dict[str, Any] = {}
    pos = 128
    try:
        while pos + 8 <= len(data):
            mtype, payload, pos = reader.element(data, pos, top=True)
            if mtype == _MI_COMPRESSED:
                try:
                    inner = zlib.decompress(payload)
                except zlib.error as e:
                    raise _Malformed(f"corrupt compressed element ({e})") from None
                mtype, payload, _ = reader.element(inner, 0, top=True)
            if mtype != _MI_MATRIX:
                continue
            name, value = reader.matrix(payload)
            if name and not name.startswith("__"):
                out[name] = value
    except (_Malformed, struct.error, ValueError, IndexError) as e:
        raise GcplError(f"{path} is not a readable MATLAB .mat file ({e})") from None
    return out
