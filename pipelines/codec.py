"""The one image decoder: bytes -> validated pixels, for ingestion and for serving alike.

Ingestion and the HTTP service must agree on what a decodable image is, so both go
through :func:`read_image`. It refuses bad input before it costs memory: the format is
sniffed from the magic bytes and the header is read *before* decoding, so a small file
that would decode to gigabytes (a decompression bomb) is refused without being decoded.
OpenCV then decodes with ``IMREAD_UNCHANGED`` (keeping 16-bit and alpha visible) and the
result becomes uint8 grayscale ``(H, W)`` or **RGB** ``(H, W, 3)`` (OpenCV's BGR is
swapped here; alpha is dropped, the camera's pixels count). 16-bit samples are scaled from
their significant bits (:func:`significant_bits`: PNG sBIT or TIFF MaxSampleValue, a
setting, or the frame's maximum). Every refusal is a :class:`DecodeError` with an
HTTP-style status and a machine-readable code; serving passes those on, and ingestion
turns them into :class:`InvalidSample` reasons.

Headers are parsed by maintained, fuzzed libraries: Pillow's lazy ``Image.open`` for PNG,
JPEG and BMP (size and mode; its decompression-bomb limit is set here explicitly) and
tifffile for TIFF (the first page's tags, strips or tiles, the page chain). Each gets only
the sniffed format's parser. What is still written here, and why:

- the magic-byte sniff (:func:`sniff_format`): a table lookup, not parsing. It names the
  formats we refuse (GIF, WebP, BigTIFF, ...), picks the one parser the bytes may reach,
  and lets a header cut short be reported as truncated rather than unrecognised;
- the PNG sBIT lookup (:func:`_png_sbit`): Pillow reads past sBIT without keeping it. It
  walks only chunks Pillow has just checked (lengths and CRCs, up to IDAT);
- the TIFF limits (:func:`_tiff_header`): tifffile reads tile sizes, byte counts and the
  page chain but refuses none of them (it logs and carries on, and notices a looping chain
  only after 100 pages), while libtiff, which decodes, would allocate what they claim.
  These checks compare values tifffile read; they parse nothing.

:func:`encode_png` is the one PNG encoder: ingestion stores images at their channel count
and masks as 0/255 single-channel PNG with it, and the decision log and the service's
replies use it too.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import tifffile
from PIL import Image

from jaffnet.preprocess import to_rgb

SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")
# OpenCV's own pixel cap (read once, at its first decode in a process): the ceiling of every
# pixel limit here, and of the service's configurable max_pixels.
OPENCV_MAX_PIXELS = 1 << 26
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(OPENCV_MAX_PIXELS))
# Set, not left at Pillow's default: Pillow warns above this and refuses above twice it while
# it opens a header; the codec's own cap then refuses from the size the header gives.
Image.MAX_IMAGE_PIXELS = OPENCV_MAX_PIXELS
# tifffile logs what it finds malformed and carries on; the codec's refusals report what
# matters, and a flood of hostile TIFFs must not become a flood of log lines.
logging.getLogger("tifffile").setLevel(logging.CRITICAL)

_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    # Recognised only to name them in the refusal.
    (b"II+\x00", "BigTIFF"),
    (b"MM\x00+", "BigTIFF"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
)

# A mask counts as binary when almost every pixel sits near black or white after
# thresholding at mid-scale (JPEG-compressed masks blur their edges a little). The
# limits are for 8-bit masks and scale with a mask's depth.
_AMBIGUOUS_LOW, _AMBIGUOUS_HIGH, _MASK_THRESHOLD = 32, 223, 128
MAX_AMBIGUOUS_FRACTION = 0.02


class DecodeError(ValueError):
    """Bytes that are not an image we accept.

    ``status`` is the HTTP status the refusal deserves (400 bad bytes, 413 too many
    pixels, 415 a format or sample type we do not take), ``code`` a short snake_case
    name for machines and ``message`` the reason in words a line engineer can act on.
    The codec knows no HTTP; the status just lets serving pass the refusal on unchanged.
    """

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class InvalidSample(ValueError):
    """A file that cannot become a training sample; the message is the reason and
    ``part`` says which file of the pair is at fault ("image" or "mask")."""

    def __init__(self, reason: str, part: str = "image"):
        super().__init__(reason)
        self.part = part


@dataclass(frozen=True)
class DecodedImage:
    """One decoded image and what its file stored.

    ``pixels`` is uint8 ``(H, W)`` for grayscale and grayscale + alpha sources and
    ``(H, W, 3)`` RGB for colour and colour + alpha ones; ``channels`` (1, 2, 3 or 4)
    and ``bit_depth`` (8 or 16) describe the file, not ``pixels``. ``significant_bits``
    is how many of a 16-bit sample's low bits carry the signal (12 for a 12-bit camera)
    and ``bits_source`` where that came from: ``file`` (PNG sBIT or TIFF MaxSampleValue), ``setting``, ``inferred``
    (from the frame's maximum) or ``8-bit``.
    """

    pixels: np.ndarray
    format: str
    channels: int
    bit_depth: int
    significant_bits: int = 8
    bits_source: str = "8-bit"

    @property
    def height(self) -> int:
        return self.pixels.shape[0]

    @property
    def width(self) -> int:
        return self.pixels.shape[1]

    @property
    def rgb(self) -> np.ndarray:
        """HxWx3 uint8 RGB, the one layout the model takes (grayscale is replicated)."""
        return to_rgb(self.pixels)


# --- the decoder -------------------------------------------------------------------


@dataclass(frozen=True)
class Header:
    """What a file's header says, read before any pixel is decoded."""

    width: int
    height: int
    grey_alpha: bool = False  # a grayscale + alpha PNG, which OpenCV expands to BGRA
    significant_bits: int | None = None  # declared by PNG sBIT or TIFF MaxSampleValue

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


def read_image(data: bytes, declared_format: str | None = None, max_pixels: int | None = None,
               admit: Callable[[int, int], None] | None = None, bit_depth: int | None = None) -> DecodedImage:
    """Validate and decode one image. Every refusal is a :class:`DecodeError`.

    ``declared_format`` (e.g. from a content type) must match the sniffed format;
    ``max_pixels`` caps width x height (never above :data:`OPENCV_MAX_PIXELS`), checked on
    the header before decoding, and so does ``admit(width, height)`` (a caller's own limits:
    it raises to refuse). 16-bit samples are scaled from their significant bits to 8 bits:
    the file's PNG ``sBIT`` or TIFF ``MaxSampleValue`` when present, else ``bit_depth``
    (e.g. 12), else the smallest of 10, 12, 14, 16 bits that holds the frame's maximum (so
    a 12-bit camera is not read as near-black).
    """
    image, image_format, header = _decode(data, declared_format, max_pixels, admit)
    bits, source = significant_bits(image, header.significant_bits, bit_depth)
    return DecodedImage(_to_8bit(_grey_or_rgb(image), bits), image_format, _channels(image),
                        image.dtype.itemsize * 8, bits, source)


def _decode(data: bytes, declared_format: str | None = None, max_pixels: int | None = None,
            admit: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, str, Header]:
    """The checked OpenCV array at its stored depth and channel layout (BGR order), its
    format and header. Kept apart from :func:`read_image` so masks can be binarised before
    their depth is reduced."""
    if not data:
        raise DecodeError(400, "empty_body", "the request carries no image bytes")
    image_format = _checked_format(data, declared_format)
    header = read_header(data, image_format)
    width, height = header.size
    limit = OPENCV_MAX_PIXELS if max_pixels is None else min(max_pixels, OPENCV_MAX_PIXELS)
    if width * height > limit:
        raise DecodeError(413, "too_many_pixels",
                          f"the frame is {width}x{height} = {width * height} pixels, above the limit of {limit}")
    if admit is not None:
        admit(width, height)
    image = _imdecode(data, image_format)
    if image.shape[:2] != (height, width):  # a header that lied about the size
        raise DecodeError(400, "corrupt_image",
                          f"the {image_format} header says {width}x{height} but decodes to "
                          f"{image.shape[1]}x{image.shape[0]}")
    if header.grey_alpha and image.ndim == 3 and image.shape[2] == 4:
        image = np.ascontiguousarray(image[:, :, [0, 3]])  # back to the 2 channels the file stores
    _check_samples(image, image_format)
    return image, image_format, header


def _checked_format(data: bytes, declared_format: str | None) -> str:
    """The sniffed format, if it is one we decode and the one the sender declared."""
    image_format = sniff_format(data)
    if image_format is None:
        raise DecodeError(400, "not_an_image",
                          f"the body is not a {' / '.join(SUPPORTED_FORMATS)} image (unrecognised leading bytes)")
    if image_format not in SUPPORTED_FORMATS:
        raise DecodeError(415, "unsupported_format",
                          f"{image_format} images are not supported; send {', '.join(SUPPORTED_FORMATS)}")
    if declared_format is not None and declared_format != image_format:
        raise DecodeError(415, "content_type_mismatch",
                          f"the content type says {declared_format} but the body is a {image_format}")
    return image_format


def _imdecode(data: bytes, image_format: str) -> np.ndarray:
    """OpenCV's decode, with its failures as 400s: it returns None for bytes it cannot
    decode and raises ``cv2.error`` for sizes beyond its own limits (e.g. a header
    claiming 2,000,000 x 1), which would otherwise surface as a crash."""
    try:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise DecodeError(400, "corrupt_image", f"the {image_format} data cannot be decoded "
                                                f"(OpenCV refused it: {getattr(exc, 'err', exc)})") from exc
    if image is None or image.size == 0:
        raise DecodeError(400, "corrupt_image", f"the {image_format} data cannot be decoded (truncated or corrupt)")
    return image


def _check_samples(image: np.ndarray, image_format: str) -> None:
    """Refuse sample types and channel counts the conversion to 8-bit grey/RGB cannot take."""
    if image.dtype not in (np.uint8, np.uint16):
        raise DecodeError(415, "unsupported_sample_type",
                          f"{image_format} samples of type {image.dtype} are not supported; send 8- or 16-bit integers")
    if _channels(image) not in (1, 2, 3, 4):
        raise DecodeError(415, "unsupported_sample_type",
                          f"{image_format} images with {_channels(image)} channels are not supported; "
                          "send grayscale or colour")


def _channels(image: np.ndarray) -> int:
    return 1 if image.ndim == 2 else image.shape[2]


def _grey_or_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV's layout -> ``(H, W)`` grey or ``(H, W, 3)`` RGB at the same depth; alpha
    is dropped because the camera's pixels count, not their transparency."""
    channels = _channels(image)
    if channels == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3:  # grey + alpha, or a lone channel
        return np.ascontiguousarray(image[:, :, 0])
    return image


BIT_DEPTHS = (10, 12, 14, 16)  # what 16-bit files from line cameras carry


def significant_bits(image: np.ndarray, declared: int | None = None,
                     bit_depth: int | None = None) -> tuple[int, str]:
    """(bits that carry the signal, where that came from): ``declared`` by the file, else
    the ``bit_depth`` setting, else inferred; see :func:`read_image`."""
    if image.dtype == np.uint8:
        return 8, "8-bit"
    if declared:
        return declared, "file"
    if bit_depth is not None:
        return bit_depth, "setting"
    peak = int(image.max()) if image.size else 0
    return next(bits for bits in BIT_DEPTHS if peak < 1 << bits), "inferred"


def _to_8bit(image: np.ndarray, bits: int = 16) -> np.ndarray:
    """The model and the stored datasets take uint8: 16-bit samples keep their top
    ``bits`` significant bits' high byte (a 12-bit 4095 becomes 255)."""
    if image.dtype == np.uint16:
        return np.clip(image >> max(0, bits - 8), 0, 255).astype(np.uint8)
    return image


# --- the header readers ------------------------------------------------------------


def sniff_format(data: bytes) -> str | None:
    """The format named by the leading bytes (including ones we refuse, to name them)."""
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


class _HeaderBytes(io.BytesIO):
    """The bytes a header parser reads, remembering whether it asked for more than there
    were: then its failure is a truncated file, not a corrupt one."""

    ran_out = False

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if size is not None and 0 <= len(chunk) < size:
            self.ran_out = True
        return chunk


def read_header(data: bytes, image_format: str) -> Header:
    """The header of a sniffed PNG, JPEG, BMP or TIFF, read by Pillow or tifffile and
    checked; any failure of theirs is a 400 (``truncated_image`` when the bytes ran out),
    and a Pillow decompression-bomb refusal a 413."""
    source = _HeaderBytes(data)
    try:
        header = _tiff_header(source, len(data)) if image_format == "TIFF" else _pillow_header(source, image_format, data)
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise DecodeError(413, "too_many_pixels", f"the {image_format} frame is too large to decode: {exc}") from exc
    except Exception as exc:  # a parser failing on hostile bytes, however it fails, is the sender's error
        if source.ran_out:
            raise DecodeError(400, "truncated_image", f"the {image_format} header is truncated") from exc
        raise DecodeError(400, "corrupt_image", f"the {image_format} header is corrupt") from exc
    if header.width <= 0 or header.height <= 0:
        raise DecodeError(400, "corrupt_image", f"the {image_format} header gives a {header.width}x{header.height} image")
    return header


def _pillow_header(source: _HeaderBytes, image_format: str, data: bytes) -> Header:
    """Pillow's lazy open reads the header only (and refuses sizes above twice its
    ``MAX_IMAGE_PIXELS``); only the sniffed format's plugin sees the bytes."""
    with Image.open(source, formats=[image_format]) as image:
        width, height = image.size
        grey_alpha = image.mode == "LA"
    return Header(width, height, grey_alpha, _png_sbit(data) if image_format == "PNG" else None)


def _png_sbit(data: bytes) -> int | None:
    """The largest significant-bits value of a PNG's sBIT chunk (before IDAT), if any.
    Called once Pillow has opened the PNG, so the chunks walked here are whole."""
    position = 8
    while position + 8 <= len(data):
        (length,) = struct.unpack(">I", data[position:position + 4])
        kind = data[position + 4:position + 8]
        if kind == b"sBIT":
            values = data[position + 8:position + 8 + min(length, 4)]
            return max(values) if values and 1 <= max(values) <= 16 else None
        if kind in (b"IDAT", b"IEND"):
            return None
        position += 12 + length
    return None


MAX_TIFF_PAGES = 16  # OpenCV decodes the first page; a longer (or looping) chain is refused
_TIFF_MAX_SAMPLE_VALUE = 281


def _tiff_header(source: _HeaderBytes, file_bytes: int) -> Header:
    """The first page as tifffile reads it, after checking what libtiff would allocate
    when it decodes: tiles no larger than the image (rounded to 16), strips and tiles no
    larger than the file, and a short, loop-free page chain."""
    with tifffile.TiffFile(source) as tiff:
        _check_tiff_pages(tiff)
        page = tiff.pages[0]
        width, height = page.imagewidth, page.imagelength
        for tile, side, name in ((page.tilewidth, width, "width"), (page.tilelength, height, "length")):
            if tile > max(16, -(-side // 16) * 16):
                raise DecodeError(400, "corrupt_image", f"the TIFF tile {name} {tile} exceeds its {side}-px image")
        largest = max(page.databytecounts, default=0)
        if largest > file_bytes:
            raise DecodeError(400, "corrupt_image",
                              f"the TIFF declares a {largest}-byte strip or tile in a {file_bytes}-byte file")
        return Header(width, height, significant_bits=_tiff_significant_bits(page))


def _check_tiff_pages(tiff: tifffile.TiffFile) -> None:
    seen = set()
    for index in range(MAX_TIFF_PAGES + 1):
        try:
            offset = tiff.pages[index].offset
        except IndexError:  # the chain ended
            return
        if offset in seen:
            raise DecodeError(400, "corrupt_image", "the TIFF's page chain loops")
        seen.add(offset)
    raise DecodeError(400, "too_many_pages", f"the TIFF has more than {MAX_TIFF_PAGES} pages; send one frame")


def _tiff_significant_bits(page: tifffile.TiffPage) -> int | None:
    """Bits implied by the TIFF's MaxSampleValue tag (a 12-bit camera writes 4095), if set."""
    peak = np.max(page.tags.valueof(_TIFF_MAX_SAMPLE_VALUE, default=0))
    return int(peak).bit_length() if 0 < peak < 0xFFFF else None


# --- ingestion: image/mask pairs ---------------------------------------------------


@contextmanager
def _refused_as(part: str) -> Iterator[None]:
    """Ingestion reports refusals per file of the pair, as :class:`InvalidSample`."""
    try:
        yield
    except DecodeError as exc:
        raise InvalidSample(f"{part} is not a decodable image ({exc.code}): {exc.message}", part) from exc


def decode_image(data: bytes, bit_depth: int | None = None) -> np.ndarray:
    """Encoded bytes -> uint8 ``(H, W)`` grayscale or ``(H, W, 3)`` RGB (16-bit scaled from
    its significant bits, see :func:`read_image`)."""
    with _refused_as("image"):
        return read_image(data, bit_depth=bit_depth).pixels


def decode_mask(data: bytes) -> np.ndarray:
    """Encoded bytes -> uint8 ``(H, W)`` in {0, 255}; rejects masks that are not binary.

    The mask is binarised at its stored depth: a 16-bit {0, 1} label mask would be all
    background once reduced to its high byte.
    """
    with _refused_as("mask"):
        image, _, _ = _decode(data)
    return _binarise(_single_channel(_grey_or_rgb(image)))


def _single_channel(mask: np.ndarray) -> np.ndarray:
    """Colour masks count by their luminance, as ``IMREAD_GRAYSCALE`` would read them."""
    return cv2.cvtColor(mask, cv2.COLOR_RGB2GRAY) if mask.ndim == 3 else mask


def _binarise(mask: np.ndarray) -> np.ndarray:
    """Single-channel mask at any depth -> 0/255 uint8, or :class:`InvalidSample`."""
    values = np.unique(mask)
    if len(values) <= 2 and values[0] == 0:
        # {0}, {0, 1}, {0, 255}, ...: label masks with any single foreground value
        return np.where(mask > 0, np.uint8(255), np.uint8(0))
    scale = np.iinfo(mask.dtype).max / 255
    low, high = _AMBIGUOUS_LOW * scale, _AMBIGUOUS_HIGH * scale
    ambiguous = float(np.mean((mask > low) & (mask < high)))
    if ambiguous > MAX_AMBIGUOUS_FRACTION:
        raise InvalidSample(
            f"mask is not binary: {ambiguous:.1%} of its pixels are grey ({low:g} < value < {high:g})", "mask"
        )
    return np.where(mask >= _MASK_THRESHOLD * scale, np.uint8(255), np.uint8(0))


def encode_png(image: np.ndarray, compression: int | None = None) -> bytes:
    """uint8 grey ``(H, W)`` or RGB ``(H, W, 3)``, or a bool mask (as 0/255), -> lossless
    PNG bytes; ``compression`` is the zlib level (0-9, OpenCV's default when None)."""
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    elif image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".png", image, [] if compression is None else [cv2.IMWRITE_PNG_COMPRESSION, compression])
    if not ok:  # pragma: no cover - encoding a grey or RGB uint8 array does not fail
        raise ValueError("PNG encoding failed")
    return buffer.tobytes()


def validate_pair(image_bytes: bytes, mask_bytes: bytes | None,
                  bit_depth: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Decode both and check they agree; a missing mask means a defect-free frame."""
    image = decode_image(image_bytes, bit_depth)
    if mask_bytes is None:
        return image, np.zeros(image.shape[:2], np.uint8)
    mask = decode_mask(mask_bytes)
    if mask.shape != image.shape[:2]:
        raise InvalidSample(
            f"mask size {mask.shape[1]}x{mask.shape[0]} differs from image size "
            f"{image.shape[1]}x{image.shape[0]}", "mask"
        )
    return image, mask
