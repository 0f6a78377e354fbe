"""Every pure loss of adjax, importable from one place: `from adjax import losses`.

Conventions (as in optax): losses are pure functions of arrays, return unreduced per-example (or
per-element) values, take hyperparameters keyword-only, and document shapes. Reduction (mean over
the batch, `lax.pmean` across devices) belongs to the caller's train step, never to the loss.

One module per method family, all re-exported here:
  ebm   contrastive_divergence (seed 004)
"""

from adjax.losses.ebm import contrastive_divergence
