"""Helpers shared by the tests, one definition each: `from conftest import tiny, run_module`
(pytest puts tests/ on sys.path)."""

import os
from pathlib import Path
import subprocess
import sys

import jax
import numpy as np

from ce_jax import bench, checkpoints, cli, configs, platform, sharding, steps

platform.setup()  # what every command does first; pytest is this process's command

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / 'ce_jax' / 'samples'  # the photos shipped in the package

random_batch = bench.random_batch  # (config, seed=0) -> a masked batch of uniform noise images


def preset(name, **overrides):
  """configs.get(name) with `overrides`; a double underscore reaches into a group
  (optim__ema_decay=0.9 sets optim.ema_decay)."""
  config = configs.get(name)
  for path, value in overrides.items():
    cli.set_field(config, path.replace('__', '.'), value)
  return config


def tiny(**overrides):
  """The tiny preset (32 px images, 16 px patch, narrow layers): fast on a CPU."""
  return preset('tiny', **overrides)


def host(tree):
  return jax.tree.map(np.asarray, tree)


def init_state(config, seed: int = 0) -> steps.TrainState:
  """A fresh TrainState, replicated over this process's devices as training holds it."""
  init = jax.jit(
      lambda k: steps.create_train_state(config, k),
      out_shardings=sharding.replicated(sharding.data_mesh()),
  )
  return init(jax.random.PRNGKey(seed))


def restore_state(workdir, config, step: int) -> steps.TrainState:
  """The whole TrainState saved at `step` in `workdir`, as a resumed run restores it."""
  abstract = jax.eval_shape(lambda k: steps.create_train_state(config, k), jax.random.PRNGKey(0))
  mngr = checkpoints.manager(workdir, read_only=True)
  try:
    return checkpoints.restore_state(
        mngr, step, abstract, sharding.replicated(sharding.data_mesh())
    )
  finally:
    mngr.close()


def run_module(*args, devices=1, timeout=240, **popen):
  """`python *args` in the repository, on `devices` host CPU devices, output captured."""
  xla_flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONUNBUFFERED='1', XLA_FLAGS=xla_flags)
  return subprocess.run(
      [sys.executable, *args],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=timeout,
      **popen,
  )
