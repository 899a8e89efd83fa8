"""Fault injection (issue 24): hangs, data loss, silent wrong results and noise under faults.

Each test is one numbered case of the issue. A full disk is a small tmpfs where root may mount
one, otherwise orbax's writer patched to raise ENOSPC; a read-only target is a read-only tmpfs
(root) or a folder without write permission (other users). Commands that could hang run in a
subprocess or a thread with a timeout, so that a hang fails the test instead of the suite.
"""

import errno
import io
import json
import os
from pathlib import Path
import shutil
import socket
import subprocess
import threading

import jax
import numpy as np
import orbax.checkpoint as ocp
from PIL import Image
import pytest

from ce_jax import checkpoints, cli, evaluate, images, inpaint, input_pipeline, platform, train
from conftest import run_module, tiny

# orbax leaves asyncio callbacks behind after a failed write: noise, not a failure of ce_jax.
pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')


def last_line(result):
  """The one line a command ends with; a traceback anywhere fails the test."""
  assert 'Traceback' not in result.stderr, result.stderr[-3000:]
  return result.stderr.strip().splitlines()[-1]


def within(seconds, fn, *args, **kwargs):
  """fn(*args, **kwargs) in a thread: its result or exception, or a test failure if it hangs."""
  out = {}

  def target():
    try:
      out['value'] = fn(*args, **kwargs)
    except BaseException as e:  # pylint: disable=broad-except
      out['error'] = e

  thread = threading.Thread(target=target, daemon=True)
  thread.start()
  thread.join(seconds)
  assert not thread.is_alive(), f'{fn.__name__} still runs after {seconds} s: it hangs'
  if 'error' in out:
    raise out['error']
  return out.get('value')


def _mount(folder: Path, options: str) -> bool:
  """Mounts a tmpfs on `folder` (root only); whether it worked."""
  if os.geteuid() != 0 or not shutil.which('mount'):
    return False
  r = subprocess.run(['mount', '-t', 'tmpfs', '-o', options, 'tmpfs', str(folder)], check=False)
  return r.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
  """A folder on a 4 MB tmpfs (a disk that fills up), or None where none can be mounted."""
  folder = tmp_path / 'disk'
  folder.mkdir()
  if not _mount(folder, 'size=4m'):
    yield None
    return
  try:
    yield folder
  finally:
    subprocess.run(['umount', '-l', str(folder)], check=False)


@pytest.fixture
def read_only(tmp_path):
  """An empty folder nothing can be written in."""
  folder = tmp_path / 'read_only'
  folder.mkdir()
  if _mount(folder, 'ro,size=1m'):
    try:
      yield folder
    finally:
      subprocess.run(['umount', '-l', str(folder)], check=False)
    return
  if os.geteuid() == 0:
    pytest.skip('root without mount: no folder is read-only to root')
  folder.chmod(0o555)
  yield folder
  folder.chmod(0o755)


def fail_writes(monkeypatch, where: str = ''):
  """orbax's array writer raises ENOSPC for paths containing `where` (the patched full disk)."""
  original = ocp.StandardCheckpointHandler.async_save

  async def async_save(self, directory, *args, **kwargs):
    if where in str(directory):
      raise OSError(errno.ENOSPC, 'No space left on device', str(directory))
    return await original(self, directory, *args, **kwargs)

  monkeypatch.setattr(ocp.StandardCheckpointHandler, 'async_save', async_save)


