"""Training, checkpoints, evaluation and inpainting, end to end on the tiny configuration."""

import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from ce_jax import baselines, checkpoints, evaluate, inpaint, metrics, models, sharding, steps
from ce_jax import train
from conftest import REPO, host, init_state, random_batch, restore_state, run_module, tiny


@pytest.mark.parametrize('model', models.MODELS)
@pytest.mark.parametrize('encoder', models.ENCODERS)
def test_one_train_step_updates_every_network(model, encoder):
  config = tiny(model=model, encoder=encoder)
  state = init_state(config)
  before = host(state)
  state, metrics = steps.make_train_step(config, sharding.data_mesh())(state, random_batch(config))
  metrics = host(metrics)
  assert all(np.isfinite(v) for v in metrics.values()), metrics
  assert int(state.step) == 1
  changed = jax.tree.map(
      lambda a, b: not np.array_equal(a, np.asarray(b)), before.gen.params, state.gen.params
  )
  assert all(jax.tree.leaves(changed)), 'some generator parameters did not move'
  assert int(state.gen.opt_state[0].count) == 1
  if model == 'gan':
    changed = jax.tree.map(
        lambda a, b: not np.array_equal(a, np.asarray(b)), before.disc.params, state.disc.params
    )
    assert all(jax.tree.leaves(changed)), 'some discriminator parameters did not move'
    assert int(state.disc.opt_state[0].count) == 1
    assert {'d_loss', 'adv_loss', 'rec_loss', 'd_real', 'd_fake'} <= set(metrics)
  else:
    assert state.disc is None and {'kl', 'rec_loss'} <= set(metrics)


