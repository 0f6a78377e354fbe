"""The kernels of nearest 2x upsampling followed by a conv, folded per output phase (`convolution.upsample_conv2d`).

After upsampling, output pixel 2i + a of a conv reads input pixels i + m only, so each output phase a is a
conv of the small map with the taps that read the same input pixel summed (`phase_taps`). The folded
kernels are sums of the kernel's [in, out] tap slices, a linear map; `phase_kernels` gives it a VJP of the
same form (every kernel tap gets the sum of the folded taps it went into). JAX's own transpose of the sums
padded every tap slice back to the full kernel shape and added the padded copies, and the window slices of
the folded kernels likewise: in a LAMP train step those copies of kernel-sized arrays were more work than
the decoder's small convs (`python scripts/conv_speed.py --tables 17`). `CUSTOM_TRANSPOSE = False` keeps
JAX's transpose (for comparisons).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np

CUSTOM_TRANSPOSE = True

# For every output grid, its rows of cells, each cell the (input grid, row, column) taps summed into it.
Table = tuple[tuple[tuple[tuple[tuple[int, int, int], ...], ...], ...], ...]


def phase_taps(kernel_size: int, low: int) -> tuple[np.ndarray, int]:
  """0/1 matrix [2 phases, window, kernel_size]: which kernel taps read which input offset, per phase.

  After nearest 2x upsampling, output 2i + a with tap t reads upsampled pixel 2i + a + t - low, i.e. input
  pixel i + m with m = floor((a + t - low) / 2). Offsets run from m_min = floor(-low / 2) over a window of
  m_max - m_min + 1; returns the matrix and m_min.
  """
  offsets = [[(phase + tap - low) // 2 for tap in range(kernel_size)] for phase in range(2)]
  m_min, m_max = offsets[0][0], offsets[1][-1]
  taps = np.zeros((2, m_max - m_min + 1, kernel_size), np.float32)
  for phase in range(2):
    for tap, offset in enumerate(offsets[phase]):
      taps[phase, offset - m_min, tap] = 1.
  return taps, m_min


def used_window(taps: np.ndarray, phase: int) -> tuple[int, int]:
  """[first, end) of the window offsets whose folded tap is not identically zero for `phase`."""
  rows = np.nonzero(taps[phase].sum(axis=1))[0]
  return int(rows[0]), int(rows[-1]) + 1


def _cell_sums(grids, table: Table):
  """Each output grid [rows, columns, in, out] of `table`, its cells summed from the input grids' taps."""
  zeros = jnp.zeros(grids[0].shape[2:], grids[0].dtype)
  cell = lambda taps: sum((grids[grid][row, col] for grid, row, col in taps), zeros)
  # One stack per grid (XLA:CPU ran a stack of row stacks as a copy per row).
  return tuple(jnp.stack([cell(taps) for row in rows for taps in row]).reshape(
      (len(rows), len(rows[0])) + zeros.shape) for rows in table)


def _transposed(table: Table, input_shapes: tuple[tuple[int, int], ...]) -> Table:
  """The table of the transposed map: every input tap gets the output cells it was summed into."""
  cells = [[[[] for _ in range(width)] for _ in range(height)] for height, width in input_shapes]
  for out, rows in enumerate(table):
    for m, row in enumerate(rows):
      for n, taps in enumerate(row):
        for grid, t, s in taps:
          cells[grid][t][s].append((out, m, n))
  return tuple(tuple(tuple(tuple(taps) for taps in row) for row in grid) for grid in cells)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _linear_tap_map(grids, table: Table, input_shapes: tuple[tuple[int, int], ...]):
  del input_shapes  # For the transpose.
  return _cell_sums(grids, table)


def _linear_tap_map_forward(grids, table, input_shapes):
  del input_shapes
  return _cell_sums(grids, table), None


def _linear_tap_map_backward(table, input_shapes, _, cotangents):
  # Linear, so the VJP is the transposed map, itself a `_linear_tap_map`: differentiable again alike.
  output_shapes = tuple((len(rows), len(rows[0])) for rows in table)
  return (_linear_tap_map(tuple(cotangents), _transposed(table, input_shapes), output_shapes),)


_linear_tap_map.defvjp(_linear_tap_map_forward, _linear_tap_map_backward)


def phase_kernels(kernel: jax.Array, *, taps_h: np.ndarray, taps_w: np.ndarray,
                  windows: tuple[tuple[tuple[int, int], tuple[int, int]], ...]) -> tuple[jax.Array, ...]:
  """The folded kernel of each output phase (a, b) in row-major order, cut to its window.

  Args:
    kernel: float [kernel_height, kernel_width, in_channels, out_channels].
    taps_h, taps_w: `phase_taps` of the two axes, [2, window, kernel size].
    windows: per phase (a, b), ((first, end) of rows, (first, end) of columns) of the window offsets kept.

  Returns:
    4 kernels, phase (a, b)'s float [rows, columns, in_channels, out_channels] with
    folded[m, n] = sum_{t, s} taps_h[a, first_row + m, t] taps_w[b, first_col + n, s] kernel[t, s].
  """
  table = []
  for index, ((row0, row1), (col0, col1)) in enumerate(windows):
    a, b = divmod(index, 2)
    table.append(tuple(tuple(tuple((0, t, s) for t in np.nonzero(taps_h[a, m])[0].tolist()
                                   for s in np.nonzero(taps_w[b, n])[0].tolist())
                             for n in range(col0, col1)) for m in range(row0, row1)))
  table = tuple(table)
  if CUSTOM_TRANSPOSE:
    return _linear_tap_map((kernel,), table, (kernel.shape[:2],))
  return _cell_sums((kernel,), table)
