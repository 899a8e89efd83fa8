"""Nothing lost, ever (issue 16): every failure keeps the good checkpoints and ends in one line."""

import os
from pathlib import Path
import shutil
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from ce_jax import checkpoints, cli, evaluate, inpaint, input_pipeline, train
from conftest import REPO, init_state, restore_state, run_module, tiny


def last_line(result):
  """The one line a command ends with; a traceback anywhere fails the test."""
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  return result.stderr.strip().splitlines()[-1]


def saved_steps(workdir):
  mngr = checkpoints.manager(workdir, read_only=True)
  try:
    return mngr.all_steps()
  finally:
    mngr.close()


def write_photos(folder, names, size=(40, 48)):
  rng = np.random.default_rng(0)
  for name in names:
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope='module')
def run4(tmp_path_factory):
  """A tiny GAN trained for 4 steps, checkpoints at steps 2 and 4 (damage `run4_copy`, not it)."""
  workdir = tmp_path_factory.mktemp('run4')
  train.train_and_evaluate(
      tiny(num_steps=4, log_every=2, eval_every=4, checkpoint_every=2), workdir
  )
  return workdir


@pytest.fixture
def run4_copy(run4, tmp_path):
  """A copy of run4 of this test's own, to damage."""
  shutil.copytree(run4, tmp_path / 'run')
  return tmp_path / 'run'


# 1. A state with NaN or Inf is never saved, and the error names a checkpoint that is good.


@pytest.mark.parametrize('model', ['gan', 'vae'])
def test_a_diverged_state_is_never_saved(model, tmp_path):
  config = tiny(
      model=model,
      num_steps=6,
      log_every=50,
      eval_every=1000,
      checkpoint_every=1,
      optim__learning_rate=1e30,
  )
  with pytest.raises(FloatingPointError) as e:
    train.train_and_evaluate(config, tmp_path)
  saved = saved_steps(tmp_path)
  for step in saved:  # every checkpoint left behind is usable
    assert checkpoints.is_finite(restore_state(tmp_path, config, step)), step
  message = str(e.value)
  assert 'holds NaN or Inf and was not saved' in message, message
  if saved:
    assert f'the last good checkpoint is step {saved[-1]} in {tmp_path}' in message
  else:
    assert 'no checkpoint was saved' in message


# 2. 'best' is the lowest report loss.


def test_best_keeps_the_lowest_report_loss(tmp_path):
  config = tiny(keep_checkpoints=1)
  state = init_state(config)
  mngr = checkpoints.manager(tmp_path, config)
  for step, loss in ((1, 41.67), (2, 45.85), (3, 42.71)):
    checkpoints.save(
        mngr, state.replace(step=jnp.int32(step)), config, {checkpoints.BEST_METRIC: loss}
    )
    mngr.wait_until_finished()
  assert mngr.all_steps() == [1, 3]  # the best (41.67) and the latest
  assert checkpoints.resolve_step(mngr, 'best') == 1
  mngr.close()
  # The metrics are on disk: a later process (evaluate --step=best, a resumed run) sees them.
  mngr = checkpoints.manager(tmp_path, read_only=True)
  assert checkpoints.resolve_step(mngr, 'best') == 1
  mngr.close()


# 3. One trainer per workdir.


def test_a_second_trainer_on_the_same_workdir_is_refused(tmp_path):
  holder = subprocess.Popen(
      [
          sys.executable,
          '-c',
          'import sys, time\nfrom ce_jax import train\n'
          'train.WorkdirLock(sys.argv[1]).__enter__()\nprint("locked", flush=True)\ntime.sleep(600)',
          str(tmp_path),
      ],
      cwd=REPO,
      stdout=subprocess.PIPE,
      text=True,
  )
  try:
    assert holder.stdout.readline().strip() == 'locked'
    r = run_module('-m', 'ce_jax.train', '--config=tiny', f'--workdir={tmp_path}')
    assert r.returncode != 0
    assert last_line(r) == (
        f'train: {tmp_path} is in use by another training process (pid {holder.pid}); wait for '
        'it to end or stop it, or use another --workdir.'
    )
    assert not (tmp_path / 'checkpoints').exists()
  finally:
    holder.kill()  # SIGKILL: no clean-up runs, the kernel frees the lock
    holder.wait()
  with train.WorkdirLock(tmp_path):
    pass


# 4, 6, 8. Every setting is checked before step 1, in one line.


