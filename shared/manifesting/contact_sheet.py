"""The contact sheet (E2): a numbered grid of a manifest's images, one picture to review or to
hand to a model as context."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

CELL = 256
LABEL = 40
COLUMNS = 4
MARGIN = 8
BACKGROUND = (24, 24, 28)
TEXT = (235, 235, 235)


@dataclass(frozen=True)
class SheetEntry:
    image: Image.Image
    label: str
    """E.g. "CHAR_01 Ada"; the sheet prefixes its number."""


def make_contact_sheet(entries: Sequence[SheetEntry], columns: int = COLUMNS) -> Image.Image:
    if not entries:
        raise ValueError("a contact sheet needs at least one image")
    columns = min(columns, len(entries))
    rows = -(-len(entries) // columns)
    width = columns * (CELL + MARGIN) + MARGIN
    height = rows * (CELL + LABEL + MARGIN) + MARGIN
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=16)
    for number, entry in enumerate(entries, start=1):
        row, column = divmod(number - 1, columns)
        left = MARGIN + column * (CELL + MARGIN)
        top = MARGIN + row * (CELL + LABEL + MARGIN)
        thumb = entry.image.convert("RGB")
        thumb.thumbnail((CELL, CELL))
        # Centred in its cell so that portraits and landscapes line up.
        sheet.paste(thumb, (left + (CELL - thumb.width) // 2, top + (CELL - thumb.height) // 2))
        text = f"[{number}] {entry.label}"
        while draw.textlength(text, font=font) > CELL and len(text) > 4:
            text = text[:-2] + "…"
        draw.text((left, top + CELL + 8), text, fill=TEXT, font=font)
    return sheet
