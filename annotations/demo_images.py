"""Demo images for `manage.py demo`: a small text-to-image campaign whose pictures are drawn here with Pillow.

Each prompt asks for simple shapes; one image follows it and the other misses something (colour, shape,
count, position), so a person can tell them apart at a glance. Drawn on the fly: nothing to license.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from typing import Any

from PIL import Image, ImageDraw

SIZE = 256
Draw = Callable[[ImageDraw.ImageDraw], None]


def _circle(color: str, box: tuple[int, int, int, int]) -> Draw:
    return lambda draw: draw.ellipse(box, fill=color, outline="black", width=3)


def _square(color: str, box: tuple[int, int, int, int]) -> Draw:
    return lambda draw: draw.rectangle(box, fill=color, outline="black", width=3)


def _triangle(color: str, points: list[tuple[int, int]]) -> Draw:
    return lambda draw: draw.polygon(points, fill=color, outline="black", width=3)


def _text(text: str, color: str) -> Draw:
    return lambda draw: draw.text((SIZE // 2, SIZE // 2), text, fill=color, anchor="mm", font_size=56)


def _pentagons(count: int) -> Draw:
    def draw_pentagons(draw: ImageDraw.ImageDraw) -> None:
        for n in range(count):
            x = 40 + (n % 3) * 88
            y = 70 + (n // 3) * 110
            draw.regular_polygon((x, y, 30), 5, fill="gold", outline="black")

    return draw_pentagons


# (prompt, background, [what follows the prompt], [what misses it])
SCENES: list[tuple[str, str, list[Draw], list[Draw]]] = [
    (
        "A red circle in the centre of a white canvas",
        "white",
        [_circle("red", (68, 68, 188, 188))],
        [_square("red", (68, 68, 188, 188))],
    ),
    (
        "A blue square above a green triangle",
        "white",
        [_square("royalblue", (88, 20, 168, 100)), _triangle("green", [(128, 130), (68, 236), (188, 236)])],
        [_triangle("green", [(128, 20), (68, 126), (188, 126)]), _square("royalblue", (88, 150, 168, 230))],
    ),
    ("Three yellow pentagons on a night-blue sky", "midnightblue", [_pentagons(3)], [_pentagons(5)]),
    ("The word HELLO in white on black", "black", [_text("HELLO", "white")], [_text("HELO", "white")]),
    (
        "A small orange circle in the top-left corner",
        "white",
        [_circle("orange", (16, 16, 76, 76))],
        [_circle("orange", (180, 180, 240, 240))],
    ),
    (
        "Two purple squares side by side",
        "lavenderblush",
        [_square("purple", (20, 88, 110, 178)), _square("purple", (146, 88, 236, 178))],
        [_square("purple", (83, 88, 173, 178))],
    ),
]


def demo_picture(background: str, shapes: list[Draw]) -> bytes:
    """One demo picture as PNG bytes."""
    image = Image.new("RGB", (SIZE, SIZE), background)
    draw = ImageDraw.Draw(image)
    for shape in shapes:
        shape(draw)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _data_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def demo_image_rows(models: list[str]) -> list[dict[str, Any]]:
    """Pairwise import rows: the prompt, the two pictures (the better one alternating sides), gold on some."""
    rows = []
    for index, (prompt, background, good, bad) in enumerate(SCENES):
        pictures = [demo_picture(background, good), demo_picture(background, bad)]
        if index % 2:
            pictures.reverse()
        row: dict[str, Any] = {
            "prompt": prompt,
            "responses": [{"image": _data_uri(p), "model": models[n]} for n, p in enumerate(pictures)],
            "meta": {"source": "demo"},
        }
        if index % 3 == 0:
            row["gold"] = {"choice": "b" if index % 2 else "a"}
        rows.append(row)
    return rows
