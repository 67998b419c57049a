"""The grid's tiles as the pixels of one image on the map, coloured in NumPy.

Drawing every tile as a rectangle of its own costs the browser a repaint of tens of
thousands of shapes at each step of the clock; one RGBA image whose pixels are the
tiles costs one ``drawImage``. A tile id ``g{column}_{row}`` names its cell of the
``grid_m`` grid in EPSG:31370 (:func:`sim.dashboard.data.tile_outlines`), so the tile of
pixel ``(i, j)`` is column ``column0 + i``, row ``row0 + j``.

The image is placed in Web Mercator, axis-aligned, with pixels of one width and one
height: Lambert 72 is not Mercator, so a tile's true place and its pixel differ a
little. Fitted on the tiles' centres, the largest difference is 0.08 of a tile on the
full team-time-trial grid (183 x 179 tiles around Brussels) and 0.015 on the smoke
run's; :meth:`TileImage.from_ids` measures it and refuses a grid where it would reach
half a tile (a region of well over 50 km), where a pixel could show its neighbour.

The colours are those Bokeh's ``LinearColorMapper`` and ``LogColorMapper`` would give
(same palette, bounds and rounding, see :func:`colour_index`), so the colour bar beside
the map, still drawn from those mappers, reads the image right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["MAX_ERROR_TILES", "TileImage", "colour_index", "hex_rgb", "pack_rgba"]

#: Largest allowed distance (in tiles) between a tile's true place and its pixel.
MAX_ERROR_TILES = 0.5


def hex_rgb(colours: Sequence[str]) -> np.ndarray:
    """``#rrggbb`` colours as an (n, 3) uint8 array.

    Raises
    ------
    ValueError
        A colour that is not ``#rrggbb``.
    """
    out = np.zeros((len(colours), 3), dtype=np.uint8)
    for k, colour in enumerate(colours):
        if not (isinstance(colour, str) and len(colour) == 7 and colour.startswith("#")):
            raise ValueError(f"colour {colour!r}: allowed are '#rrggbb' strings")
        try:
            out[k] = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
        except ValueError:
            raise ValueError(f"colour {colour!r}: allowed are '#rrggbb' strings") from None
    return out


def colour_index(value: np.ndarray, n: int, *, low: float, high: float, log: bool) -> np.ndarray:
    """Palette index (0 to `n` - 1) of each value, as BokehJS's colour mappers compute it.

    Linear: ``floor((value - low) / (high - low) * n)``; log: ``floor(log(value / low) *
    n / log(high / low))``; ``high`` itself is the last colour, values outside the bounds
    take the end colours (the mappers have no low or high colour of their own). NaN gets
    index -1 (the caller paints it the NaN colour).
    """
    value = np.asarray(value, dtype=np.float64)
    nan = np.isnan(value)
    with np.errstate(divide="ignore", invalid="ignore"):
        if log:
            raw = np.floor(np.log(value / low) * (n / np.log(high / low)))
            raw = np.where(value < low, 0.0, raw)
        else:
            raw = np.floor((value - low) / (high - low) * n)
    index = np.clip(np.nan_to_num(raw, nan=0.0, posinf=n - 1, neginf=0.0), 0, n - 1)
    index = np.where(value == high, n - 1, index).astype(np.int64)
    index[nan] = -1
    return index


def pack_rgba(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(n, 3) uint8 colours and opacities (0 to 1) as the uint32 pixels ``image_rgba`` takes.

    The bytes of a pixel are R, G, B, A in memory (little-endian uint32), as the
    browser's ``ImageData`` reads them.
    """
    a = np.clip(np.rint(np.asarray(alpha, dtype=np.float64) * 255.0), 0, 255).astype(np.uint32)
    rgb = np.asarray(rgb, dtype=np.uint32)
    packed = rgb[:, 0] | (rgb[:, 1] << 8) | (rgb[:, 2] << 16) | (a << 24)
    return packed.astype("<u4")


