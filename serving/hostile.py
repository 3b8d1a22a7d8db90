"""The hostile-request matrix of the attack driver (``jaffnet bench serve --attack``, :mod:`serving.attack`).

Each :class:`HostileRequest` is something a broken camera, a fuzzer or an attacker could
post to ``/v1/inspect``, with the 4xx the service must answer. Files are forged by hand
(a few bytes of header can claim gigapixels), so nothing here needs a large array. The
service tests post the same matrix; the codec's own tests build their files themselves.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import cv2
import numpy as np

from pipelines.codec import encode_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class HostileRequest:
    name: str
    body: bytes
    content_type: str
    expected: int  # the status the service must answer
    params: dict = field(default_factory=dict)
    chunked: bool = False  # sent without Content-Length, in pieces

    @property
    def overrides_thresholds(self) -> bool:
        return bool({"threshold", "image_threshold"} & set(self.params))


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def grey_png(width: int, height: int) -> bytes:
    """An all-black 8-bit grayscale PNG of any size, compressed row by row (a 67 MP bomb is ~70 kB)."""
    compressor = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte 0 + zero samples
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def grey_bmp(width: int, height: int) -> bytes:
    """An 8-bit palette BMP (any width: OpenCV refuses to *write* past 2^20)."""
    row = (width + 3) // 4 * 4
    palette = b"".join(bytes((v, v, v, 0)) for v in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, row * height, 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + row * height, 0, 0, offset) + info + palette + bytes(row * height)


def forged_jpeg(width: int, height: int) -> bytes:
    """A JPEG whose frame header claims ``width`` x ``height`` and that holds no scan."""
    sof = struct.pack(">BHHB", 8, height, width, 1) + bytes((1, 0x11, 0))
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def tiff(entries: list[tuple[int, int, int]], pixels: bytes = bytes(256), next_ifd: int | None = 0) -> bytes:
    """A little-endian TIFF with one IFD of ``(tag, type, value)`` entries, in the given
    order (duplicates kept), followed by ``pixels``. StripOffsets (273) is filled in;
    ``next_ifd=None`` points the page chain back at this IFD (a loop)."""
    ifd = 8
    data_offset = ifd + 2 + 12 * len(entries) + 4
    packed = b""
    for tag, kind, value in entries:
        value = data_offset if tag == 273 else value
        packed += struct.pack("<HHI", tag, kind, 1) + (struct.pack("<HH", value, 0) if kind == 3 else
                                                       struct.pack("<I", value))
    chain = ifd if next_ifd is None else next_ifd
    return b"II*\x00" + struct.pack("<I", ifd) + struct.pack("<H", len(entries)) + packed + \
        struct.pack("<I", chain) + pixels


SHORT, LONG = 3, 4


def grey_tiff_entries(width: int = 16, height: int = 16, strip_bytes: int = 256) -> list[tuple[int, int, int]]:
    return [(256, LONG, width), (257, LONG, height), (258, SHORT, 8), (259, SHORT, 1), (262, SHORT, 1),
            (273, LONG, 0), (277, SHORT, 1), (278, LONG, height), (279, LONG, strip_bytes)]


def hostile_requests(max_body_bytes: int) -> list[HostileRequest]:
    """The hostile matrix, one request per case (the driver cycles through it)."""
    good = encode_png(np.full((64, 64), 90, np.uint8))
    good_jpeg = cv2.imencode(".jpg", np.full((64, 64), 90, np.uint8))[1].tobytes()
    duplicated = grey_tiff_entries()
    duplicated[0:0] = [(256, LONG, 100_000)]  # libtiff keeps the first of duplicated tags
    duplicated[2:2] = [(257, LONG, 100_000)]
    tiled = [e for e in grey_tiff_entries() if e[0] not in (273, 278, 279)] + [
        (322, LONG, 65_536), (323, LONG, 65_536), (324, LONG, 0), (325, LONG, 256)]
    oversized = bytes(max_body_bytes + 1)
    png, raw = "image/png", "application/octet-stream"
    return [
        HostileRequest("thin PNG 1000000x1", grey_png(1_000_000, 1), png, 413),
        HostileRequest("wide BMP 2000000x1", grey_bmp(2_000_000, 1), "image/bmp", 413),
        HostileRequest("tall PNG 1x200000", grey_png(1, 200_000), png, 413),
        HostileRequest("PNG bomb 8192x8192", grey_png(8192, 8192), png, 413),
        HostileRequest("JPEG claiming 65000x65000", forged_jpeg(65_000, 65_000), "image/jpeg", 413),
        HostileRequest("TIFF duplicate width/height tags", tiff(duplicated), "image/tiff", 413),
        HostileRequest("TIFF 16x16 with 64K tiles", tiff(tiled), "image/tiff", 400),
        HostileRequest("TIFF strip larger than the file", tiff(grey_tiff_entries(strip_bytes=1 << 30)),
                       "image/tiff", 400),
        HostileRequest("TIFF looping page chain", tiff(grey_tiff_entries(), next_ifd=None), "image/tiff", 400),
        HostileRequest("truncated PNG", good[: len(good) // 2], png, 400),
        HostileRequest("JPEG cut inside its header", good_jpeg[:40], "image/jpeg", 400),
        HostileRequest("random bytes", np.random.default_rng(0).bytes(4096), raw, 400),
        HostileRequest("empty body", b"", png, 400),
        HostileRequest("GIF", b"GIF89a" + bytes(64), "image/gif", 415),
        HostileRequest("PNG sent as text/plain", good, "text/plain", 415),
        HostileRequest("PNG declared as JPEG", good, "image/jpeg", 415),
        HostileRequest("threshold=nan", good, png, 422, params={"threshold": "nan"}),
        HostileRequest("threshold=7", good, png, 422, params={"threshold": "7"}),
        HostileRequest("body above the cap", oversized, png, 413),
        HostileRequest("chunked body above the cap", oversized, png, 413, chunked=True),
        HostileRequest("multipart without a file field", b"--x\r\nContent-Disposition: form-data; name=\"a\""
                       b"\r\n\r\n1\r\n--x--\r\n", "multipart/form-data; boundary=x", 400),
    ]
