"""Losses of the energy-based method (seed 004).

  contrastive_divergence  E(x+) - E(x-) [+ regularization * (E(x+)^2 + E(x-)^2)]
"""

import jax
import jax.numpy as jnp


def contrastive_divergence(energy_pos: jax.Array, energy_neg: jax.Array, *,
                           regularization: float = 0.0) -> jax.Array:
  """Contrastive-divergence loss of an energy-based model, per example.

  Sign convention: low energy = likely, p(x) ∝ exp(-E(x)). Minimising the loss pushes the energy of
  data (positives) down and the energy of model samples (negatives, e.g. from
  `adjax.sampling.sgld`) up; its gradient w.r.t. the parameters is the usual maximum-likelihood
  estimate E_data[dE/dθ] - E_model[dE/dθ]. The negatives must carry no gradient themselves (`sgld`
  returns them under `stop_gradient`); only their energies, recomputed with the current
  parameters, do.

  The optional regulariser of Du & Mordatch (2019), regularization * (E(x+)^2 + E(x-)^2), keeps
  the energy magnitudes small; it is off by default (seed 004 does not mention one).

  Args:
    energy_pos: float [batch] energies of training images.
    energy_neg: float [batch] energies of negative samples (same batch size).
    regularization: weight of the squared-energy regulariser (>= 0).

  Returns:
    float [batch] loss per example (not reduced).
  """
  if energy_pos.shape != energy_neg.shape or energy_pos.ndim != 1:
    raise ValueError('contrastive_divergence expects energies [batch] of equal shape, got '
                     f'{energy_pos.shape} and {energy_neg.shape}')
  # Always added (zero by default) so `regularization` may also be a traced value.
  return (energy_pos - energy_neg
          + regularization * (jnp.square(energy_pos) + jnp.square(energy_neg)))
