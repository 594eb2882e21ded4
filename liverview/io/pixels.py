"""Decode one frame to modality values (HU for CT) as int16, via pydicom's pixel handlers.

Native little-endian data is read straight from its file offset (known from the header pass);
everything else - compressed syntaxes, big endian, deflate, colour - goes through pydicom with the
pylibjpeg / pyjpegls plugins, which raise ordinary exceptions on hostile data.
"""
from __future__ import annotations

import functools
import logging
import struct
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from liverview.io.frame_slots import SlotRef, SlotWriter
from liverview.io.headers import FileHeader, FrameRef
from liverview.io.transfer_syntax import JPEG_LS, is_compressed

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

INT16_MIN, INT16_MAX = -32768, 32767
#: CT value written where the scanner marked pixels as padding (outside the reconstruction circle).
CT_PADDING_HU = -1024


#: Decoders chosen where pydicom's first choice is slower: CharLS (pyjpegls) decodes JPEG-LS about 4x
#: faster than libjpeg (pylibjpeg-libjpeg). The rest use pydicom's own order.
_DECODING_PLUGINS = {"1.2.840.10008.1.2.4.80": "pyjpegls", "1.2.840.10008.1.2.4.81": "pyjpegls"}


class FrameDecodeError(ValueError):
    """A frame's pixels cannot be decoded; the message is the user-facing reason."""


class FrameReader:
    """Reads frames of many files, keeping the last parsed dataset so multi-frame files parse once."""

    def __init__(self) -> None:
        self._path: str | None = None
        self._ds: Dataset | None = None

    def read_into(self, frame: FrameRef, out: np.ndarray) -> int:
        """Decode `frame` into the int16 slice `out` as modality values; returns the clipped-pixel count."""
        if _read_native_in_place(frame, out):
            return 0
        stored = self.read_stored(frame)
        try:
            ds = self._dataset(frame.path) if frame.file.has_modality_lut else None
            return to_modality_values(stored, frame, ds, out)
        except Exception as exc:  # noqa: BLE001 - a malformed Modality LUT must not stop the series
            raise FrameDecodeError(f"modality LUT / rescale cannot be applied ({type(exc).__name__}: {exc})") from exc

    def read_stored(self, frame: FrameRef) -> np.ndarray:
        """The stored pixel values of one frame (before the modality LUT), 2-D, greyscale."""
        header = frame.file
        try:
            if header.pixel_offset is not None:
                return _read_native(header, header.pixel_offset, frame.frame)
            if header.fragments_offset is not None and not header.photometric.startswith("PALETTE"):
                direct = _decode_fragments(header, header.fragments_offset)
                if direct is not None:
                    return _to_grey(direct, header, None)
            ds = self._dataset(header.path)
            if not any(keyword in ds for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
                # The header pass found the pixel data's start; pydicom drops an element the file ends inside.
                raise FrameDecodeError("the file ends inside its pixel data: it is probably cut short (damaged)")
            from pydicom.pixels import pixel_array
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                plugin = _DECODING_PLUGINS.get(header.transfer_syntax, "")
                if header.number_of_frames > 1:
                    array = pixel_array(ds, index=frame.frame, decoding_plugin=plugin)
                else:
                    array = pixel_array(ds, decoding_plugin=plugin) if plugin else ds.pixel_array
        except FrameDecodeError:
            raise
        except MemoryError as exc:
            raise FrameDecodeError("not enough memory to decode this image") from exc
        except Exception as exc:  # noqa: BLE001 - decoder failures on untrusted data are reasons, not crashes
            raise FrameDecodeError(f"pixel data cannot be decoded ({type(exc).__name__}: {exc})") from exc
        return _to_grey(array, header, self._ds)

    def _dataset(self, path: str) -> Dataset:
        if path != self._path:
            import pydicom  # here, not at import: uncompressed CT is read without it

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, force=True)
            # Fill in what real files omit but the decoders insist on, with the values the header pass
            # already assumed (and reported as a warning).
            for keyword, default in (("PixelRepresentation", 0), ("SamplesPerPixel", 1),
                                     ("PhotometricInterpretation", "MONOCHROME2")):
                if keyword not in ds:
                    setattr(ds, keyword, default)
            if "BitsStored" not in ds and "BitsAllocated" in ds:
                ds.BitsStored = ds.BitsAllocated
            self._ds, self._path = ds, path
        assert self._ds is not None
        return self._ds