def test_same_step_on_one_and_four_devices():
  code = textwrap.dedent("""
      import jax, numpy as np, optax
      from ce_jax import configs, masks, sharding, steps
      assert jax.device_count() == 4

      def run(c, devices, n_steps):
        mesh = sharding.data_mesh(devices)
        state = jax.jit(lambda k: steps.create_train_state(c, k),
                        out_shardings=sharding.replicated(mesh))(jax.random.PRNGKey(0))
        before = jax.tree.map(np.asarray, (state.gen.params, state.disc and state.disc.params))
        b = jax.device_put(batch, sharding.batch_sharding(mesh))
        step = steps.make_train_step(c, mesh)
        for _ in range(n_steps):
          state, m = step(state, b)
        after = jax.tree.map(np.asarray, (state.gen.params, state.disc and state.disc.params))
        return before, after, jax.tree.map(np.asarray, (state.gen.batch_stats, m))

      adam = steps.optimizers
      for model in ('gan', 'vae'):
        c = configs.get('tiny'); c.model = model
        images = jax.random.uniform(jax.random.key(0), (16, 32, 32, 3), minval=-1, maxval=1)
        batch = masks.make_batch(images, jax.random.key(1), c)
        # Two Adam steps: the same parameters, statistics and metrics on 1 and on 4 devices.
        steps.optimizers = adam
        (_, p1, (s1, m1)), (_, p4, (s4, m4)) = [run(c, d, 2) for d in (jax.devices()[:1], jax.devices())]
        for k in m1:
          np.testing.assert_allclose(m1[k], m4[k], rtol=1e-4, atol=1e-6, err_msg=k)
        for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s4)):
          np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
        for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
          np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
        # One SGD(1) step moves the parameters by minus the gradient: Adam would hide a gradient
        # scaled by the device count, this does not.
        steps.optimizers = lambda config: (optax.sgd(1.0), optax.sgd(1.0))
        (b1, a1, _), (b4, a4, _) = [run(c, d, 1) for d in (jax.devices()[:1], jax.devices())]
        for x1, y1, x4, y4 in zip(*map(jax.tree.leaves, (b1, a1, b4, a4))):
          g1, g4 = y1 - x1, y4 - x4
          assert np.abs(g1).max() > 0
          np.testing.assert_allclose(g4, g1, rtol=0, atol=1e-4 * np.abs(g1).max())
      print('EQUAL')
  """)
  r = run_module('-c', code, devices=4)
  assert r.returncode == 0 and 'EQUAL' in r.stdout, r.stderr[-3000:]


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A tiny GAN trained for 100 steps on the bundled samples (shared by the tests below)."""
  workdir = tmp_path_factory.mktemp('run')
  config = tiny(num_steps=100, log_every=10, eval_every=50, checkpoint_every=50)
  results = train.train_and_evaluate(config, workdir)
  return config, workdir, results


def read_jsonl(workdir):
  return [json.loads(l) for l in (Path(workdir) / 'metrics.jsonl').read_text().splitlines()]


def test_reconstruction_loss_falls(trained):
  config, workdir, results = trained
  rec = [r['train/rec_loss'] for r in read_jsonl(workdir) if 'train/rec_loss' in r]
  assert len(rec) == 10
  # Steps 10-20 paint a near-constant patch (the decoder has not yet learnt the colour scale);
  # by steps 90-100 the tiny model paints each patch's colours and coarse layout. Halving the
  # overlap-weighted L2 is far beyond the batch-to-batch noise of these means (about 10 %), and
  # a step that did not train (frozen weights, a sign error) cannot reach it.
  assert np.mean(rec[-2:]) < 0.5 * np.mean(rec[:2]), rec
  assert np.isfinite(results['model']['report_loss'])
  assert (Path(workdir) / 'grids' / 'step_100.png').is_file()


def test_checkpoint_round_trip_is_exact(trained, tmp_path):
  config, _, _ = trained
  state = init_state(config, seed=3)
  state, _ = steps.make_train_step(config, sharding.data_mesh())(state, random_batch(config))
  saved = host(state)
  mngr = checkpoints.manager(tmp_path, config)
  checkpoints.save(mngr, state, config)
  mngr.wait_until_finished()
  mngr.close()
  restored = restore_state(tmp_path, config, 1)
  same = jax.tree.map(lambda a, b: np.array_equal(a, np.asarray(b)), saved, restored)
  assert all(jax.tree.leaves(same))


def test_sigterm_saves_and_the_run_resumes(tmp_path):
  workdir = tmp_path / 'run'
  proc = subprocess.Popen(
      [
          sys.executable,
          '-m',
          'ce_jax.train',
          '--config=tiny',
          '--num_steps=100000',
          '--log_every=1',
          '--eval_every=100000',
          '--checkpoint_every=100000',
          f'--workdir={workdir}',
      ],
      cwd=REPO,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )
  deadline = time.time() + 600  # a loaded 2-core CI machine starts slowly
  log = workdir / 'metrics.jsonl'
  while time.time() < deadline and proc.poll() is None:
    if log.exists() and len(log.read_text().splitlines()) >= 5:
      break
    time.sleep(0.2)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-3000:]
  assert 'SIGTERM received' in err
  mngr = checkpoints.manager(workdir, read_only=True)
  stopped = mngr.latest_step()
  mngr.close()
  assert stopped is not None and stopped >= 5
  assert read_jsonl(workdir)[-1]['step'] == stopped  # saved exactly where it stopped

  config = tiny(num_steps=stopped + 3, eval_every=100000, checkpoint_every=100000, log_every=1)
  train.train_and_evaluate(config, workdir)
  steps_logged = [r['step'] for r in read_jsonl(workdir) if 'train/g_loss' in r]
  assert steps_logged[-4:] == [stopped, stopped + 1, stopped + 2, stopped + 3]
  mngr = checkpoints.manager(workdir, read_only=True)
  assert mngr.latest_step() == stopped + 3
  mngr.close()

  # The killed-and-resumed run trained exactly as one that never stopped: same data order,
  # crops, masks and noise after the resume point.
  train.train_and_evaluate(config, tmp_path / 'uninterrupted')

  def losses(w):
    return {r['step']: r['train/g_loss'] for r in read_jsonl(w) if 'train/g_loss' in r}

  resumed, uninterrupted = losses(workdir), losses(tmp_path / 'uninterrupted')
  assert sorted(resumed) == sorted(uninterrupted) == list(range(1, stopped + 4))
  np.testing.assert_allclose(
      [resumed[s] for s in sorted(resumed)], [uninterrupted[s] for s in sorted(resumed)], rtol=1e-6
  )

  with pytest.raises(ValueError, match=r'trained with encoder=pathak \(asked: vgg\)'):
    train.train_and_evaluate(tiny(encoder='vgg'), workdir)


def test_evaluate_reports_model_and_baselines(trained, tmp_path):
  config, workdir, _ = trained
  cfg, gen_vars, step = checkpoints.load_generator(workdir)
  assert step == 100 and cfg.encoder == config.encoder
  results = evaluate.evaluate(
      gen_vars,
      cfg,
      baselines=tuple(baselines.BASELINES),
      grid_path=tmp_path / 'grid.png',
      per_image=True,
  )
  for name in ('model', *baselines.BASELINES):
    assert set(results[name]) == set(metrics.NAMES) | {'images'}
    assert results[name]['images'] == results['model']['images'] > 0
  assert (tmp_path / 'grid.png').is_file()
  per = results['per_image']
  assert results['model_vs_harmonic'] == metrics.compare(
      per['model']['psnr'], per['harmonic']['psnr']
  )
  assert len(per['brightness']) == results['model']['images']
  np.testing.assert_allclose(np.mean(per['telea']['lpips']), results['telea']['lpips'], rtol=1e-6)
  again = evaluate.evaluate(gen_vars, cfg)
  assert again['model'] == results['model']  # fixed masks, fixed order: the same numbers
  dark = evaluate.evaluate(
      gen_vars, cfg, baselines=('mean_fill',), transform='dark', per_image=True
  )
  # The same photos at a quarter of their light: darker, and errors shrink with the contrast.
  np.testing.assert_allclose(
      np.asarray(dark['per_image']['brightness']), 0.25 * np.asarray(per['brightness']), rtol=1e-5
  )
  assert dark['mean_fill']['l1'] < 0.3 * results['mean_fill']['l1']

  r = run_module(
      '-m',
      'ce_jax.evaluate',
      f'--workdir={workdir}',
      '--step=best',
      '--config.eval_batch_size=8',
      '--max_examples=8',
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert 'telea' in r.stdout and list((Path(workdir) / 'eval').glob('*.json'))
  [model_row] = [l for l in r.stdout.splitlines() if l.startswith('| model |')]
  assert model_row.endswith('| 8 |')  # --config.eval_batch_size=8: one batch of 8 images
  assert 'read only' not in r.stderr and 'read_only' not in r.stderr  # orbax's warnings, muted


def test_inpaint_keeps_size_and_pixels_outside_the_hole(trained, tmp_path):
  _, workdir, _ = trained
  config, gen_vars, _ = checkpoints.load_generator(workdir)
  rng = np.random.default_rng(0)
  photo = rng.integers(0, 256, (97, 143, 3), dtype=np.uint8)
  hole = inpaint.hole_from_spec('60,30,20,16', 97, 143, config)
  out = inpaint.inpaint_photo(photo, hole, config, gen_vars, blend=3)
  assert out.shape == photo.shape and out.dtype == np.uint8
  ys, xs = np.mgrid[:97, :143]
  far = (xs < 60 - 4) | (xs >= 80 + 4) | (ys < 30 - 4) | (ys >= 46 + 4)
  np.testing.assert_array_equal(out[far], photo[far])
  assert np.mean(out[hole] != photo[hole]) > 0.5

  with pytest.raises(ValueError, match='Use a smaller hole'):
    inpaint.inpaint_photo(
        photo, inpaint.hole_from_spec('0,0,140,90', 97, 143, config), config, gen_vars
    )

  from PIL import Image

  Image.fromarray(photo).save(tmp_path / 'photo.png')
  r = run_module(
      '-m',
      'ce_jax.inpaint',
      f'--workdir={workdir}',
      f'--input={tmp_path / "photo.png"}',
      f'--output={tmp_path / "out"}',
      '--mask=center',
  )
  assert r.returncode == 0, r.stderr[-3000:]
  assert Image.open(tmp_path / 'out' / 'photo_filled.png').size == (143, 97)


@pytest.mark.parametrize(
    'args, devices, message',
    [
        (['--model=foo'], 1, "Unknown model 'foo'"),
        (['--encoder=lenet'], 1, "Unknown encoder 'lenet'"),
        (['--config=huge'], 1, '--config=huge: no such preset'),
        (['--config=tiny', '--batch_size=6'], 4, 'batch_size=6 does not divide by the 4 devices'),
    ],
)
def test_bad_flags_give_one_line_errors(args, devices, message, tmp_path):
  r = run_module('-m', 'ce_jax.train', *args, f'--workdir={tmp_path}', devices=devices)
  assert r.returncode != 0
  last = r.stderr.strip().splitlines()[-1]
  assert message in last and last.startswith('train: '), r.stderr[-2000:]
