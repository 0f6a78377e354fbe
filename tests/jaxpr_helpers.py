"""Test helper: the primitives a jaxpr runs, including those inside nested jit/scan/pmap bodies."""

import jax.extend


def primitive_names(jaxpr) -> list[str]:
  names = []
  for eqn in getattr(jaxpr, 'jaxpr', jaxpr).eqns:
    names.append(eqn.primitive.name)
    for sub in jax.extend.core.jaxprs_in_params(eqn.params):
      names.extend(primitive_names(sub))
  return names