@dataclass
class DecodedFrame:
    """A frame decoded by a worker process: the int16 slice, or the reason it failed, plus the notes
    the decoding added to its header (the worker's copy of the header is not the caller's)."""

    values: np.ndarray | None
    clipped: int
    error: str | None
    notes: list[str]
    #: Where the values were written instead, when the caller gave a shared slot.
    slot: SlotRef | None = None


_worker_reader: FrameReader | None = None
_worker_slots: SlotWriter | None = None


def decode_frame(frame: FrameRef) -> DecodedFrame:
    """`FrameReader.read_into` for one frame, as a task of the worker processes."""
    return _decode(frame, np.empty((frame.file.rows, frame.file.columns), dtype=np.int16), None)


def decode_frame_to_slot(task: tuple[FrameRef, SlotRef]) -> DecodedFrame:
    """`decode_frame`, writing the values into a shared slot (`liverview.io.frame_slots`) rather than
    sending them back."""
    global _worker_slots
    frame, slot = task
    if _worker_slots is None:
        _worker_slots = SlotWriter()
    return _decode(frame, _worker_slots.frame(slot), slot)


def _decode(frame: FrameRef, out: np.ndarray, slot: SlotRef | None) -> DecodedFrame:
    global _worker_reader
    if _worker_reader is None:
        _worker_reader = FrameReader()
    before = len(frame.file.notes)
    try:
        clipped = _worker_reader.read_into(frame, out)
    except FrameDecodeError as exc:
        return DecodedFrame(None, 0, str(exc), frame.file.notes[before:])
    if slot is not None:
        return DecodedFrame(None, clipped, None, frame.file.notes[before:], slot)
    return DecodedFrame(out, clipped, None, frame.file.notes[before:])


def needs_decoder(frame: FrameRef) -> bool:
    """True when the frame's pixels are compressed (not a plain read from a file offset)."""
    header = frame.file
    return header.pixel_offset is None and is_compressed(header.transfer_syntax)


def _read_native_in_place(frame: FrameRef, out: np.ndarray) -> bool:
    """The common CT case - uncompressed 16-bit, slope 1, integer intercept - read straight into the
    volume's slice and shifted in place: no temporaries, about 2.5x faster than the general path.
    Returns False (leaving `out` to be overwritten) whenever the general path is needed."""
    header = frame.file
    slope, intercept = frame.rescale
    # What `_shift_in_place` would refuse is refused before reading, not after (the general path reads again).
    if (header.pixel_offset is None or header.bits_allocated != 16 or header.bits_stored != 16
            or header.has_modality_lut or slope != 1.0 or not float(intercept).is_integer()
            or out.dtype != np.int16 or not out.flags.c_contiguous or sys.byteorder != "little"):
        return False
    with open(header.path, "rb") as fh:
        fh.seek(header.pixel_offset + frame.frame * header.frame_nbytes)
        if fh.readinto(out.data.cast("B")) != header.frame_nbytes:
            raise FrameDecodeError(f"file ends inside the pixel data of frame {frame.frame + 1}")
    return _shift_in_place(out if header.pixel_representation else out.view(np.uint16), frame, out)


def _shift_in_place(stored: np.ndarray, frame: FrameRef, out: np.ndarray) -> bool:
    """Stored values plus an integer intercept (slope 1, no Modality LUT) written into `out` without a
    full-size temporary, when they fit int16. Returns False, leaving `out` to be overwritten, otherwise.
    `stored` may be `out` itself (read in place), viewed as unsigned where the pixels are."""
    header = frame.file
    slope, intercept = frame.rescale
    if (header.has_modality_lut or slope != 1.0 or not float(intercept).is_integer() or stored.ndim != 2
            or stored.dtype.kind not in "iu" or stored.dtype.itemsize > 2 or out.dtype != np.int16):
        return False
    shift = int(intercept)
    low, high = int(stored.min()), int(stored.max())
    if low + shift < INT16_MIN or high + shift > INT16_MAX or high > INT16_MAX:
        return False
    pad = _padding_mask(stored, header, low, high)
    in_place = stored is out or stored.base is out
    if in_place and INT16_MIN <= shift <= INT16_MAX:
        if shift:
            out += np.int16(shift)
    else:
        # Computed in int32 chunk by chunk (the ufunc's buffer), so no full-size temporary either.
        np.add(out if in_place else stored, np.int32(shift), out=out, dtype=np.int32, casting="unsafe")
    if pad is not None:
        out[pad] = _padding_fill(out, pad, header)
    return True


