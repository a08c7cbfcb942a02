"""Closed race-circuit geometry for the 1:10 RC car simulator: load, scale, resample, check, project.

Sources (`load_track`)
----------------------
* A CSV in the TUM FTM racetrack-database format: one header line
  ``# x_m,y_m,w_tr_right_m,w_tr_left_m``, then one row per centre-line point (metres; track width to
  the right and to the left of the point). The rows form a closed loop (the last point is near the
  first, not a copy of it; an exact copy is dropped) and their order is the direction of travel.
* A bundled circuit by name, case-insensitive, with or without ``.csv``: Budapest, Monza, Spielberg,
  Zandvoort (copies of the TUM files in ``sim/data/racetracks``; see the README there for attribution).
* ``"generated"`` or ``"generated:SEED"``: a smooth random loop from `generate_centreline`.

Geometry
--------
The real circuits are 3 to 6 km long; the car is 1:10 and drives on a 40 to 80 m loop. The centre line
is therefore scaled uniformly (about the file's origin, so the TUM start line stays near (0, 0)) until
the loop is ``length_m`` long, keeping its shape. It is then resampled by arc length at a uniform
spacing (``N = round(length_m / ds)`` points, effective spacing ``length_m / N``). Linear
interpolation between the file's points leaves a small kink at every original vertex, which would show
up as noise in the curvature, so the resampled loop gets a light circular moving average over about
0.3 m (3 points at ds = 0.1 m) and is then resampled and rescaled once more, so that the points are
uniform again and the loop is exactly ``length_m`` long. The average changes a 0.65 m corner radius by
under 1 %; only bends far tighter than the car can drive (radius under about 0.5 m) are rounded
noticeably (Monza's first chicane at 55 m reads 0.42 m instead of 0.37 m: infeasible either way).
The corridor has the constant width ``width_m``; the widths in the file are only validated (a
full-size circuit's 10 to 15 m width means nothing for the small car).

Feasibility checks (after scaling)
----------------------------------
* Radius of curvature: the circumradius of the points ``k`` steps before and after each point, with
  ``k * ds`` about 0.5 m. A 0.5 m baseline is on the scale of the car's turning circle and long
  enough that the residual resampling noise does not create false tight corners. It is exact on arcs
  longer than 1 m (a 90 degree bend of 0.65 m radius); on a bend shorter than that it reads larger than
  the true radius, so a radius it finds too small is certainly too small. The smallest radius
  must be at least the car's minimum turning radius (`TrackLimits.min_turn_radius_m`), and at least
  half the corridor width: below that the inner boundary (centre + normal * width / 2) folds over
  itself and the inner wall would cross itself.
* Closest approach: the smallest distance between centre-line points that are further apart than
  ``max(3 * width, 4 m)`` along the loop (either way round). Points closer than that along the loop
  belong to the same stretch of road (including the two legs of a tight corner, whose walls are
  continuous), so only sections further apart count as neighbours that need a wall between them. Two
  such sections must be at least ``width + wall_clearance_m`` apart, otherwise their corridors touch
  or overlap and there is no room for a wall.

RC-scale simplification (``smooth_m``)
--------------------------------------
Real circuits keep hairpins and chicanes that no RC car can drive at 40 to 80 m (Monza's tightest
corner reads 0.42 m at 55 m; the four bundled circuits need 200 to 470 m loops at the default limits).
``smooth_m > 0`` eases them: a circular Gaussian smoothing of the scaled centre line with a standard
deviation of ``smooth_m`` metres of arc length, then the usual resample and rescale. Long corners keep
their shape; hairpins open up and chicanes flatten, as when a layout is redrawn for a small car. The
checks then apply to the simplified line, and `RaceTrack.report` records ``smooth_m``. The default, 0,
keeps the circuit as it is (and refuses it when the car cannot drive it).

Every infeasible finding is listed in one `TrackError` (or one warning with
``TrackLimits(on_infeasible="warn")``, which loads the track anyway, e.g. to look at it, with the
findings in `RaceTrack.problems`).
Malformed input (missing file, bad header, wrong column count, non-numeric / NaN / inf values, negative
widths, fewer than 10 points, an open loop, a self-crossing centre line) always raises `TrackError`,
whose message names the source and the problem.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "data" / "racetracks"
CSV_COLUMNS = ("x_m", "y_m", "w_tr_right_m", "w_tr_left_m")
MIN_POINTS = 10
MIN_RESAMPLED = 40  # fewer resampled points cannot describe corners or their curvature
CLOSURE_FACTOR = 5.0  # the closing gap may be at most this many median spacings
RADIUS_BASELINE_M = 0.5  # circumradius from points this far before and after each point
SMOOTH_WINDOW_M = 0.3  # circular moving-average window that removes the resampling kinks
NEIGHBOUR_MIN_SEP_M = 4.0  # sections count as "non-adjacent" beyond max(3 * width, this) of arc length
GENERATOR_MAX_DRAWS = 50
GENERATOR_HARMONICS = (2, 3, 4, 5)
GENERATOR_AMPLITUDE = 0.7  # harmonic k has amplitude up to this / k (relative to the mean radius)
# The generator's draws are checked at load_track's defaults, so that a seed names one shape whatever
# length or width it is later loaded at.
REFERENCE_LENGTH_M = 55.0
REFERENCE_WIDTH_M = 1.6
REFERENCE_DS = 0.1
_CHUNK = 256  # rows per block in the pairwise tests: bounds memory at 256 x N


class TrackError(ValueError):
    """Bad track input or an infeasible track; the message names the source and the problem."""


@dataclass(frozen=True)
class TrackLimits:
    """What the car and the walls need from a track (see the module docstring for the checks)."""

    min_turn_radius_m: float = 0.65  # pybullet racecar, steering +-0.5 rad
    wall_clearance_m: float = 0.3  # extra gap between two non-adjacent sections' corridors, for a wall
    on_infeasible: str = "error"  # "error" raises TrackError; "warn" warns and loads anyway

    def __post_init__(self) -> None:
        if self.on_infeasible not in ("error", "warn"):
            raise TrackError(f"TrackLimits: on_infeasible must be 'error' or 'warn', got {self.on_infeasible!r}")
        if not (self.min_turn_radius_m >= 0 and self.wall_clearance_m >= 0):
            raise TrackError(
                f"TrackLimits: min_turn_radius_m and wall_clearance_m must be >= 0, got "
                f"{self.min_turn_radius_m} and {self.wall_clearance_m}"
            )


@dataclass(frozen=True)
class Projection:
    """Where a point lies relative to the centre line."""

    index: int  # index of the nearest centre-line point (local search)
    s: float  # arc length of that point (m), in [0, length)
    lateral: float  # signed offset from the centre line, positive to the LEFT of the direction of travel (m)
    heading: float  # centre-line tangent heading at index (rad, atan2 convention)


@dataclass
class RaceTrack:
    """A closed centre line at uniform spacing with a constant-width corridor (build with `load_track`)."""

    name: str
    centre: np.ndarray  # (N, 2) closed loop at uniform spacing ds, first point NOT repeated at the end
    width: float  # constant corridor width (m)
    ds: float  # spacing (m): length / N
    s: np.ndarray  # (N,) arc length of each point, s[0] = 0
    length: float  # loop length (m)
    heading: np.ndarray  # (N,) tangent heading (rad)
    normal: np.ndarray  # (N, 2) unit normal pointing LEFT of travel
    left: np.ndarray  # (N, 2) left boundary = centre + normal * width / 2
    right: np.ndarray  # (N, 2) right boundary = centre - normal * width / 2
    min_radius: float  # smallest centre-line radius of curvature (m)
    min_radius_s: float  # where (arc length)
    closest_approach: float  # smallest distance between non-adjacent sections (m; inf if none)
    closest_approach_s: tuple[float, float]  # where (arc lengths; nan, nan if none)
    problems: tuple[str, ...] = ()  # infeasibility findings (non-empty only if loaded with on_infeasible="warn")
    smooth_m: float = 0.0  # the RC-scale simplification applied (0: the circuit as it is)

    def project(self, xy: np.ndarray, hint: int | None = None, window_m: float = 4.0) -> Projection:
        """Nearest centre-line point to `xy`, searched within +-window_m of arc length around `hint`.

        A global nearest point jumps to a neighbouring section wherever two sections run close
        together, which would teleport the car's progress; so after the start (hint None: global search)
        pass the previous projection's index as the hint.
        """
        p = np.asarray(xy, dtype=np.float64).reshape(2)
        n = len(self.centre)
        if hint is None:
            candidates = np.arange(n)
        else:
            half = min(int(math.ceil(window_m / self.ds)), n // 2)
            candidates = (int(hint) + np.arange(-half, half + 1)) % n
        d2 = np.sum((self.centre[candidates] - p) ** 2, axis=1)
        i = int(candidates[int(np.argmin(d2))])
        lateral = float(np.dot(p - self.centre[i], self.normal[i]))
        return Projection(index=i, s=float(self.s[i]), lateral=lateral, heading=float(self.heading[i]))

    def point_at(self, s: float) -> tuple[np.ndarray, float]:
        """(xy, heading) at arc length `s` (wrapped mod length), interpolated linearly between points."""
        n = len(self.centre)
        u = (float(s) % self.length) / self.ds
        i = int(math.floor(u)) % n
        frac = u - math.floor(u)
        j = (i + 1) % n
        xy = self.centre[i] + frac * (self.centre[j] - self.centre[i])
        dh = math.remainder(float(self.heading[j] - self.heading[i]), 2 * math.pi)
        heading = math.remainder(float(self.heading[i]) + frac * dh, 2 * math.pi)
        return xy, heading

    def wrap_delta(self, ds: float) -> float:
        """Arc-length difference wrapped to (-length/2, length/2]: progress across the start line."""
        half = self.length / 2
        return -((half - float(ds)) % self.length - half)

    def report(self) -> dict:
        """The numbers that decide whether the track suits the car, as plain Python values."""
        return {
            "name": self.name,
            "length": float(self.length),
            "width": float(self.width),
            "min_radius": float(self.min_radius),
            "min_radius_s": float(self.min_radius_s),
            "closest_approach": float(self.closest_approach),
            "closest_approach_s": tuple(float(v) for v in self.closest_approach_s),
            "n_points": len(self.centre),
            "smooth_m": float(self.smooth_m),
            "feasible": not self.problems,
            "problems": list(self.problems),
        }


def bundled_tracks() -> list[str]:
    """Names of the circuits shipped in sim/data/racetracks."""
    return sorted(p.stem for p in DATA_DIR.glob("*.csv"))


def _parse_row(cells: list[str], where: str) -> list[float]:
    """One data row as floats, rejecting wrong column counts, text, NaN, inf and negative widths."""
    if len(cells) != len(CSV_COLUMNS):
        raise TrackError(f"{where}: expected {len(CSV_COLUMNS)} columns ({','.join(CSV_COLUMNS)}), got {len(cells)}")
    values = []
    for column, cell in zip(CSV_COLUMNS, cells, strict=True):
        try:
            v = float(cell)
        except ValueError:
            raise TrackError(f"{where}: non-numeric value {cell.strip()!r} in {column}") from None
        if math.isnan(v):
            raise TrackError(f"{where}: NaN in {column}")
        if math.isinf(v):
            raise TrackError(f"{where}: inf in {column}")
        if column.startswith("w_") and v < 0:
            raise TrackError(f"{where}: negative width {v} in {column}")
        values.append(v)
    return values


def read_centreline_csv(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(xy (N, 2), widths (N, 2) right/left) in the file's metres, validated row by row.

    Rows are numbered from 1 after the header; the message also gives the file line.
    """
    path = Path(path)
    if not path.exists():
        raise TrackError(f"{path}: file not found")
    if not path.is_file():
        raise TrackError(f"{path}: not a file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise TrackError(f"{path.name}: not a UTF-8 text file") from None
    if not any(line.strip() for line in lines):
        raise TrackError(f"{path.name}: empty file")
    expected = "# " + ",".join(CSV_COLUMNS)
    header = lines[0].strip()
    if not header.startswith("#"):
        raise TrackError(f"{path.name}: no header line; the first line must be {expected!r}")
    if [c.strip() for c in header.lstrip("#").split(",")] != list(CSV_COLUMNS):
        raise TrackError(f"{path.name}: header {header!r} does not name the columns {expected!r}")
    rows = []
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        rows.append(_parse_row(line.split(","), f"{path.name}: row {len(rows) + 1} (line {line_no})"))
    if not rows:
        raise TrackError(f"{path.name}: no data rows after the header")
    data = np.asarray(rows, dtype=np.float64)
    return data[:, :2].copy(), data[:, 2:].copy()


def _distinct(xy: np.ndarray) -> np.ndarray:
    """Indices of the points that differ from their successor (a repeated first point at the end goes)."""
    return np.flatnonzero(np.any(xy != np.roll(xy, -1, axis=0), axis=1))


def _orient(p0: np.ndarray, dp: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Cross product dp x (q - p0): which side of the line through p0 along dp the point q is on."""
    return dp[..., 0] * (q[..., 1] - p0[..., 1]) - dp[..., 1] * (q[..., 0] - p0[..., 0])


def _first_crossing(xy: np.ndarray) -> tuple[int, int, int]:
    """(i, j, count) for segments i -> i+1 and j -> j+1 of the closed polygon that cross; (-1, -1, 0) if none.

    Orientation test on every pair of non-neighbouring segments, in row blocks. Touching counts as
    crossing; two collinear overlapping segments (all four orientations zero) are not reported.
    """
    n = len(xy)
    a, b = xy, np.roll(xy, -1, axis=0)
    d = b - a
    idx = np.arange(n)
    first, count = (-1, -1), 0
    for start in range(0, n, _CHUNK):
        i = idx[start : start + _CHUNK, None]
        gap = (idx[None, :] - i) % n
        pair = (gap >= 2) & (gap <= n - 2) & (idx[None, :] > i)
        o1 = _orient(a[i], d[i], a[None, :])
        o2 = _orient(a[i], d[i], b[None, :])
        o3 = _orient(a[None, :], d[None, :], a[i])
        o4 = _orient(a[None, :], d[None, :], b[i])
        collinear = (o1 == 0) & (o2 == 0) & (o3 == 0) & (o4 == 0)
        hit = pair & (o1 * o2 <= 0) & (o3 * o4 <= 0) & ~collinear
        if hit.any():
            if count == 0:
                r, c = np.argwhere(hit)[0]
                first = (int(i[r, 0]), int(c))
            count += int(hit.sum())
    return first[0], first[1], count


def _check_loop(xy: np.ndarray, source: str) -> np.ndarray:
    """The distinct points of a centre line that is long enough, closed, and does not cross itself."""
    keep = _distinct(xy)
    pts = xy[keep]
    if len(pts) < MIN_POINTS:
        raise TrackError(f"{source}: only {len(pts)} distinct points; a track needs at least {MIN_POINTS}")
    spacing = np.hypot(*np.diff(pts, axis=0).T)
    median = float(np.median(spacing))
    gap = float(np.hypot(*(pts[-1] - pts[0])))
    if gap > CLOSURE_FACTOR * median:
        raise TrackError(
            f"{source}: not closed: the last point is {gap:.2f} m from the first, {gap / median:.1f}x the "
            f"median spacing {median:.2f} m (at most {CLOSURE_FACTOR:g}x allowed)"
        )
    i, j, count = _first_crossing(pts)
    if count:
        row = keep + 1  # 1-based row numbers in the source
        n = len(pts)
        raise TrackError(
            f"{source}: centre line crosses itself: segment rows {row[i]}-{row[(i + 1) % n]} crosses rows "
            f"{row[j]}-{row[(j + 1) % n]} near x={pts[i, 0]:.2f}, y={pts[i, 1]:.2f} "
            f"({count} crossing segment pair{'s' if count > 1 else ''})"
        )
    return pts


def _perimeter(xy: np.ndarray) -> float:
    return float(np.sum(np.hypot(*(np.roll(xy, -1, axis=0) - xy).T)))


def _resample(xy: np.ndarray, n: int) -> np.ndarray:
    """`n` points at uniform arc length along the closed polygon `xy`, starting at xy[0]."""
    closed = np.vstack([xy, xy[:1]])
    cum = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(closed, axis=0).T))])
    t = np.arange(n) * (cum[-1] / n)
    return np.column_stack([np.interp(t, cum, closed[:, 0]), np.interp(t, cum, closed[:, 1])])


def _smooth(xy: np.ndarray, window: int) -> np.ndarray:
    """Circular moving average over `window` (odd) points."""
    if window <= 1:
        return xy
    half = window // 2
    padded = np.vstack([xy[-half:], xy, xy[:half]])
    kernel = np.full(window, 1.0 / window)
    return np.column_stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(2)])


def _radius_of_curvature(c: np.ndarray, k: int) -> np.ndarray:
    """Circumradius of (c[i-k], c[i], c[i+k]) for every i; inf where the three are collinear."""
    p0, p2 = np.roll(c, k, axis=0), np.roll(c, -k, axis=0)
    u, v, w = c - p0, p2 - c, p2 - p0
    cross2 = np.abs(u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0])  # twice the triangle's area
    sides = np.hypot(*u.T) * np.hypot(*v.T) * np.hypot(*w.T)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(cross2 > 0, sides / (2 * np.maximum(cross2, 1e-300)), np.inf)


def _closest_approach(c: np.ndarray, ds: float, min_sep_m: float) -> tuple[float, int, int]:
    """(distance, i, j): the closest two points more than `min_sep_m` apart along the loop; (inf, -1, -1)."""
    n = len(c)
    idx = np.arange(n)
    best, bi, bj = math.inf, -1, -1
    for start in range(0, n, _CHUNK):
        i = idx[start : start + _CHUNK, None]
        gap = np.abs(idx[None, :] - i)
        far = np.minimum(gap, n - gap) * ds > min_sep_m
        if not far.any():
            continue
        d2 = np.sum((c[i[:, 0], None, :] - c[None, :, :]) ** 2, axis=2)
        d2 = np.where(far, d2, np.inf)
        r, col = np.unravel_index(int(np.argmin(d2)), d2.shape)
        if d2[r, col] < best**2:
            best, bi, bj = math.sqrt(float(d2[r, col])), int(i[r, 0]), int(col)
    return best, min(bi, bj), max(bi, bj)


def _corner_count(radius: np.ndarray, limit: float) -> int:
    """How many separate stretches of the loop have a radius below `limit`."""
    below = radius < limit
    if below.all():
        return 1
    return int(np.sum(below & ~np.roll(below, 1)))


def _problems(track: RaceTrack, limits: TrackLimits, radius: np.ndarray) -> list[str]:
    """Every way the scaled track fails the car or the walls (empty when feasible)."""
    out = []
    r, rs = track.min_radius, track.min_radius_s
    for limit, why in (
        (limits.min_turn_radius_m, f"the car's {limits.min_turn_radius_m:g} m turning radius"),
        (track.width / 2, f"half the corridor width ({track.width / 2:g} m), so the inner wall folds over itself"),
    ):
        if r < limit:
            n = _corner_count(radius, limit)
            out.append(
                f"min centre-line radius {r:.2f} m at s={rs:.1f} m is below {why} "
                f"({n} corner{'s' if n > 1 else ''} below {limit:g} m)"
            )
    need = track.width + limits.wall_clearance_m
    if track.closest_approach < need:
        s0, s1 = track.closest_approach_s
        out.append(
            f"sections at s={s0:.1f} m and s={s1:.1f} m come within {track.closest_approach:.2f} m; the corridor "
            f"needs {need:.2f} m (width {track.width:g} m + wall clearance {limits.wall_clearance_m:g} m)"
        )
    return out


def _gaussian_smooth(xy: np.ndarray, sigma_pts: float) -> np.ndarray:
    """Circular Gaussian smoothing of a closed polyline, `sigma_pts` points of standard deviation."""
    half = int(4 * sigma_pts) + 1
    if half >= len(xy) // 2:
        raise TrackError(f"smoothing over {sigma_pts:.0f} points is too wide for a {len(xy)}-point loop")
    kernel = np.exp(-0.5 * (np.arange(-half, half + 1) / sigma_pts) ** 2)
    kernel /= kernel.sum()
    padded = np.vstack([xy[-half:], xy, xy[:half]])
    return np.column_stack([np.convolve(padded[:, k], kernel, mode="valid") for k in range(2)])


def _build(name: str, xy: np.ndarray, length_m: float, width_m: float, ds: float, limits: TrackLimits,
           smooth_m: float = 0.0) -> RaceTrack:
    """Scale, resample and measure a checked centre line; `problems` lists what makes it infeasible."""
    n = int(round(length_m / ds))
    step = length_m / n
    c = _resample(xy * (length_m / _perimeter(xy)), n)
    window = 2 * int(SMOOTH_WINDOW_M / (2 * step)) + 1  # odd, so the average is centred
    c = _resample(_smooth(c, window), n)
    if smooth_m > 0:
        c = _resample(_gaussian_smooth(c * (length_m / _perimeter(c)), smooth_m / step), n)
    c *= length_m / _perimeter(c)
    tangent = np.roll(c, -1, axis=0) - np.roll(c, 1, axis=0)
    heading = np.arctan2(tangent[:, 1], tangent[:, 0])
    normal = np.column_stack([-np.sin(heading), np.cos(heading)])
    s = np.arange(n) * step
    radius = _radius_of_curvature(c, max(1, int(round(RADIUS_BASELINE_M / step))))
    r_at = int(np.argmin(radius))
    gap, i, j = _closest_approach(c, step, max(3 * width_m, NEIGHBOUR_MIN_SEP_M))
    track = RaceTrack(
        name=name,
        centre=c,
        width=float(width_m),
        ds=step,
        s=s,
        length=float(length_m),
        heading=heading,
        normal=normal,
        left=c + normal * (width_m / 2),
        right=c - normal * (width_m / 2),
        min_radius=float(radius[r_at]),
        min_radius_s=float(s[r_at]),
        closest_approach=gap,
        closest_approach_s=(float(s[i]), float(s[j])) if i >= 0 else (math.nan, math.nan),
    )
    track.problems = tuple(_problems(track, limits, radius))
    return track


def _fourier_loop(rng: np.random.Generator, n: int) -> np.ndarray:
    """One draw: r(theta) = 1 + sum_k a_k cos(k theta + phi_k), star-shaped so it never crosses itself.

    Amplitudes a_k ~ U(0, 0.7 / k) fall as 1/k so the loop has a few broad bends rather than wiggles;
    their sum stays below 0.9, so r > 0. At 0.7 about three draws in four pass the checks at 55 m and
    1.6 m width with corners down to about 0.7 m radius (smaller amplitudes give only round blobs).
    Half the draws run clockwise, so that a policy does not learn that every corner turns left.
    """
    theta = np.arange(n) * (2 * np.pi / n)
    r = np.ones(n)
    for k in GENERATOR_HARMONICS:
        r += rng.uniform(0.0, GENERATOR_AMPLITUDE / k) * np.cos(k * theta + rng.uniform(0.0, 2 * np.pi))
    xy = np.column_stack([r * np.cos(theta), r * np.sin(theta)])
    if rng.random() < 0.5:
        xy[:, 1] = -xy[:, 1]
    return xy


def generate_centreline(seed: int, n: int = 400) -> np.ndarray:
    """A smooth random closed loop (n points in travel order), deterministic in `seed`.

    Draws are repeated (from the same seeded generator) until one is feasible at load_track's defaults
    (55 m, 1.6 m wide, default TrackLimits), at most 50 times: so every seed gives a usable track at
    the defaults, and the shape depends only on the seed. Loaded shorter or narrower it may still fail.
    """
    if seed < 0:
        raise TrackError(f"generated:{seed}: the seed must be a non-negative integer")
    if n < MIN_POINTS:
        raise TrackError(f"generated:{seed}: n={n} points; a track needs at least {MIN_POINTS}")
    rng = np.random.default_rng(seed)
    for _ in range(GENERATOR_MAX_DRAWS):
        xy = _fourier_loop(rng, n)
        track = _build(f"generated:{seed}", xy, REFERENCE_LENGTH_M, REFERENCE_WIDTH_M, REFERENCE_DS, TrackLimits())
        if not track.problems:
            return xy
    raise TrackError(f"generated:{seed}: no feasible loop in {GENERATOR_MAX_DRAWS} draws")


def _resolve(source: str | Path) -> tuple[str, str, np.ndarray]:
    """(name, label for messages, raw xy) for a path, a bundled name or generated[:SEED].

    The CSV widths are validated by the reader and then dropped: the corridor width is width_m.
    """
    text = str(source)
    if text.lower() == "generated" or text.lower().startswith("generated:"):
        seed_text = text.partition(":")[2] or "0"
        try:
            seed = int(seed_text)
        except ValueError:
            raise TrackError(f"{text}: the seed after 'generated:' must be an integer") from None
        return f"generated:{seed}", f"generated:{seed}", generate_centreline(seed)
    path = Path(source)
    if path.parent == Path("."):
        stem = path.name[:-4] if path.name.lower().endswith(".csv") else path.name
        match = [t for t in bundled_tracks() if t.lower() == stem.lower()]
        if match:
            path = DATA_DIR / f"{match[0]}.csv"
    if not path.exists():
        raise TrackError(
            f"{source}: file not found (bundled circuits: {', '.join(bundled_tracks())}; or 'generated[:SEED]')"
        )
    xy, _ = read_centreline_csv(path)
    return path.stem, path.name, xy


def load_track(
    source: str | Path,
    length_m: float = 55.0,
    width_m: float = 1.6,
    ds: float = 0.1,
    limits: TrackLimits = TrackLimits(),
    smooth_m: float = 0.0,
) -> RaceTrack:
    """A checked `RaceTrack` from a CSV path, a bundled name or "generated[:SEED]" (see module docstring);
    `smooth_m` > 0 eases corners tighter than an RC car can drive (the RC-scale simplification).

    Raises TrackError for malformed input, and for an infeasible track unless limits.on_infeasible is
    "warn", in which case the same text is warned and the track (with `problems` set) is returned.
    """
    for label, value in (("length_m", length_m), ("width_m", width_m), ("ds", ds)):
        if not (math.isfinite(value) and value > 0):
            raise TrackError(f"{source}: {label} must be a positive number, got {value}")
    if round(length_m / ds) < MIN_RESAMPLED:
        raise TrackError(f"{source}: ds={ds:g} m leaves fewer than {MIN_RESAMPLED} points on a {length_m:g} m loop")
    if not (math.isfinite(smooth_m) and smooth_m >= 0):
        raise TrackError(f"{source}: smooth_m must be a number >= 0, got {smooth_m}")
    name, label, raw = _resolve(source)
    track = _build(name, _check_loop(raw, label), length_m, width_m, ds, limits, smooth_m)
    track.smooth_m = smooth_m
    if track.problems:
        message = (f"{label} at length {length_m:g} m, width {width_m:g} m, smooth_m {smooth_m:g} is infeasible: "
                   + "; ".join(track.problems)
                   + " (a longer loop, a narrower corridor or smooth_m > 0 (the RC-scale simplification) may help)")
        if limits.on_infeasible == "error":
            raise TrackError(message)
        warnings.warn(message, stacklevel=2)
    return track
