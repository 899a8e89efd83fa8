"""Speed of every part that costs time: train steps, input pipeline, evaluation, inpainting.

  python -m ce_jax.bench --config=pathak --models=gan --encoders=pathak --steps=10
  python -m ce_jax.bench --config=paper --models=vae,gan --encoders=alexnet,vgg,resnet --dtype=bfloat16
  python -m ce_jax.bench --config=default --steps=3 --profile_dir=/tmp/ce_prof   # + a trace

For each (model, encoder): train-step images/s after compilation, compile time, the step's FLOPs
from XLA's cost analysis, model FLOPs utilisation against the device's peak (when known), and
peak device memory; then the input pipeline's, evaluation's and inpainting's images/s. Prints a
table and writes JSON (--json).
"""

import json
import resource
import sys
import time

from absl import app, flags, logging
import jax
import numpy as np

from ce_jax import bench_input, cli, inpaint, masks, models, platform, sharding, steps

# Dense peak FLOP/s per chip, by (device_kind substring, dtype). Unknown devices report no MFU.
PEAK_FLOPS = {
    ('H100', 'bfloat16'): 989e12,
    ('H100', 'float32'): 67e12,
    ('H200', 'bfloat16'): 989e12,
    ('H200', 'float32'): 67e12,
    ('A100', 'bfloat16'): 312e12,
    ('A100', 'float32'): 19.5e12,
    ('TPU v4', 'bfloat16'): 275e12,
    ('TPU v5 lite', 'bfloat16'): 197e12,
    ('TPU v5p', 'bfloat16'): 459e12,
    ('TPU v6', 'bfloat16'): 918e12,
}


def peak_flops(dtype: str) -> float | None:
  kind = jax.devices()[0].device_kind
  for (name, dt), flops in PEAK_FLOPS.items():
    if name in kind and dt == dtype:
      return flops * jax.device_count()
  return None


def peak_memory_bytes() -> int | None:
  """Peak bytes in use on device 0 (accelerators), or this process's peak RSS on the CPU."""
  stats = jax.devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use'])
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def random_batch(config, seed=0):
  shape = (config.batch_size, config.image_size, config.image_size, 3)
  images = jax.random.uniform(jax.random.key(seed), shape, minval=-1, maxval=1)
  return masks.make_batch(images, jax.random.key(seed + 1), config)


def time_calls(fn, n: int) -> float:
  """Seconds per call of `fn` (which returns something to block on), after one warm-up call."""
  jax.block_until_ready(fn())
  start = time.perf_counter()
  for _ in range(n):
    out = fn()
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / n


def bench_train_step(config, n_steps: int, profile_dir: str = '') -> dict:
  mesh = sharding.data_mesh()
  sharding.check_divisible(config.batch_size, mesh)
  state = jax.jit(
      lambda k: steps.create_train_state(config, k), out_shardings=sharding.replicated(mesh)
  )(jax.random.PRNGKey(0))
  batch = jax.device_put(random_batch(config), sharding.batch_sharding(mesh))
  step = steps.make_train_step(config, mesh)
  start = time.perf_counter()
  compiled = step.lower(state, batch).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get('flops', 0.0)) if cost else 0.0
  holder = {'state': state}

  def one():
    holder['state'], m = compiled(holder['state'], batch)
    return m

  sec = time_calls(one, n_steps)
  if profile_dir:  # a trace of two more steps, for TensorBoard's profile tab or Perfetto
    with jax.profiler.trace(profile_dir, create_perfetto_trace=True):
      jax.block_until_ready([one() for _ in range(2)])
  peak = peak_flops(config.dtype)
  return {
      'train_images_per_s': config.batch_size / sec,
      'step_ms': 1e3 * sec,
      'compile_s': compile_s,
      'step_gflops': flops / 1e9,
      'mfu': flops / sec / peak if peak and flops else None,
      'peak_memory_gb': (peak_memory_bytes() or 0) / 2**30,
  }


