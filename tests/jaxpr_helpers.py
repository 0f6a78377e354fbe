"""Test helper: the equations and primitives a jaxpr runs, including those inside nested jit/scan/pmap bodies."""

from typing import Iterator

import jax.extend


def equations(jaxpr) -> Iterator:
  """Every equation of `jaxpr` (a ClosedJaxpr or Jaxpr), nested bodies' right after the equation holding them."""
  for eqn in getattr(jaxpr, 'jaxpr', jaxpr).eqns:
    yield eqn
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      yield from equations(sub)


def primitive_names(jaxpr) -> list[str]:
  return [eqn.primitive.name for eqn in equations(jaxpr)]