@pytest.mark.parametrize(
    'overrides, message',
    [
        ({'batch_size': 0}, 'batch_size=0 must be a positive integer.'),
        ({'batch_size': -4}, 'batch_size=-4 must be a positive integer.'),
        ({'eval_batch_size': 0}, 'eval_batch_size=0 must be a positive integer.'),
        ({'log_every': 0}, 'log_every=0 must be a positive integer.'),
        ({'eval_every': 0}, 'eval_every=0 must be a positive integer.'),
        ({'checkpoint_every': 0}, 'checkpoint_every=0 must be a positive integer.'),
        ({'gen_width': 0}, 'gen_width=0 must be a positive integer.'),
        (
            {'train_crop_min': 2.0},
            'train_crop_min=2.0 must be in [0, 1] (0 = rescale and crop; '
            'f > 0 = a random window of f..1 x the shorter side).',
        ),
        ({'optim__grad_clip': -1.0}, 'optim.grad_clip=-1.0 must be >= 0 (0 = no clipping).'),
        ({'folder_test_fraction': 0.0}, 'None of the 50 images under '),
    ],
)
def test_bad_settings_fail_before_step_1(overrides, message, tmp_path):
  with pytest.raises(ValueError) as e:
    train.train_and_evaluate(tiny(**overrides), tmp_path)
  assert str(e.value).startswith(message), str(e.value)
  assert not (tmp_path / 'metrics.jsonl').exists()  # not one step ran


def test_a_wrongly_typed_field_is_one_line():
  with pytest.raises(ValueError, match=r'^fill=5 is not a tuple like its default \('):
    cli.set_field(tiny(), 'fill', '5')


def test_an_unreadable_held_out_split_fails_before_step_1(tmp_path):
  data = tmp_path / 'data'
  names = [f'{i}.png' for i in range(40)]
  test_names = [n for n in names if input_pipeline._in_test_split(n, 0.15)]
  assert test_names
  write_photos(data, [n for n in names if n not in test_names])
  for n in test_names:
    (data / n).write_bytes(b'not an image')
  with pytest.raises(ValueError, match=r"^No readable image in the 'test' split of "):
    train.train_and_evaluate(tiny(dataset=f'folder:{data}'), tmp_path / 'run')
  assert not (tmp_path / 'run' / 'metrics.jsonl').exists()


def test_a_failing_evaluation_keeps_the_steps_before_it(tmp_path, monkeypatch):
  def broken(*args, **kwargs):
    raise ValueError('evaluation broke')

  monkeypatch.setattr(evaluate, 'evaluate', broken)
  with pytest.raises(ValueError, match='evaluation broke'):
    train.train_and_evaluate(tiny(num_steps=6, eval_every=3, checkpoint_every=100), tmp_path)
  assert saved_steps(tmp_path) == [3]


@pytest.mark.parametrize(
    'args, message',
    [
        (['--batch_size=-4'], 'train: batch_size=-4 must be a positive integer.'),
        (['--config.fill=5'], 'train: fill=(5,) must be three numbers in [-1, 1]'),
    ],
)
def test_train_flags_fail_in_one_line(args, message, tmp_path):
  r = run_module('-m', 'ce_jax.train', '--config=tiny', *args, f'--workdir={tmp_path}')
  assert r.returncode != 0 and last_line(r).startswith(message), r.stderr[-2000:]


# 5, 6, 8. inpaint: unique names, a bad photo skipped, bad flags in one line.


def test_output_names_are_unique(tmp_path):
  src = tmp_path / 'in'
  files = [src / 'a.jpg', src / 'a.png', src / 'sub' / 'a.jpg', src / 'a_png.jpg']
  for f in files:
    f.parent.mkdir(parents=True, exist_ok=True)
    f.touch()
  names = inpaint.output_paths(files, src, tmp_path / 'out')
  assert {
      k.relative_to(src).as_posix(): v.relative_to(tmp_path / 'out').as_posix()
      for k, v in names.items()
  } == {
      'a.jpg': 'a_filled.png',
      'a.png': 'a_png_filled.png',
      'sub/a.jpg': 'sub/a_filled.png',
      'a_png.jpg': 'a_png_jpg_filled.png',
  }


def test_inpaint_fills_a_folder_past_a_bad_photo(run4, tmp_path):
  src = tmp_path / 'in'
  write_photos(src, ['a.jpg', 'a.png', 'sub/a.jpg'])
  (src / 'bad.jpg').write_bytes(b'not an image')
  out = tmp_path / 'out'
  r = run_module('-m', 'ce_jax.inpaint', f'--workdir={run4}', f'--input={src}', f'--output={out}')
  assert r.returncode == 0, r.stderr[-3000:]
  assert sorted(p.relative_to(out).as_posix() for p in out.rglob('*.png')) == [
      'a_filled.png',
      'a_png_filled.png',
      'sub/a_filled.png',
  ]
  assert f'inpaint: skipping {src / "bad.jpg"}: Cannot read image {src / "bad.jpg"}' in r.stderr
  assert last_line(r) == f'inpaint: filled 3 of 4 photos; skipped {src / "bad.jpg"}.'


