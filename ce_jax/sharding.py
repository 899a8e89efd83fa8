"""The one device mesh of data-parallel training: a single `data` axis over every device."""

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

DATA = 'data'


def data_mesh(devices=None) -> jax.sharding.Mesh:
  """A mesh over `devices` (default: every device of every host), the batch split along `data`.

  Auto axes: jit may place intermediate values freely, and shard_map fixes the step's layout.
  """
  if devices is None:
    return jax.make_mesh((jax.device_count(),), (DATA,), axis_types=(AxisType.Auto,))
  return jax.sharding.Mesh(np.asarray(devices), (DATA,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh) -> NamedSharding:
  """Leading (batch) axis split across `data`; other axes whole."""
  return NamedSharding(mesh, P(DATA))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def check_divisible(batch_size: int, mesh, what: str = 'batch_size') -> None:
  """The global batch is split evenly across devices, so it must divide by their number."""
  n = mesh.devices.size
  if batch_size % n:
    raise ValueError(
        f'{what}={batch_size} does not divide by the {n} devices; '
        f'use a multiple of {n} (e.g. --{what}={max(n, batch_size // n * n)}).'
    )


def to_host(tree):
  """Every row of global arrays as numpy, on every host (an all-gather across hosts).

  For the small things a host reads whole: per-image metrics, the `valid` flags, a grid's images.
  """
  if jax.process_count() == 1:
    return jax.tree.map(np.asarray, tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return multihost_utils.process_allgather(tree, tiled=True)