def fill(disk: Path, leave: int) -> None:
  """Fills `disk` up to `leave` free bytes."""
  free = shutil.disk_usage(disk).free
  with open(disk / 'filler', 'wb') as f:
    f.write(b'\0' * max(free - leave, 0))


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A tiny GAN trained for 4 steps, checkpoints at steps 2 and 4 (damage `run_copy`, not it)."""
  workdir = tmp_path_factory.mktemp('run')
  train.train_and_evaluate(
      tiny(num_steps=4, log_every=2, eval_every=4, checkpoint_every=2), workdir
  )
  return workdir


@pytest.fixture
def run_copy(run, tmp_path):
  shutil.copytree(run, tmp_path / 'run')
  return tmp_path / 'run'


@pytest.fixture(scope='module')
def exported(run, tmp_path_factory):
  out = tmp_path_factory.mktemp('exports') / 'export'
  config, variables, step = checkpoints.load_generator(run)
  checkpoints.export_generator(out, config, variables, step)
  return out


# Hangs.


def test_1_out_of_memory_at_step_1_is_one_line(tmp_path):
  r = run_module(
      '-m',
      'ce_jax.train',
      '--config=tiny',
      '--num_steps=2',
      '--bottleneck=100000000',  # 400 GB of weights
      f'--workdir={tmp_path}',
      timeout=90,
  )
  assert r.returncode != 0
  assert last_line(r).startswith('train: Out of memory on the device (RESOURCE_EXHAUSTED'), r.stderr


def test_2_export_to_a_file_is_one_line(run, tmp_path):
  existing = tmp_path / 'notes.txt'
  existing.write_text('mine')
  r = run_module('-m', 'ce_jax.export', f'--workdir={run}', f'--out={existing}', timeout=90)
  assert r.returncode != 0
  assert last_line(r) == (
      f'export: --out={existing} is an existing file; name a new folder (or an earlier export).'
  )
  assert existing.read_text() == 'mine'


def test_2_export_to_a_read_only_folder_is_one_line(run, read_only):
  config, variables, step = checkpoints.load_generator(run)
  with pytest.raises(ValueError, match=rf'^--out={read_only}: cannot write there \('):
    within(60, checkpoints.export_generator, read_only, config, variables, step)
  assert not list(read_only.iterdir())


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_3_an_unreachable_coordinator_is_one_line_after_the_timeout():
  address = f'127.0.0.1:{_free_port()}'  # nothing listens there
  code = f'from ce_jax import platform; platform.setup({address!r}, 2, 1, coordinator_timeout=2)'
  r = run_module('-c', code, timeout=60)
  assert r.returncode == 1, r.stderr[-2000:]
  assert last_line(r).startswith(
      f'platform: process 1 of 2 waited 2 s (--coordinator_timeout) for the coordinator at '
      f'{address} and every process to join; '
  )


@pytest.mark.parametrize('address', ['garbage', 'host:', ':1234', 'host:port', 'host:70000'])
def test_3_a_malformed_coordinator_address_is_refused(address):
  with pytest.raises(ValueError, match=rf'^--coordinator_address={address} must be HOST:PORT'):
    platform.distributed_request(address, 2, 0)


# Data loss, and photos of every mode (case 8) in the same run of inpaint.


def _photo(seed=0, size=(40, 48)):
  return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def test_4_8_inpaint_into_its_input_folder_replaces_nothing(run, tmp_path):
  folder = tmp_path / 'photos'
  folder.mkdir()
  Image.fromarray(_photo(0)).save(folder / 'cat.jpg')
  Image.fromarray(_photo(1)).save(folder / 'cat_filled.png')  # the user's own file
  grey = (np.linspace(0, 65535, 40 * 48).reshape(40, 48)).astype(np.uint16)
  Image.fromarray(grey).save(folder / 'grey16.png')  # 16-bit grey (mode I;16)
  rgba = np.dstack([_photo(2), np.full((40, 48), 255, np.uint8)])
  rgba[:, :10, 3] = 0  # a transparent band
  Image.fromarray(rgba, 'RGBA').save(folder / 'clear.png')
  before = {p.name: p.read_bytes() for p in folder.iterdir()}

  r = run_module(
      '-m', 'ce_jax.inpaint', f'--workdir={run}', f'--input={folder}', f'--output={folder}'
  )
  assert r.returncode == 0, r.stderr[-3000:]
  for name, data in before.items():  # every file there before is as it was
    assert (folder / name).read_bytes() == data, name
  new = sorted(p.name for p in folder.iterdir() if p.name not in before)
  assert new == [
      'cat_filled_filled.png',
      'cat_jpg_filled.png',
      'clear_filled.png',
      'grey16_filled.png',
  ]
  # 16-bit grey is scaled to 8 bits as training reads it, not clipped to white.
  out = np.asarray(Image.open(folder / 'grey16_filled.png'))
  expected = np.rint(grey / 257.0)
  far = np.ones(grey.shape, bool)
  far[8:32, 8:40] = False  # away from the centre hole
  assert np.abs(out[..., 0][far] - expected[far]).max() <= 1
  assert f'inpaint: note: {folder / "clear.png"}: {images.TRANSPARENCY_NOTE}.' in r.stderr
  assert np.all(np.asarray(Image.open(folder / 'clear_filled.png'))[:, :8] == 255)


def test_8_the_app_reads_16_bit_and_transparent_photos_as_training_does():
  from ce_jax import app  # pylint: disable=g-import-not-at-top

  grey = (np.linspace(0, 65535, 40 * 48).reshape(40, 48)).astype(np.uint16)
  rgba = np.dstack([_photo(2), np.full((40, 48), 255, np.uint8)])
  rgba[:, :10, 3] = 0
  for img, transparent in ((Image.fromarray(grey), False), (Image.fromarray(rgba, 'RGBA'), True)):
    data = io.BytesIO()
    img.save(data, 'PNG')
    photo, note = app.decode_photo(data.getvalue())
    expected, expected_note = images.read_photo(io.BytesIO(data.getvalue()))
    np.testing.assert_array_equal(photo, expected)
    assert (images.TRANSPARENCY_NOTE in note) == transparent and bool(expected_note) == transparent


def test_4_outputs_never_take_an_existing_name(tmp_path):
  src = tmp_path / 'in'
  src.mkdir()
  files = [src / 'a.jpg', src / 'a_filled.png', src / 'a_jpg_filled.png']
  for f in files:
    f.touch()
  names = inpaint.output_paths(files, src, src)
  assert names[src / 'a.jpg'] == src / 'a_jpg_2_filled.png'
  assert not set(names.values()) & set(files)
  with pytest.raises(ValueError, match='appeared meanwhile'):
    inpaint.write_new_png(_photo(), src / 'a_filled.png')
  assert (src / 'a_filled.png').read_bytes() == b''


def test_5_a_failed_re_export_keeps_the_earlier_export(
    run, tmp_path, small_disk, monkeypatch, capfd
):
  out = (small_disk or tmp_path) / 'export'
  config, variables, _ = checkpoints.load_generator(run, 2)
  checkpoints.export_generator(out, config, variables, 2)
  if small_disk:
    fill(small_disk, leave=32 * 1024)
  else:
    fail_writes(monkeypatch)
  config4, variables4, _ = checkpoints.load_generator(run, 4)
  with pytest.raises(checkpoints.SaveError) as e:
    within(60, checkpoints.export_generator, out, config4, variables4, 4)
  assert str(e.value).startswith(
      f'The export of step 4 could not be written to {out} (the disk is full); it needs about '
  ), str(e.value)
  assert 'Traceback' not in capfd.readouterr().err
  monkeypatch.undo()
  _, kept, step = checkpoints.load_generator(out)
  assert step == 2
  for a, b in zip(jax.tree.leaves(kept), jax.tree.leaves(variables)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b, np.float16), rtol=1e-3)
  assert sorted(p.name for p in out.iterdir()) == ['export.json', 'generator']  # no leftovers


# Silent wrong results.


def test_6_an_export_never_stands_for_a_run(run_copy, exported):
  with pytest.raises(ValueError, match=r'is a training run; an export there would hide'):
    config, variables, step = checkpoints.load_generator(run_copy)
    checkpoints.export_generator(run_copy, config, variables, step)
  # A run that holds an export already (an earlier version allowed it): its own steps come first.
  shutil.copytree(exported, run_copy, dirs_exist_ok=True)
  assert checkpoints.load_generator(run_copy, 2)[2] == 2
  assert checkpoints.load_generator(run_copy, 'latest')[2] == 4
  with pytest.raises(ValueError, match=r'No checkpoint at step 999 '):
    checkpoints.load_generator(run_copy, 999)
  with pytest.raises(ValueError, match=r'is an export of step 4 alone; --step=999 does not apply'):
    checkpoints.load_generator(exported, 999)


@pytest.mark.parametrize(
    'overrides, message',
    [
        ({'mask__max_strokes': 0}, 'mask.max_strokes=0 must be >= 1'),
        ({'mask__max_vertices': 1}, 'mask.max_vertices=1 must be >= 2'),
        ({'mask__max_vertices': 0}, 'mask.max_vertices=0 must be >= 2'),
        ({'mask__max_radius': 0.0}, 'mask.max_radius=0.0 must be > 0'),
    ],
)
def test_7_settings_that_empty_the_hole_are_refused_before_step_1(overrides, message, tmp_path):
  config = tiny(num_steps=1, mask__kind='freeform', **overrides)
  with pytest.raises(ValueError, match=f'^{message}'):
    train.train_and_evaluate(config, tmp_path)
  assert not (tmp_path / 'metrics.jsonl').exists()
  with pytest.raises(ValueError, match=f'^{message}'):
    input_pipeline.validate(config)  # what evaluate checks, with its --config.mask overrides


def test_8_photos_of_every_mode_are_read_as_training_reads_them(tmp_path):
  grey = np.arange(0, 65536, 64, dtype=np.uint16).reshape(32, 32)
  Image.fromarray(grey).save(tmp_path / 'grey16.png')
  photo = inpaint.read_photo(tmp_path / 'grey16.png')
  np.testing.assert_array_equal(photo, images.load_image(tmp_path / 'grey16.png'))
  assert abs(photo.mean() - grey.mean() / 257) < 1  # not ~white
  rgba = np.zeros((8, 8, 4), np.uint8)  # transparent black: white, as in training
  Image.fromarray(rgba, 'RGBA').save(tmp_path / 'clear.png')
  notes = []
  assert np.all(inpaint.read_photo(tmp_path / 'clear.png', warn=notes.append) == 255)
  assert notes == [f'{tmp_path / "clear.png"}: {images.TRANSPARENCY_NOTE}.']


# Saved when committed, and a full disk (cases 9 and 11).


def test_9_11_a_full_disk_keeps_the_last_checkpoint_in_one_line(
    tmp_path, small_disk, monkeypatch, capfd
):
  workdir = (small_disk or tmp_path) / 'run'
  if not small_disk:
    fail_writes(monkeypatch, where='/4.orbax-checkpoint-tmp')
  config = tiny(num_steps=4, log_every=2, eval_every=100, checkpoint_every=2)
  with pytest.raises(checkpoints.SaveError) as e:
    train.train_and_evaluate(config, workdir)  # in the main thread: it handles signals
  message = str(e.value)
  assert message.startswith(
      f'Checkpoint 4 could not be written to {workdir / "checkpoints"} (the disk is full); it '
      'needs about 2.'
  ), message
  assert message.endswith(
      f'The last good checkpoint is step 2 in {workdir}; free some space and run the same '
      'command to resume.'
  )
  err = capfd.readouterr().err
  assert 'Saved checkpoint 2' in err
  assert 'Saved checkpoint 4' not in err  # never said of a save that did not commit
  assert 'Traceback' not in err and len(err.splitlines()) < 30, err[-3000:]
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == ['2']  # no *-tmp left
  monkeypatch.undo()
  assert checkpoints.load_generator(workdir)[2] == 2


# Blocked or noisy.


@pytest.mark.parametrize('content', ['', '{"report_loss": ', '[1, 2]'])
def test_10_an_unreadable_metrics_file_blocks_nothing(run_copy, content, capfd):
  (run_copy / 'checkpoints' / '2' / 'metrics' / 'metrics').write_text(content)  # the oldest
  assert checkpoints.load_generator(run_copy)[2] == 4
  mngr = checkpoints.manager(run_copy, read_only=True)
  assert checkpoints.resolve_step(mngr, 'best') == 4
  mngr.close()
  warning = (
      f'warning: the metrics file of checkpoint 2 in {run_copy / "checkpoints"} cannot be read'
  )
  assert warning in capfd.readouterr().err
  train.train_and_evaluate(
      tiny(num_steps=5, log_every=5, eval_every=5, checkpoint_every=100), run_copy
  )
  assert checkpoints.load_generator(run_copy)[2] == 5


def test_12_absurd_numbers_are_refused_before_step_1(tmp_path):
  with pytest.raises(ValueError, match=r'^seed=99999999999999999999999 must be an integer in'):
    train.train_and_evaluate(tiny(seed=99999999999999999999999), tmp_path)
  with pytest.raises(ValueError, match=r'^eval_batch_size=100000000 needs \d+ GB for its 32 px'):
    train.train_and_evaluate(tiny(eval_batch_size=100000000), tmp_path)
  assert not (tmp_path / 'metrics.jsonl').exists()


@pytest.mark.parametrize(
    'body, message',
    [
        ('def get_config(:\n', 'syntax error at line 1: invalid syntax.'),
        (
            'def get_config():\n  raise RuntimeError("boom")\n',
            'get_config() raised RuntimeError: boom.',
        ),
        ('def get_config():\n  return {"model": "gan"}\n', 'get_config() returned a dict, not an'),
        ('x = 1\n', 'defines no get_config();'),
        (
            'import ml_collections\ndef get_config():\n  return ml_collections.ConfigDict()\n',
            'its config lacks batch_size, bottleneck,',
        ),
    ],
)
def test_12_a_broken_config_file_is_one_line(body, message, tmp_path):
  path = tmp_path / 'my_config.py'
  path.write_text(body)
  with pytest.raises(ValueError) as e:
    cli.check_config_file(str(path))
  assert str(e.value).startswith(f'--config={path}') and message in str(e.value), str(e.value)


def test_12_a_broken_config_file_on_the_command_line(tmp_path):
  path = tmp_path / 'my_config.py'
  path.write_text('def get_config(:\n')
  with pytest.raises(SystemExit) as e:  # what --config=FILE goes through, before flags parse
    with cli._one_line_errors(['train']):  # pylint: disable=protected-access
      cli.expand_presets(['train', f'--config={path}'], cli.preset_path('default'))
  assert e.value.code == f'train: --config={path}: syntax error at line 1: invalid syntax.'


def test_12_evaluate_refuses_to_reshape_a_trained_model(run):
  r = run_module('-m', 'ce_jax.evaluate', f'--workdir={run}', '--config.image_size=64', timeout=120)
  assert r.returncode != 0
  assert last_line(r) == (
      f'evaluate: --config.image_size=64: the model in {run} was trained with image_size=32, '
      'and its networks cannot change shape; leave the flag out.'
  )


@pytest.mark.parametrize(
    'edit, message',
    [
        (lambda meta: [meta], "is not an export's description"),
        (lambda meta: {k: v for k, v in meta.items() if k != 'step'}, "is not an export's"),
        (lambda meta: meta | {'dtype': 'int4'}, "is not an export's description"),
        (
            lambda meta: meta | {'config': meta['config'] | {'bottleneck': 32}},
            'do not match the network',
        ),
        (lambda meta: meta | {'config': meta['config'] | {'image_size': 33}}, 'describes no'),
    ],
)
def test_12_an_edited_export_json_is_one_line(exported, edit, message, tmp_path):
  out = tmp_path / 'export'
  shutil.copytree(exported, out)
  meta = json.loads((out / 'export.json').read_text())
  (out / 'export.json').write_text(json.dumps(edit(meta)))
  with pytest.raises(ValueError, match=message):
    checkpoints.load_generator(out)
  (out / 'export.json').write_text('{"config": ')
  with pytest.raises(ValueError, match=r'export.json cannot be read \('):
    checkpoints.load_generator(out)


def test_14_other_optimiser_settings_on_resume_are_named(run_copy):
  with pytest.raises(checkpoints.IncompatibleCheckpoint) as e:
    train.train_and_evaluate(tiny(num_steps=5, optim__grad_clip=1.0), run_copy)
  assert str(e.value) == (
      f'The checkpoint in {run_copy} was trained with optim.grad_clip=0.0 (asked: 1.0), which '
      "changes what the optimiser's state holds; resume with the run's own optim settings, or "
      'use another --workdir.'
  )


def test_14_fewer_steps_than_done_is_refused(run_copy):
  with pytest.raises(ValueError, match=rf'^{run_copy} is at step 4 already, past the 3 steps'):
    train.train_and_evaluate(tiny(num_steps=3), run_copy)


def test_14_evaluate_examples_name_folders_that_exist_everywhere():
  workdirs = [
      line.split('--workdir=')[1].split()[0]
      for line in evaluate.__doc__.splitlines()
      if '--workdir=' in line
  ]
  assert workdirs and set(workdirs) <= {'pretrained', 'RUN'}, workdirs