@dataclass(frozen=True, eq=False)
class TileImage:
    """Where a grid's tiles sit as the pixels of one image in Web Mercator.

    Attributes
    ----------
    column0, row0
        Grid column and row of pixel (0, 0) (the bottom-left one).
    nx, ny
        Pixels across and up.
    x, y, dw, dh
        The image's bottom-left corner and size on the map (Web Mercator metres).
    pixel
        Flat pixel (``j * nx + i``) of each zone row.
    row_of_pixel
        The zone row of each flat pixel, -1 where there is no tile.
    error
        Largest distance between a tile's centre and its pixel's centre, in tiles.
    """

    column0: int
    row0: int
    nx: int
    ny: int
    x: float
    y: float
    dw: float
    dh: float
    pixel: np.ndarray
    row_of_pixel: np.ndarray
    error: float

    @classmethod
    def from_ids(cls, ids: Sequence[str], grid_m: float) -> TileImage:
        """The image of tiles `ids` (``g{column}_{row}``) of a `grid_m` metre grid.

        Raises
        ------
        ValueError
            An id that is not a tile id, a tile named twice, no tiles, or a grid too
            large to be drawn as one image (see the module's note).
        """
        from sim.dashboard.data import to_map

        if not len(ids):
            raise ValueError("no tiles: an image of the grid needs at least one")
        cols, rows = _columns_rows(ids)
        column0, row0 = int(cols.min()), int(rows.min())
        nx, ny = int(cols.max()) - column0 + 1, int(rows.max()) - row0 + 1
        i, j = cols - column0, rows - row0
        pixel = j * nx + i
        row_of_pixel = np.full(nx * ny, -1, dtype=np.int64)
        row_of_pixel[pixel] = np.arange(len(ids))
        if (row_of_pixel >= 0).sum() != len(ids):
            seen: dict[int, str] = {}
            for zid, p in zip(ids, pixel.tolist(), strict=True):
                if p in seen:
                    raise ValueError(f"tiles {seen[p]!r} and {zid!r}: the same grid cell twice")
                seen[p] = zid
        # pixel size: the grid's width along its middle row and height along its middle
        # column; then the corner that puts the tiles' centres best (least squares)
        g = float(grid_m)
        mid_x, mid_y = (column0 + nx / 2.0) * g, (row0 + ny / 2.0) * g
        ex, _ = to_map([column0 * g, (column0 + nx) * g], [mid_y, mid_y])
        _, ey = to_map([mid_x, mid_x], [row0 * g, (row0 + ny) * g])
        px, py = float(ex[1] - ex[0]) / nx, float(ey[1] - ey[0]) / ny
        cx, cy = to_map((cols + 0.5) * g, (rows + 0.5) * g)
        x0 = float(np.mean(cx - px * (i + 0.5)))
        y0 = float(np.mean(cy - py * (j + 0.5)))
        error = float(
            max(
                np.abs(cx - (x0 + px * (i + 0.5))).max() / px,
                np.abs(cy - (y0 + py * (j + 0.5))).max() / py,
            )
        )
        if error >= MAX_ERROR_TILES:
            raise ValueError(
                f"{len(ids)} tiles over {nx} x {ny} cells of {g:g} m: drawn as one image "
                f"in Web Mercator a tile would sit {error:.2f} of a tile from its place "
                f"(allowed: under {MAX_ERROR_TILES}); the region is too large for the map"
            )
        return cls(column0, row0, nx, ny, x0, y0, px * nx, py * ny, pixel, row_of_pixel, error)

    def spread(self, per_zone: np.ndarray, *, fill: float | int) -> np.ndarray:
        """Per-zone values as an (ny, nx) image, `fill` where there is no tile."""
        per_zone = np.asarray(per_zone)
        if len(per_zone) != len(self.pixel):
            raise ValueError(f"{len(per_zone)} values for an image of {len(self.pixel)} tiles")
        out = np.full(self.nx * self.ny, fill, dtype=per_zone.dtype)
        out[self.pixel] = per_zone
        return out.reshape(self.ny, self.nx)

    def zone_image(self, ids: Sequence[str]) -> list[list[str]]:
        """The zone id of each pixel, rows bottom-up ("" where there is no tile): for hover."""
        names = np.asarray([*ids, ""], dtype=object)[self.row_of_pixel]
        return names.reshape(self.ny, self.nx).tolist()

    def tile_at(self, x: float, y: float) -> int | None:
        """The zone row of the tile under map point (`x`, `y`), None off the tiles."""
        if not (np.isfinite(x) and np.isfinite(y)):
            return None
        i = int(np.floor((x - self.x) / self.dw * self.nx))
        j = int(np.floor((y - self.y) / self.dh * self.ny))
        if not (0 <= i < self.nx and 0 <= j < self.ny):
            return None
        row = int(self.row_of_pixel[j * self.nx + i])
        return row if row >= 0 else None

    def centre(self, row: int) -> tuple[float, float]:
        """Map point of the centre of zone row `row`'s pixel."""
        p = int(self.pixel[row])
        j, i = divmod(p, self.nx)
        return (
            self.x + (i + 0.5) * self.dw / self.nx,
            self.y + (j + 0.5) * self.dh / self.ny,
        )


def _columns_rows(ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    cols = np.empty(len(ids), dtype=np.int64)
    rows = np.empty(len(ids), dtype=np.int64)
    for k, zid in enumerate(ids):
        col, sep, row = str(zid)[1:].partition("_")
        try:
            if not str(zid).startswith("g") or not sep:
                raise ValueError(zid)
            cols[k], rows[k] = int(col), int(row)
        except ValueError:
            raise ValueError(f"zone {zid!r}: not a grid tile id (g<column>_<row>)") from None
    return cols, rows