#: (FFFE,E000) Item and (FFFE,E0DD) Sequence Delimitation Item, as little-endian (group, element).
_ITEM, _SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE0DD)


def _decode_fragments(header: FileHeader, offset: int) -> np.ndarray | None:
    """A single-frame JPEG-LS or JPEG 2000 file's stored values, decoded by CharLS or OpenJPEG from its
    fragments without parsing the dataset (`pydicom.dcmread` costs as much as a JPEG-LS decode, and
    importing pydicom and its plugins delayed the first JPEG 2000 slice by 0.1 s); None for anything
    unusual, which then goes through pydicom: items that do not add up, or a codestream whose size,
    precision or sign the header disagrees with."""
    with open(header.path, "rb") as f:
        f.seek(offset)
        data = f.read()
    fragments, pos = [], 0
    while pos + 8 <= len(data):
        group, element, length = struct.unpack_from("<HHI", data, pos)
        if (group, element) == _SEQUENCE_END:
            break
        if (group, element) != _ITEM or length == 0xFFFFFFFF or pos + 8 + length > len(data):
            return None
        fragments.append(data[pos + 8:pos + 8 + length])
        pos += 8 + length
    if len(fragments) < 2:  # the Basic Offset Table, then the frame
        return None
    codestream = b"".join(fragments[1:])
    if header.transfer_syntax in JPEG_LS:
        return _decode_jpeg_ls(header, codestream)
    return _decode_jpeg_2000(header, codestream)


@functools.cache
def _charls_decoder() -> Callable[[bytes], tuple[bytearray, dict[str, int]]]:
    """pyjpegls' `decode_buffer`, taken from its extension module where it has one: importing the
    `jpeg_ls` package looks its own version up among the installed distributions, 10 ms of a 0.47 s
    100-slice JPEG-LS load before the workers start (measured, 21 alternating runs)."""
    try:
        from _CharLS import _decode, read_header  # what jpeg_ls.decode_buffer calls
    except ImportError:  # a pyjpegls laid out otherwise
        from jpeg_ls import decode_buffer

        return decode_buffer
    return lambda codestream: (_decode(codestream), read_header(codestream))


