"""Complex tensors (rotary embeddings' ``freqs_cis``, spectral filters), analysed through their magnitude.

A complex record is analysed as the record of its magnitudes |z| (float32 for complex64, float64 for
complex128), while its ``dtype`` still reads ``complex64``: every statistic of its row (mean, std,
min, max, percentiles, histogram) is a magnitude statistic, and the report says so in a note. NaN and
Inf are counted over both parts: an element is NaN when either part is NaN, infinite when either part
is infinite and neither is NaN. Nothing complex is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from ..records import TensorRecord


def is_complex(dtype) -> bool:
    return np.dtype(dtype).kind == "c"


def magnitudes(values: np.ndarray) -> np.ndarray:
    """|z| of complex values; NaN where either part is NaN (``hypot`` alone would give inf for (inf, nan))."""
    re, im = values.real, values.imag
    mag = np.hypot(re, im)
    mag[np.isnan(re) | np.isnan(im)] = np.nan
    return mag


@dataclass
class MagnitudeRecord(TensorRecord):
    """A complex record seen as its magnitudes; ``dtype`` names the stored complex type."""

    complex_dtype: np.dtype | None = None

    @property
    def dtype(self) -> str:
        return np.dtype(self.complex_dtype).name


def analysed(rec: TensorRecord) -> TensorRecord:
    """The record the analyzer reduces: ``rec`` itself, or for a complex record, its magnitudes."""
    if not is_complex(rec.np_dtype):
        return rec
    read, read_range = rec.reader, rec.range_reader
    values = {f.name: getattr(rec, f.name) for f in fields(TensorRecord)}
    values.update(
        np_dtype=np.float32 if rec.np_dtype.itemsize <= 8 else np.float64,
        reader=lambda max_elems: (magnitudes(c) for c in read(max_elems)),
        range_reader=None if read_range is None else (
            lambda start, stop, max_elems: (magnitudes(c) for c in read_range(start, stop, max_elems))),
    )
    return MagnitudeRecord(**values, complex_dtype=rec.np_dtype)


def complex_note(rows: list[dict]) -> str | None:
    """The note a report carries when some of its tensors are complex."""
    names = [r["name"] for r in rows if str(r.get("dtype", "")).startswith("complex")]
    if not names:
        return None
    shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
    return (f"{len(names)} complex tensor{'s' if len(names) != 1 else ''} ({shown}): statistics are of the "
            "magnitude |z|; NaN/Inf counted over both parts")
