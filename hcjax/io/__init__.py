"""Reading and writing video, images and audio."""

from hcjax.io.video import (
    MediaError,
    atomic_output,
    contact_sheet,
    image_to_unit_range,
    read_image,
    read_video,
    resize_center_crop,
    to_uint8,
    write_mp4,
    write_png,
)

__all__ = [
    "MediaError",
    "atomic_output",
    "contact_sheet",
    "image_to_unit_range",
    "read_image",
    "read_video",
    "resize_center_crop",
    "to_uint8",
    "write_mp4",
    "write_png",
]
