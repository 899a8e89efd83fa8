"""What one train step of each cpu-protocol network costs: wall and process CPU seconds.

  nice -n 15 python -m experiments.study_cost [--steps=4] [--cells=gan_vgg,vae_alexnet]

Process CPU seconds (all threads) are what sized the study (experiments/RESULTS.md): on a
machine that other jobs keep busy they are inflated far less than the wall-clock. One JSON line
per network (bottleneck 4000).
"""

import argparse
import json
import time

import jax

from ce_jax import bench, platform, sharding, steps
from experiments import report

NETWORKS = (
    ('gan', 'vgg', 2),
    ('vae', 'vgg', 1),
    ('gan', 'alexnet', 2),
    ('vae', 'alexnet', 1),
    ('gan', 'resnet', 2),
    ('vae', 'resnet', 1),
    ('gan', 'pathak', 2),
)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=4)
  parser.add_argument('--cells', default='', help='e.g. gan_vgg,vae_alexnet (default: all)')
  args = parser.parse_args()
  platform.setup()
  mesh = sharding.data_mesh()
  for model, encoder, table in NETWORKS:
    if args.cells and f'{model}_{encoder}' not in args.cells.split(','):
      continue
    c = report.cell_config('cpu', table, report.Cell(model, encoder, 4000))
    state = jax.jit(lambda k, c=c: steps.create_train_state(c, k))(jax.random.PRNGKey(0))
    batch = bench.random_batch(c)
    start = time.perf_counter()
    compiled = steps.make_train_step(c, mesh).lower(state, batch).compile()
    compile_s = time.perf_counter() - start
    state, m = compiled(state, batch)
    jax.block_until_ready(m)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
      state, m = compiled(state, batch)
      jax.block_until_ready(m)
    row = {
        'cell': f'{model}_{encoder}',
        'wall_s': (time.perf_counter() - wall) / args.steps,
        'cpu_s': (time.process_time() - cpu) / args.steps,
        'compile_s': compile_s,
    }
    print(json.dumps(row), flush=True)


if __name__ == '__main__':
  main()
