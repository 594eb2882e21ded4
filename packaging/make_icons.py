"""Draw liverview's application icon into resources/icons/ (PNG in every size, .ico, .icns).

    python packaging/make_icons.py          # rewrites resources/icons/*; the results are committed

The motif: a liver silhouette on a dark rounded tile, with one lesion circled by a dashed outline
(what a reader draws in the app). Each PNG is painted at its own size from vector paths, so the
small sizes stay sharp; only the .ico/.icns containers are assembled by Pillow.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6.QtCore import QPointF, QRectF, Qt  # noqa: E402 - after the platform choice
from PySide6.QtGui import QBrush, QColor, QGuiApplication, QImage, QPainter, QPainterPath, QPen, QRadialGradient  # noqa: E402

SIZES = (16, 32, 48, 64, 128, 256, 512)
ICO_SIZES = (16, 32, 48, 64, 128, 256)  # the .ico format stops at 256 px
OUT = Path(__file__).resolve().parent.parent / "resources" / "icons"


def liver_path() -> QPainterPath:
    """The liver's outline in a 100 x 100 box, seen from the front as in a coronal image: the large
    right lobe on the viewer's left, tapering into the left lobe, a shallow notch below."""
    p = QPainterPath(QPointF(14, 42))
    p.cubicTo(14, 24, 40, 20, 60, 24)           # dome of the right lobe
    p.cubicTo(74, 27, 88, 28, 92, 36)           # across the top to the left lobe's tip
    p.cubicTo(95, 42, 86, 48, 74, 52)           # under the left lobe
    p.cubicTo(62, 56, 56, 58, 52, 63)           # towards the notch
    p.cubicTo(46, 72, 34, 82, 24, 78)           # lower edge of the right lobe
    p.cubicTo(15, 74, 14, 56, 14, 42)           # back up the lateral side
    p.closeSubpath()
    return p


def draw_icon(size: int) -> QImage:
    image = QImage(size, size, QImage.Format_ARGB32_Premultiplied)
    image.fill(Qt.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.Antialiasing)
    painter.scale(size / 100.0, size / 100.0)
    # Thicker strokes at small sizes: a 1-pixel line disappears in a 16 px taskbar icon.
    px = 100.0 / size

    painter.setPen(Qt.NoPen)
    painter.setBrush(QColor(28, 34, 44))
    painter.drawRoundedRect(QRectF(2, 2, 96, 96), 20, 20)

    glow = QRadialGradient(QPointF(40, 38), 55)
    glow.setColorAt(0.0, QColor(196, 92, 78))
    glow.setColorAt(1.0, QColor(128, 44, 40))
    painter.setBrush(QBrush(glow))
    painter.setPen(QPen(QColor(232, 150, 128), max(1.2, 1.0 * px)))
    painter.drawPath(liver_path())

    centre, radius = QPointF(38, 46), 9.0
    painter.setPen(Qt.NoPen)
    painter.setBrush(QColor(242, 214, 170))
    painter.drawEllipse(centre, radius, radius)

    ring = QPen(QColor(96, 200, 240), max(2.6, 1.6 * px))
    if size >= 48:
        ring.setDashPattern([2.2, 1.4])
    painter.setPen(ring)
    painter.setBrush(Qt.NoBrush)
    painter.drawEllipse(centre, radius + 5.5, radius + 5.5)
    painter.end()
    return image


def write_containers(pngs: dict[int, Path]) -> None:
    """liverview.ico (Windows) and liverview.icns (macOS) from the PNGs, each size as drawn."""
    from PIL import Image

    images = {size: Image.open(path).convert("RGBA") for size, path in pngs.items()}
    largest_ico = images[max(ICO_SIZES)]
    largest_ico.save(OUT / "liverview.ico", format="ICO", sizes=[(s, s) for s in ICO_SIZES],
                     append_images=[images[s] for s in ICO_SIZES if s != max(ICO_SIZES)])
    images[max(SIZES)].save(OUT / "liverview.icns", format="ICNS",
                            append_images=[images[s] for s in SIZES if s != max(SIZES)])


def main() -> int:
    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 - QPainter needs it
    OUT.mkdir(parents=True, exist_ok=True)
    pngs = {}
    for size in SIZES:
        path = OUT / f"liverview-{size}.png"
        if not draw_icon(size).save(str(path)):
            raise OSError(f"cannot write {path}")
        pngs[size] = path
    write_containers(pngs)
    print(f"wrote {len(pngs)} PNGs, liverview.ico and liverview.icns to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
