"""Every pure loss of adjax, importable from one place: `from adjax import losses`.

Conventions (as in optax): losses are pure functions of arrays, return unreduced per-example (or
per-element) values, take hyperparameters keyword-only, and document shapes. Reduction (mean over
the batch, `lax.pmean` across devices) belongs to the caller's train step, never to the loss.

One module per method family, all re-exported here:
  ebm   contrastive_divergence (seed 004)
  fcdd  pseudo_huber, push, hsc_image_loss, fcdd_loss, pixel_hsc_loss (seed 000)
"""

from adjax.losses.ebm import contrastive_divergence
from adjax.losses.fcdd import fcdd_loss
from adjax.losses.fcdd import hsc_image_loss
from adjax.losses.fcdd import pixel_hsc_loss
from adjax.losses.fcdd import pseudo_huber
from adjax.losses.fcdd import push
