"""Pictures of saccades: the proxy and the image with numbered glimpse boxes, and the glimpses."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

# One colour per saccade step, distinct on grey-level and photographic images.
PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
    (0, 128, 128),
]


@dataclass
class SaccadePicture:
    """What one picture shows, for one sample."""

    image: Tensor  # (C, H, W) in [0, 1], any size (drawn resized)
    proxy: Tensor  # (C, P, P) in [0, 1]
    boxes: Tensor  # (T, 4) x0, y0, x1, y1 as fractions of the image side
    glimpses: Tensor  # (T, C, w, w) in [0, 1]
    prediction: str = ""  # the predicted class(es) as text (``describe``)
    label: str = ""  # the true class(es) as text

    @property
    def caption(self) -> str:
        """``predicted {3, 7}   true {3, 8}``, of what is given."""
        shown = [("predicted", self.prediction), ("true", self.label)]
        return "   ".join(f"{word} {text}" for word, text in shown if text)


def to_pil(image: Tensor, side: int) -> Image.Image:
    """(C, H, W) tensor in [0, 1] → RGB PIL image, resized so that its longer side is ``side``."""
    array = (image.detach().float().clamp(0, 1) * 255).round().byte().cpu()
    array = array.expand(3, -1, -1) if array.shape[0] == 1 else array[:3]
    picture = Image.fromarray(np.ascontiguousarray(array.permute(1, 2, 0).numpy()), "RGB")
    scale = side / max(picture.size)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size, Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.BOX)


def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw_boxes(picture: Image.Image, boxes: Tensor) -> Image.Image:
    """Numbered boxes (T, 4) in fractions of the side, drawn on a copy of ``picture``."""
    picture = picture.copy()
    draw = ImageDraw.Draw(picture)
    width, height = picture.size
    for step, (x0, y0, x1, y1) in enumerate(boxes.tolist()):
        colour = PALETTE[step % len(PALETTE)]
        rectangle = (x0 * width, y0 * height, x1 * width - 1, y1 * height - 1)
        draw.rectangle(rectangle, outline=colour, width=2)
        draw.text((rectangle[0] + 3, rectangle[1] + 1), str(step + 1), fill=colour, font=font(14))
    return picture


def boxed_image(image: Tensor, boxes: Tensor, side: int = 224) -> Image.Image:
    """An image (C, H, W), or a proxy, resized to ``side`` with the numbered glimpse boxes."""
    return draw_boxes(to_pil(image, side), boxes)


def glimpse_strip(glimpses: Tensor, side: int = 96, pad: int = 6) -> Image.Image:
    """The glimpses (T, C, w, w) in a row, each resized to ``side`` and framed and numbered
    in its step's colour."""
    strip = Image.new("RGB", (len(glimpses) * (side + pad) - pad, side), (255, 255, 255))
    draw = ImageDraw.Draw(strip)
    for step, glimpse in enumerate(glimpses):
        left = step * (side + pad)
        strip.paste(to_pil(glimpse, side), (left, 0))
        colour = PALETTE[step % len(PALETTE)]
        draw.rectangle((left, 0, left + side - 1, side - 1), outline=colour, width=2)
        draw.text((left + 3, 1), str(step + 1), fill=colour, font=font(14))
    return strip


def draw_saccades(
    samples: list[SaccadePicture], side: int = 224, glimpse_side: int = 96
) -> Image.Image:
    """One row per sample: proxy with boxes, image with boxes, then the numbered glimpses."""
    steps = max(len(s.boxes) for s in samples)
    pad, caption_height = 6, 20
    row_height = max(side, glimpse_side) + caption_height + pad
    width = pad + 2 * (side + pad) + steps * (glimpse_side + pad)
    sheet = Image.new("RGB", (width, pad + row_height * len(samples)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for row, sample in enumerate(samples):
        top = pad + row * row_height
        sheet.paste(boxed_image(sample.proxy, sample.boxes, side), (pad, top))
        sheet.paste(boxed_image(sample.image, sample.boxes, side), (2 * pad + side, top))
        strip = glimpse_strip(sample.glimpses, glimpse_side, pad)
        sheet.paste(strip, (pad + 2 * (side + pad), top))
        draw.text((pad, top + side + 2), sample.caption, fill=(0, 0, 0), font=font(14))
    return sheet


def describe(prediction: Tensor, class_names: Sequence[str] | None = None) -> str:
    """A class index, or a multi-hot set, as text: ``7``, ``{3, 7}`` or ``animals``."""
    name = (lambda i: class_names[i]) if class_names else str
    if prediction.ndim == 0:
        return name(int(prediction))
    return "{" + ", ".join(name(i) for i in torch.nonzero(prediction).flatten().tolist()) + "}"