def _decode_jpeg_ls(header: FileHeader, codestream: bytes) -> np.ndarray | None:
    try:
        decoded, info = _charls_decoder()(codestream)
    except Exception:  # noqa: BLE001 - pydicom's path gives the reason the user sees
        return None
    itemsize = -(-info["bits_per_sample"] // 8)
    if (info["components"] != 1 or (info["height"], info["width"]) != (header.rows, header.columns)
            or itemsize * 8 != header.bits_allocated or len(decoded) != header.rows * header.columns * itemsize):
        return None
    array = np.frombuffer(decoded, dtype=f"<u{itemsize}").reshape(header.rows, header.columns)
    if header.pixel_representation:
        # CharLS returns the bit pattern. Signed values filling their bytes are that pattern read as
        # two's complement; fewer Bits Stored need pydicom's sign correction.
        if header.bits_stored != header.bits_allocated:
            return None
        return array.view(np.int16 if array.dtype.itemsize == 2 else np.int8)
    return array


def _decode_jpeg_2000(header: FileHeader, codestream: bytes) -> np.ndarray | None:
    import openjpeg  # here: only JPEG 2000 series need OpenJPEG

    try:
        found = openjpeg.get_parameters(codestream)
        # pydicom corrects a codestream whose sign or precision differs from the header; those go there.
        if (found["samples_per_pixel"] != 1 or (found["rows"], found["columns"]) != (header.rows, header.columns)
                or found["precision"] != header.bits_stored or found["is_signed"] != bool(header.pixel_representation)):
            return None
        array = openjpeg.decode(codestream)
    except Exception:  # noqa: BLE001 - pydicom's path gives the reason the user sees
        return None
    if array.shape != (header.rows, header.columns) or array.dtype.itemsize * 8 != header.bits_allocated:
        return None
    return array


def _padding_mask(stored: np.ndarray, header: FileHeader, stored_min: int | None = None,
                  stored_max: int | None = None) -> np.ndarray | None:
    """Pixels marked by (0028,0120) Pixel Padding Value [.. (0028,0121) Range Limit], in stored values.
    With the stored range known, a padding value outside it costs no pass over the pixels."""
    if header.padding is None or stored.dtype.kind not in "iu":
        return None
    low, high = header.padding
    if stored.dtype.kind == "i" and stored.dtype.itemsize == 2 and low > INT16_MAX:
        # (0028,0120) encoded as US although the pixels are signed: reinterpret the bit pattern.
        low, high = low - 65536, high - 65536
    if stored_min is not None and stored_max is not None and (high < stored_min or low > stored_max):
        return None
    pad = stored == low if low == high else (stored >= low) & (stored <= high)
    return pad if pad.any() else None


def _padding_fill(values: np.ndarray, pad: np.ndarray, header: FileHeader) -> int:
    """Air for CT; the lowest real value for other modalities."""
    if header.identity.modality == "CT":
        return CT_PADDING_HU
    return int(values[~pad].min()) if (~pad).any() else 0


def _read_native(header: FileHeader, pixel_offset: int, frame: int) -> np.ndarray:
    dtype = np.dtype(("<i" if header.pixel_representation else "<u") + str(header.bits_allocated // 8))
    count = header.rows * header.columns
    offset = pixel_offset + frame * header.frame_nbytes
    array = np.fromfile(header.path, dtype=dtype, count=count, offset=offset)
    if array.size != count:
        raise FrameDecodeError(f"file ends inside the pixel data of frame {frame + 1}")
    array = array.reshape(header.rows, header.columns)
    if header.bits_stored < header.bits_allocated:
        array = _mask_bits(array, header)
    return array


def _mask_bits(array: np.ndarray, header: FileHeader) -> np.ndarray:
    """Bits above (0028,0101) Bits Stored may hold overlays or garbage; keep only the stored bits,
    sign-extending when (0028,0103) Pixel Representation says signed."""
    bits = header.bits_stored
    if header.pixel_representation:
        shift = header.bits_allocated - bits
        return ((array.astype(np.int32) << shift).astype(array.dtype) >> shift) if shift > 0 else array
    return array & np.array((1 << bits) - 1, dtype=array.dtype)


def _to_grey(array: np.ndarray, header: FileHeader, ds: Dataset | None) -> np.ndarray:
    if header.photometric.startswith("PALETTE") and ds is not None and array.ndim == 2:
        from pydicom.pixels import apply_color_lut
        array = apply_color_lut(array, ds)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        rgb = array[..., :3].astype(np.float32)
        array = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    if array.ndim != 2:
        raise FrameDecodeError(f"decoded to an unexpected shape {array.shape}")
    if array.shape != (header.rows, header.columns):
        raise FrameDecodeError(f"decoded to {array.shape[0]} x {array.shape[1]} pixels but the header says "
                               f"{header.rows} x {header.columns}")
    return array


def to_modality_values(stored: np.ndarray, frame: FrameRef, ds: Dataset | None, out: np.ndarray) -> int:
    """Apply (0028,1052/1053) Rescale Intercept/Slope (or the Modality LUT Sequence) into the int16
    slice `out`; padding pixels become air for CT. Returns how many pixels had to be clipped."""
    header = frame.file
    colour = header.samples_per_pixel > 1 or header.photometric.startswith(("PALETTE", "RGB", "YBR"))
    if not colour and _shift_in_place(stored, frame, out):
        return 0
    values = None
    if header.has_modality_lut and ds is not None and not colour:
        try:
            from pydicom.pixels import apply_modality_lut
            values = apply_modality_lut(stored, ds).astype(np.float32)
        except Exception:  # noqa: BLE001 - malformed LUT: fall back to rescale (reported by the caller)
            log.warning("%s: Modality LUT Sequence unusable; using Rescale Slope/Intercept", header.path)
            header.notes.append("Modality LUT Sequence (0028,3000) unusable; Rescale Slope/Intercept used")
    if values is None:
        slope, intercept = (1.0, 0.0) if colour else frame.rescale
        if slope == 1.0 and float(intercept).is_integer() and stored.dtype.kind in "iu" and stored.dtype.itemsize <= 2:
            values = stored.astype(np.int32)
            values += int(intercept)
        else:
            values = stored.astype(np.float32)
            if slope != 1.0:
                values *= np.float32(slope)
            values += np.float32(intercept)
            np.rint(values, out=values)
    clipped = int(np.count_nonzero((values < INT16_MIN) | (values > INT16_MAX)))
    np.clip(values, INT16_MIN, INT16_MAX, out=values)
    out[...] = values
    pad = _padding_mask(stored, header)
    if pad is not None:
        out[pad] = _padding_fill(out, pad, header)
    return clipped
