"""The evidence sheet: the audited image beside its matches, each captioned with its scores."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from easel.audit.service import AuditResult

TILE = 192
"""Side of each picture on the sheet, in pixels."""
_CAPTION = 64
_COLOURS = {"copy": (200, 30, 30), "near-copy": (220, 110, 0), "strong style match": (30, 90, 200),
            "none": (90, 90, 90)}


def _fit(picture: Image.Image) -> Image.Image:
    tile = Image.new("RGB", (TILE, TILE), (255, 255, 255))
    copy = picture.convert("RGB")
    copy.thumbnail((TILE, TILE), Image.Resampling.LANCZOS)
    tile.paste(copy, ((TILE - copy.width) // 2, (TILE - copy.height) // 2))
    return tile


def evidence_sheet(query: Image.Image, result: AuditResult,
                   pictures: list[Image.Image | None], path: Path) -> Path:
    """Write a PNG: the query first, then each match (``pictures`` in ``result.matches`` order,
    ``None`` where a work's picture is not available) with work, owner, scores and verdict."""
    columns = 1 + len(result.matches)
    sheet = Image.new("RGB", (columns * (TILE + 8) + 8, TILE + _CAPTION + 16), (245, 245, 245))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=12)
    tiles: list[tuple[Image.Image | None, list[str], tuple[int, int, int]]] = [
        (query, [f"audited: {result.name}"[:30], f"verdict: {result.verdict}"], (0, 0, 0))]
    for match, picture in zip(result.matches, pictures, strict=True):
        pdq = "-" if match.pdq_distance is None else str(match.pdq_distance)
        tiles.append((picture, [f"{match.work_id} ({match.owner_id})"[:30],
                                f"copy {match.copy_score:.2f} style {match.style_score:.2f}",
                                f"PDQ {pdq}  {match.verdict}"], _COLOURS[match.verdict]))
    for i, (picture, lines, colour) in enumerate(tiles):
        x = 8 + i * (TILE + 8)
        if picture is not None:
            sheet.paste(_fit(picture), (x, 8))
        else:
            draw.rectangle((x, 8, x + TILE, 8 + TILE), outline=(160, 160, 160))
            draw.text((x + 8, 8 + TILE // 2), "picture not stored", fill=(120, 120, 120), font=font)
        draw.rectangle((x - 2, 6, x + TILE + 1, 9 + TILE), outline=colour, width=2)
        for j, line in enumerate(lines):
            draw.text((x, 14 + TILE + j * 16), line, fill=colour, font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, format="PNG")
    return path
