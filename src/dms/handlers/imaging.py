"""Decode and transform images for classifiers: short-side resize, centre crop, normalise."""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from dms.errors import ArchiveError, InputError, PayloadTooLargeError

DEFAULT_MAX_PIXELS = 40_000_000


def payload_bytes(payload: Any) -> bytes:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload)
    if isinstance(payload, str):
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputError("a text image payload must be base64-encoded image bytes") from exc
    raise InputError(f"expected image bytes, got {type(payload).__name__}")


def decode_image(raw: bytes, mode: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(raw))
            if image.width * image.height > max_pixels:
                raise PayloadTooLargeError(
                    f"image of {image.width}x{image.height} pixels is over max_image_pixels ({max_pixels})"
                )
            image.load()
    except (InputError, PayloadTooLargeError):
        raise
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise PayloadTooLargeError(f"image is over max_image_pixels ({max_pixels}): {exc}") from exc
    except UnidentifiedImageError:
        raise InputError("request body is not an image in a format this server reads (JPEG, PNG, ...)") from None
    except Exception as exc:
        raise InputError(f"request body is not a decodable image ({type(exc).__name__}: {exc})") from exc
    wanted = "L" if mode == "L" else "RGB"
    return image if image.mode == wanted else image.convert(wanted)  # convert() to the same mode copies


def resize_short_side(image: Image.Image, size: int) -> Image.Image:
    """Short side to ``size``, long side scaled and truncated, bilinear (torchvision's ``Resize(size)``)."""
    width, height = image.size
    if min(width, height) == size:
        return image
    long_side = max(1, int(max(width, height) * size / min(width, height)))
    new = (size, long_side) if width <= height else (long_side, size)
    return image.resize(new, Image.Resampling.BILINEAR)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    width, height = image.size
    if width < size or height < size:
        raise InputError(f"image of {width}x{height} is smaller than the crop of {size}x{size}")
    left = round((width - size) / 2.0)  # torchvision's CenterCrop offsets
    top = round((height - size) / 2.0)
    return image.crop((left, top, left + size, top + size))


def to_chw(
    image: Image.Image,
    channel_order: str,
    scale: float,
    mean: Sequence[float],
    std: Sequence[float],
) -> np.ndarray:
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 2:
        array = array[:, :, None]
    if channel_order == "BGR":
        array = array[:, :, ::-1]
    planes = array.transpose(2, 0, 1)
    out = np.empty(planes.shape, dtype=np.float32)
    # ((x * scale) - mean) / std, as one copy into CHW order and in-place steps; unit steps are skipped
    # (they would not change a bit of the result).
    if scale != 1.0:
        np.multiply(planes, np.float32(scale), out=out)
    else:
        np.copyto(out, planes)
    means = np.asarray(mean, dtype=np.float32)
    if means.any():
        out -= means[:, None, None]
    stds = np.asarray(std, dtype=np.float32)
    if (stds != 1.0).any():
        out /= stds[:, None, None]
    return out


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageRecipe:
    """Decode → (resize → crop) → CHW float array, configured by a model config's ``handler:`` options.

    Options: ``channel_order`` RGB/BGR/L, ``scale``, ``mean`` and ``std`` (one value or one per channel),
    ``resize`` (short side; 0 keeps the size), ``input_size`` (centre crop; 0 keeps the size),
    ``max_image_pixels`` (at most the server's cap). Each built-in handler passes its own defaults.
    """

    def __init__(self, options: dict[str, Any], server_max_pixels: int, **defaults: Any) -> None:
        def option(name: str) -> Any:
            return options.get(name, defaults.get(name))

        self.channel_order = str(option("channel_order") or "RGB").upper()
        if self.channel_order not in {"RGB", "BGR", "L"}:
            raise ArchiveError("handler option channel_order must be RGB, BGR or L")
        channels = 1 if self.channel_order == "L" else 3
        self.scale = float(option("scale") if option("scale") is not None else 1 / 255)
        self.mean = per_channel(option("mean") if option("mean") is not None else 0.0, channels, "mean")
        self.std = per_channel(option("std") if option("std") is not None else 1.0, channels, "std")
        self.resize = int(option("resize") or 0)
        self.crop = int(option("input_size") or 0)
        self.max_pixels = min(int(options.get("max_image_pixels", server_max_pixels)), server_max_pixels)

    def array(self, payload: Any) -> np.ndarray:
        image = decode_image(payload_bytes(payload), self.channel_order, self.max_pixels)
        if self.resize:
            image = resize_short_side(image, self.resize)
        if self.crop:
            image = center_crop(image, self.crop)
        return to_chw(image, self.channel_order, self.scale, self.mean, self.std)


def per_channel(value: Any, channels: int, name: str) -> list[float]:
    values = [float(v) for v in value] if isinstance(value, list | tuple) else [float(value)]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ArchiveError(f"handler option {name} needs {channels} values, got {len(values)}")
    return values
