"""Image files in and out of the engine: one import for the pipeline.

The work is split by concern, each module documenting its own choices:

* :mod:`~upscayl_cloud.engine.sniff`: file type from magic bytes (no libvips,
  safe to call in the API process);
* :mod:`~upscayl_cloud.engine.decode`: header checks against the limits, then
  decoding into planes (EXIF rotation, grey, CMYK, 16-bit, alpha, and
  animated images: first frame only);
* :mod:`~upscayl_cloud.engine.encode`: output limits, PNG/JPEG/WebP writing
  with metadata, thumbnails;
* :mod:`~upscayl_cloud.engine.planeio`: libvips over plane files (its
  untrusted-input settings, exact resize, atomic writes).

Everything streams through libvips in strips: no step holds a whole image in
memory, whatever its size.
"""

from upscayl_cloud.engine.decode import DecodedImage, SourceImage, decode, probe
from upscayl_cloud.engine.encode import check_output_size, encode, make_thumbnail
from upscayl_cloud.engine.planeio import resize
from upscayl_cloud.engine.sniff import SUPPORTED_TYPES, sniff_mime_type

__all__ = [
    "SUPPORTED_TYPES",
    "DecodedImage",
    "SourceImage",
    "check_output_size",
    "decode",
    "encode",
    "make_thumbnail",
    "probe",
    "resize",
    "sniff_mime_type",
]
