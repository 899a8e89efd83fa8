"""The harmonic fill: Laplace's equation in the hole with the context as its boundary.

Every hole pixel becomes the mean of its 4-neighbours (of those inside the photo, at its edge),
the smoothest surface that meets the context: the classical fill a learned model has to beat
(`baselines.harmonic`), and the starting point the `inpaint` recipe's network paints its
residual on (`config.prefill = 'harmonic'`). Three ways to compute the same numbers:

* `fill_photo`: one exact sparse solve (scipy) for any hole of any photo, on the host.
* `fill_batch`: in JAX, for a batch of masks from `masks.sample`: a precomputed linear
  operator (ring pixels -> square) when every region is a square strictly inside its patch box
  (centre and block masks with overlap >= 1), conjugate gradients over the patch box otherwise.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse
import scipy.sparse.linalg


def _system(hole: np.ndarray):
  """The Laplace system of a (H, W) bool hole: (A, coupling, hole_yx, known_yx) with
  A u = coupling @ photo[known] for the hole's values u; A is sparse SPD (degree - adjacency)."""
  ys, xs = np.nonzero(hole)
  index = -np.ones(hole.shape, np.int64)
  index[ys, xs] = np.arange(len(ys))
  h, w = hole.shape
  degree = np.zeros(len(ys))
  a_rows, a_cols, k_rows, k_yx = [], [], [], []
  for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
    ny, nx = ys + dy, xs + dx
    inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
    degree += inside
    i, ny, nx = np.nonzero(inside)[0], ny[inside], nx[inside]
    unknown = index[ny, nx] >= 0
    a_rows.append(i[unknown])
    a_cols.append(index[ny[unknown], nx[unknown]])
    k_rows.append(i[~unknown])
    k_yx.append(np.stack([ny[~unknown], nx[~unknown]], -1))
  n = len(ys)
  a_rows, a_cols = np.concatenate(a_rows), np.concatenate(a_cols)
  a = scipy.sparse.csc_matrix(
      (
          np.concatenate([degree, -np.ones(len(a_rows))]),
          (np.concatenate([np.arange(n), a_rows]), np.concatenate([np.arange(n), a_cols])),
      ),
      shape=(n, n),
  )
  known_yx, slot = np.unique(np.concatenate(k_yx), axis=0, return_inverse=True)
  coupling = scipy.sparse.csr_matrix(
      (np.ones(len(slot)), (np.concatenate(k_rows), slot.ravel())), shape=(n, len(known_yx))
  )
  return a, coupling, np.stack([ys, xs], -1), known_yx


def fill_photo(photo: np.ndarray, hole: np.ndarray) -> np.ndarray:
  """An (H, W, C) photo with its (H, W) bool hole harmonically filled (exact, float64; uint8
  in, rounded uint8 out). Pixels outside the hole are returned unchanged."""
  hole = np.asarray(hole, bool)
  if not hole.any():
    return np.array(photo)
  values = np.asarray(photo, np.float64)
  a, coupling, hole_yx, known_yx = _system(hole)
  rhs = coupling @ values[known_yx[:, 0], known_yx[:, 1]].reshape(len(known_yx), -1)
  out = values.copy()
  solved = scipy.sparse.linalg.splu(a).solve(rhs)
  out[hole_yx[:, 0], hole_yx[:, 1]] = solved.reshape((len(hole_yx),) + values.shape[2:])
  if photo.dtype == np.uint8:
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
  return out


@functools.lru_cache(maxsize=8)
def square_operator(side: int) -> tuple[np.ndarray, np.ndarray]:
  """(G, ring_yx): the harmonic fill of a side x side square at (1, 1) of a (side + 2)^2
  window is G @ window[ring], G float32 (side^2, 4 side), ring_yx (4 side, 2)."""
  hole = np.zeros((side + 2, side + 2), bool)
  hole[1:-1, 1:-1] = True
  a, coupling, _, ring_yx = _system(hole)
  g = scipy.sparse.linalg.splu(a).solve(coupling.toarray())
  return g.astype(np.float32), ring_yx


