"""adjax.models.tap_folding: the folded phase kernels of upsample-then-conv, and a transpose without padding."""

import jax
import numpy as np
import pytest

from adjax.models import tap_folding
from jaxpr_helpers import primitive_names


def _reference(kernel, taps_h, taps_w, window):
  """numpy: folded[m, n] = sum_{t, s} taps_h[a, m, t] taps_w[b, n, s] kernel[t, s], cut to the window."""
  folded = np.einsum('amt,bns,tsio->ambnio', taps_h, taps_w, np.asarray(kernel))
  (a, b), ((row0, row1), (col0, col1)) = window
  return folded[a, row0:row1, b, col0:col1]


def _case(kernel_size, low, cut):
  taps_h, _ = tap_folding.phase_taps(kernel_size[0], low[0])
  taps_w, _ = tap_folding.phase_taps(kernel_size[1], low[1])
  whole = ((0, taps_h.shape[1]), (0, taps_w.shape[1]))
  windows = tuple(((tap_folding.used_window(taps_h, a), tap_folding.used_window(taps_w, b)) if cut else whole)
                  for a in range(2) for b in range(2))
  kernel = jax.random.normal(jax.random.key(0), kernel_size + (3, 4))
  fold = lambda k: tap_folding.phase_kernels(k, taps_h=taps_h, taps_w=taps_w, windows=windows)
  return kernel, fold, taps_h, taps_w, windows


CASES = [((3, 3), (1, 1), True), ((3, 3), (1, 1), False), ((4, 2), (1, 0), True), ((4, 2), (2, 1), False),
         ((1, 1), (0, 0), True), ((5, 3), (2, 1), True)]


def test_phase_taps_of_a_3x3_kernel():
  # Phase 0 reads input offsets -1 (tap 0) and 0 (taps 1, 2); phase 1 offsets 0 (taps 0, 1) and 1 (tap 2).
  taps, first = tap_folding.phase_taps(3, 1)
  assert first == -1
  np.testing.assert_array_equal(taps, [[[1, 0, 0], [0, 1, 1], [0, 0, 0]], [[0, 0, 0], [1, 1, 0], [0, 0, 1]]])
  assert [tap_folding.used_window(taps, phase) for phase in range(2)] == [(0, 2), (1, 3)]


@pytest.mark.parametrize('kernel_size, low, cut', CASES)
def test_phase_kernels_equal_the_folding_sums(kernel_size, low, cut):
  kernel, fold, taps_h, taps_w, windows = _case(kernel_size, low, cut)
  for index, (got, window) in enumerate(zip(fold(kernel), windows)):
    np.testing.assert_allclose(got, _reference(kernel, taps_h, taps_w, (divmod(index, 2), window)), rtol=1e-6,
                               atol=1e-6)


@pytest.mark.parametrize('kernel_size, low, cut', CASES)
def test_transpose_and_second_order_equal_jaxs(kernel_size, low, cut, monkeypatch):
  kernel, fold, *_ = _case(kernel_size, low, cut)
  cotangents = tuple(jax.random.normal(jax.random.key(1 + i), k.shape) for i, k in enumerate(fold(kernel)))

  def vjp_and_its_gradient(kernel):
    (grad,) = jax.vjp(fold, kernel)[1](cotangents)
    # Second order: the VJP's own gradient w.r.t. the cotangents, through a nonlinear function of it.
    second = jax.grad(lambda cts: (jax.vjp(fold, kernel)[1](cts)[0] ** 2).sum())(cotangents)
    return grad, second

  ours = vjp_and_its_gradient(kernel)
  monkeypatch.setattr(tap_folding, 'CUSTOM_TRANSPOSE', False)
  theirs = vjp_and_its_gradient(kernel)
  for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_transpose_pads_nothing(monkeypatch):
  # The reason for the custom VJP: JAX transposes each tap slice into a zero-padded kernel-sized copy.
  kernel, fold, *_ = _case((3, 3), (1, 1), True)
  primitives = lambda: primitive_names(jax.make_jaxpr(lambda k: jax.vjp(fold, k)[1](fold(k)))(kernel))
  assert 'pad' not in primitives()
  monkeypatch.setattr(tap_folding, 'CUSTOM_TRANSPOSE', False)
  assert 'pad' in primitives()