def bench_eval(config, n: int) -> float:
  gen_vars, _ = steps.init_variables(config, jax.random.PRNGKey(0))
  batch = random_batch(config)
  eval_step = steps.make_eval_step(config)
  return config.batch_size / time_calls(lambda: eval_step(gen_vars, batch), n)


def bench_inpaint(config, n: int) -> float:
  gen_vars, _ = steps.init_variables(config, jax.random.PRNGKey(0))
  predict = steps.make_predict(config)
  photo = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
  hole = inpaint.hole_from_spec('center', 480, 640, config)
  return 1.0 / time_calls(lambda: inpaint.inpaint_photo(photo, hole, config, gen_vars, predict), n)


FLAGS = flags.FLAGS


def define_flags():
  """Flags of this command (defined only when it runs, so modules import each other freely)."""
  cli.define_config_flags()
  flags.DEFINE_list('models', ['gan'], 'Models to time: vae, gan.')
  flags.DEFINE_list('encoders', ['pathak'], 'Encoders to time.')
  flags.DEFINE_integer('steps', 10, 'Timed train steps per (model, encoder).')
  flags.DEFINE_integer('pipeline_batches', 20, 'Timed input-pipeline batches (0 skips it).')
  flags.DEFINE_string('json', '', 'Also write the results here.')
  flags.DEFINE_string(
      'profile_dir',
      '',
      'Also write a jax.profiler trace of two train steps of '
      'each (model, encoder) under this folder.',
  )


def main(argv):
  logging.set_verbosity(logging.WARNING)  # orbax and clu are chatty at INFO
  del argv
  try:
    base = cli.config_from_flags()
    platform.setup()
  except ValueError as e:
    sys.exit(f'bench: {e}')
  device = f'{jax.device_count()}x {jax.devices()[0].device_kind}'
  rows = []
  for model in FLAGS.models:
    for encoder in FLAGS.encoders:
      config = base.copy_and_resolve_references()
      config.model, config.encoder = model, encoder
      try:
        models.validate(config)
      except ValueError as e:
        sys.exit(f'bench: {e}')
      row = {
          'model': model,
          'encoder': encoder,
          'image_size': config.image_size,
          'batch_size': config.batch_size,
          'dtype': config.dtype,
      }
      profile = f'{FLAGS.profile_dir}/{model}_{encoder}' if FLAGS.profile_dir else ''
      row |= bench_train_step(config, FLAGS.steps, profile)
      row['eval_images_per_s'] = bench_eval(config, max(2, FLAGS.steps // 2))
      rows.append(row)
      print(json.dumps(row), flush=True)
  extra = {'inpaint_photos_per_s': bench_inpaint(base, 3)}
  if FLAGS.pipeline_batches > 0:
    host, device_rate, _ = bench_input.pipeline_rates(
        base, batches=FLAGS.pipeline_batches, warmup=2
    )
    extra |= {'pipeline_host_images_per_s': host, 'pipeline_images_per_s': device_rate}
  print(f'\n{device}, {base.image_size}px, batch {base.batch_size}, {base.dtype}')
  print(
      '| model | encoder | train img/s | step ms | compile s | GFLOPs/step | MFU | peak mem GB '
      '| eval img/s |'
  )
  print('|---|---|---|---|---|---|---|---|---|')
  for r in rows:
    mfu = f'{100 * r["mfu"]:.1f} %' if r['mfu'] is not None else 'n/a'
    print(
        f'| {r["model"]} | {r["encoder"]} | {r["train_images_per_s"]:.1f} | {r["step_ms"]:.0f} '
        f'| {r["compile_s"]:.1f} | {r["step_gflops"]:.1f} | {mfu} | {r["peak_memory_gb"]:.2f} '
        f'| {r["eval_images_per_s"]:.1f} |'
    )
  print(' '.join(f'{k}={v:.1f}' for k, v in extra.items()))
  if FLAGS.json:
    with open(FLAGS.json, 'w') as f:
      json.dump({'device': device, 'rows': rows, **extra}, f, indent=2)


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=cli.parse_flags)