def _neighbour_sum(x):
  p = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:]


def _conjugate_gradients(images, region, guess=None, tol: float = 1e-6, maxiter: int = 2000):
  """Harmonic fill of (B, H, W, C) images in their (B, H, W, 1) regions, by CG on the system
  that is Laplace's in the region and the identity outside it (SPD), from `guess` in the
  region (default: the context's mean colour)."""
  region = jnp.broadcast_to(region, images.shape).astype(images.dtype)
  keep = 1.0 - region
  degree = _neighbour_sum(jnp.ones_like(images[..., :1]))
  matvec = lambda u: region * (degree * u - _neighbour_sum(region * u)) + keep * u
  b = region * _neighbour_sum(keep * images) + keep * images
  if guess is None:
    count = jnp.maximum(jnp.sum(keep, (1, 2), keepdims=True), 1.0)
    guess = jnp.sum(keep * images, (1, 2), keepdims=True) / count
  x0 = keep * images + region * guess
  u, _ = jax.scipy.sparse.linalg.cg(matvec, b, x0=x0, tol=tol, maxiter=maxiter)
  return u


@jax.jit
def fill_window(window, hole, guess):
  """An (H, W, C) float window with its (H, W) bool hole harmonically filled (conjugate
  gradients from `guess`, e.g. a coarser solution scaled up: few iterations then), compiled once
  per window size. For photos at their own resolution (`inpaint`)."""
  region = jnp.asarray(hole, jnp.float32)[None, ..., None]
  return _conjugate_gradients(window[None], region, guess[None])[0]


def _window(images, corner, side: int):
  """(B, side, side, C) windows of `images` at `corner` (clamped into the image, as
  dynamic_slice does) and their clamped corners."""
  size = images.shape[1]
  start = jnp.clip(corner, 0, size - side)
  crop = jax.vmap(
      lambda img, c: jax.lax.dynamic_slice(img, (c[0], c[1], 0), (side, side, img.shape[-1]))
  )(images, start)
  return crop, start


def fill_batch(images, region, corner, patch_size: int, square_inset: int | None = None):
  """`images` (B, H, W, C) with each `region` (B, H, W, 1), which lies inside the patch box
  at `corner` (B, 2), harmonically filled; pixels outside the regions unchanged.

  square_inset=k promises every region is its patch box shrunk by k >= 1 px a side (centre
  and block masks): then one precomputed operator paints them. Otherwise conjugate gradients
  solve on the patch box grown by one pixel (clamped to the image: the photo's edge then
  bounds the hole as it does in `fill_photo`).
  """
  images = jnp.asarray(images, jnp.float32)
  if square_inset is not None and square_inset >= 1:
    side = patch_size - 2 * square_inset
    g, ring_yx = square_operator(side)
    windows, _ = _window(images, corner + square_inset - 1, side + 2)
    ring = windows[:, ring_yx[:, 0], ring_yx[:, 1]]  # (B, 4 side, C)
    inner = jnp.einsum('pr,brc->bpc', g, ring).reshape(-1, side, side, images.shape[-1])
    at = corner + square_inset
    filled = jax.vmap(lambda img, p, c: jax.lax.dynamic_update_slice(img, p, (c[0], c[1], 0)))(
        images, inner, at
    )
  else:
    side = min(patch_size + 2, images.shape[1])
    windows, start = _window(images, corner - 1, side)
    regions, _ = _window(jnp.asarray(region, jnp.float32), corner - 1, side)
    solved = _conjugate_gradients(windows, regions)
    filled = jax.vmap(lambda img, p, c: jax.lax.dynamic_update_slice(img, p, (c[0], c[1], 0)))(
        images, solved, start
    )
  return jnp.where(region > 0, filled, images)