@pytest.mark.parametrize(
    'case, message',
    [
        ('blend', 'inpaint: --blend=-1 must be >= 0 (pixels of blended band; 0 = none).'),
        ('mask', 'inpaint: Cannot read mask image {mask}: cannot identify image file'),
        ('output', 'inpaint: --output={photo} is an existing file; name a folder.'),
        ('nothing', 'inpaint: Cannot read image {bad}: cannot identify image file'),
    ],
)
def test_inpaint_errors_are_one_line(run4, case, message, tmp_path):
  write_photos(tmp_path, ['photo.png'])
  photo, mask, bad = tmp_path / 'photo.png', tmp_path / 'mask.png', tmp_path / 'bad.png'
  mask.write_bytes(b'not an image')
  bad.write_bytes(b'not an image')
  args = {
      'blend': [f'--input={photo}', '--blend=-1'],
      'mask': [f'--input={photo}', f'--mask={mask}'],
      'output': [f'--input={photo}', f'--output={photo}'],
      'nothing': [f'--input={bad}'],
  }[case]
  r = run_module('-m', 'ce_jax.inpaint', f'--workdir={run4}', f'--output={tmp_path / "out"}', *args)
  assert r.returncode != 0
  assert last_line(r).startswith(message.format(photo=photo, mask=mask, bad=bad)), r.stderr


def test_negative_blend_is_refused(run4):
  config, gen_vars, _ = checkpoints.load_generator(run4)
  photo = np.zeros((40, 40, 3), np.uint8)
  with pytest.raises(ValueError, match='--blend=-5 must be'):
    inpaint.inpaint_photo(
        photo, inpaint.hole_from_spec('center', 40, 40, config), config, gen_vars, blend=-5
    )


def test_photos_over_pils_pixel_limit_are_read(tmp_path, monkeypatch):
  write_photos(tmp_path, ['big.png'], size=(64, 64))
  monkeypatch.setattr(Image, 'MAX_IMAGE_PIXELS', 100)  # 64 x 64 is a "decompression bomb" now
  assert inpaint.read_photo(tmp_path / 'big.png').shape == (64, 64, 3)
  assert Image.MAX_IMAGE_PIXELS == 100  # the limit is lifted for the user's photos only


# 7, 8. A damaged checkpoint: fall back to the step before it, or say which steps are left.


def damage(workdir, step):
  """Truncates every array file of the generator at `step` to half its size."""
  files = [
      p
      for p in (workdir / 'checkpoints' / str(step) / checkpoints.GENERATOR).rglob('*')
      if p.is_file() and p.parent.name == 'd'
  ]
  assert files
  for p in files:
    os.truncate(p, p.stat().st_size // 2)


def test_a_corrupt_latest_checkpoint_falls_back(run4_copy, capsys):
  workdir = run4_copy
  damage(workdir, 4)
  _, _, step = checkpoints.load_generator(workdir)
  assert step == 2
  warning = capsys.readouterr().err.strip().splitlines()[-1]
  assert warning.startswith(f'warning: checkpoint 4 in {workdir / "checkpoints"} cannot be read (')
  assert warning.endswith('); falling back to step 2.')
  with pytest.raises(
      ValueError,
      match=r'^Checkpoint 4 in .* cannot be read \(.*\); other saved ' r'steps: \[2\]\.$',
  ):
    checkpoints.load_generator(workdir, 4)

  # Training resumes from step 2; the unreadable step 4 is kept aside, not deleted.
  train.train_and_evaluate(
      tiny(num_steps=5, log_every=5, eval_every=5, checkpoint_every=100), workdir
  )
  assert saved_steps(workdir) == [2, 5]
  assert [p.name.split('_')[0] for p in (workdir / 'unreadable_checkpoints').iterdir()] == ['4']


def test_evaluate_names_a_half_deleted_step_in_one_line(run4_copy):
  workdir = run4_copy
  shutil.rmtree(workdir / 'checkpoints' / '4' / checkpoints.GENERATOR)
  r = run_module('-m', 'ce_jax.evaluate', f'--workdir={workdir}', '--step=4')
  assert r.returncode != 0
  assert last_line(r).startswith(
      f'evaluate: Checkpoint 4 in {workdir / "checkpoints"} cannot be read ('
  ), r.stderr[-2000:]
  assert last_line(r).endswith('other saved steps: [2].')
