"""Every pure loss of adjax, importable from one place: `from adjax import losses`.

Conventions (as in optax): losses are pure functions of arrays, return unreduced per-example (or
per-element) values, take hyperparameters keyword-only, and document shapes. Reduction (mean over
the batch, `lax.pmean` across devices) belongs to the caller's train step, never to the loss.

One module per method family, all re-exported here:
  ebm   contrastive_divergence (seed 004)
  fcdd  pseudo_huber, push, hsc_image_loss, fcdd_loss, pixel_hsc_loss (seed 000)
  occ   squared_distance, soft_boundary (seed 002)
  reconstruction  l2_map, l1_map, ssim_map, ssim_loss_map, dssim_map, ms_ssim, lamp, contractive_penalty,
        denoising_corruption, ema_class_thresholds, threshold_predictions, weighted_majority_vote
        (seeds 001, 003)
"""

from adjax.losses.ebm import contrastive_divergence
from adjax.losses.fcdd import fcdd_loss
from adjax.losses.fcdd import hsc_image_loss
from adjax.losses.fcdd import pixel_hsc_loss
from adjax.losses.fcdd import pseudo_huber
from adjax.losses.fcdd import push
from adjax.losses.occ import soft_boundary
from adjax.losses.occ import squared_distance
from adjax.losses.reconstruction import contractive_penalty
from adjax.losses.reconstruction import denoising_corruption
from adjax.losses.reconstruction import dssim_map
from adjax.losses.reconstruction import ema_class_thresholds
from adjax.losses.reconstruction import l1_map
from adjax.losses.reconstruction import l2_map
from adjax.losses.reconstruction import lamp
from adjax.losses.reconstruction import ms_ssim
from adjax.losses.reconstruction import ssim_loss_map
from adjax.losses.reconstruction import ssim_map
from adjax.losses.reconstruction import threshold_predictions
from adjax.losses.reconstruction import weighted_majority_vote
