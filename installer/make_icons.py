"""Regenerate vidtray/icons/*.png and *.ico (run once after changing the design; outputs are committed)."""

from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent.parent / "vidtray" / "icons"
COLOURS = {"idle": (52, 120, 220), "busy": (235, 150, 30), "warning": (210, 50, 50)}


def draw(name: str, size: int = 256) -> Image.Image:
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    s = size / 64
    d.rounded_rectangle([4 * s, 10 * s, 60 * s, 54 * s], radius=8 * s, fill=COLOURS[name])
    if name == "warning":
        d.rectangle([29 * s, 18 * s, 35 * s, 38 * s], fill="white")
        d.rectangle([29 * s, 42 * s, 35 * s, 48 * s], fill="white")
    else:
        d.polygon([(24 * s, 20 * s), (24 * s, 44 * s), (44 * s, 32 * s)], fill="white")
        if name == "busy":
            d.ellipse([46 * s, 2 * s, 62 * s, 18 * s], fill=(255, 255, 255), outline=COLOURS[name], width=int(2 * s))
    return img


if __name__ == "__main__":
    for name in COLOURS:
        img = draw(name)
        img.resize((64, 64), Image.LANCZOS).save(OUT / f"{name}.png")
        img.save(OUT / f"{name}.ico", sizes=[(16, 16), (24, 24), (32, 32), (48, 48), (64, 64), (256, 256)])
