"""Stopping a run: a signal saves and exits within a step; a second one exits at once."""

import os
import signal
import subprocess
import sys
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np

from ce_jax import checkpoints, steps, train
from conftest import REPO, restore_state, tiny


def test_a_signal_saves_and_stops_within_one_step(tmp_path, monkeypatch, capsys):
  """Steps made slow on the device (matrix products): the host must not dispatch a step before
  the one before it has finished, and SIGTERM must save the step running when it came (or the
  next) and return, not the many steps dispatched ahead."""
  gan_step = steps.gan_step

  def slow_step(state, batch, *, config):
    state, metrics = gan_step(state, batch, config=config)
    w = jnp.full((1200, 1200), 1 / 1200, jnp.float32)
    m = jax.lax.fori_loop(0, 4, lambda i, m: jnp.tanh(m @ w), jnp.ones((1200, 1200)))
    return state, {**metrics, 'g_loss': metrics['g_loss'] + 0 * m[0, 0]}

  make_train_step = steps.make_train_step
  calls = []  # (time, whether the previous step had finished) at each dispatch

  def watched_train_step(config, mesh):
    step = make_train_step(config, mesh)
    previous = []

    def watched(state, batch):
      ready = all(x.is_ready() for x in jax.tree.leaves(previous))
      calls.append((time.perf_counter(), ready))
      state, metrics = step(state, batch)
      previous[:] = [metrics]
      return state, metrics

    return watched

  monkeypatch.setattr(steps, 'gan_step', slow_step)
  monkeypatch.setattr(steps, 'make_train_step', watched_train_step)
  save, saves = checkpoints.save, []

  def timed_save(*args, **kwargs):
    saves.append(time.perf_counter())
    return save(*args, **kwargs)

  monkeypatch.setattr(checkpoints, 'save', timed_save)
  signalled = {}

  def send_during_the_fourth_step():
    while len(calls) < 4:
      time.sleep(0.002)
    step_s = calls[3][0] - calls[2][0]
    time.sleep(step_s / 2)
    signalled.update(time=time.perf_counter(), dispatched=len(calls), step_s=step_s)
    os.kill(os.getpid(), signal.SIGTERM)

  threading.Thread(target=send_during_the_fourth_step, daemon=True).start()
  config = tiny(num_steps=40, log_every=1000, eval_every=1000, checkpoint_every=1000)
  train.train_and_evaluate(config, tmp_path)
  returned = time.perf_counter() - signalled['time']

  mngr = checkpoints.manager(tmp_path, read_only=True)
  saved = mngr.latest_step()
  mngr.close()
  assert all(ready for _, ready in calls), 'a step was dispatched before the previous one ended'
  assert saved in (signalled['dispatched'], signalled['dispatched'] + 1), (saved, signalled)
  step_s, delay = signalled['step_s'], saves[-1] - signalled['time']
  err = capsys.readouterr().err
  with capsys.disabled():
    print(
        f'\nSIGTERM to the save: {delay:.2f} s, to the return: {returned:.2f} s '
        f'(a step: {step_s:.2f} s)'
    )
  assert len(saves) == 1 and delay < 3 * step_s + 1  # the rest of a step, one more at most
  assert 'SIGTERM received: stopping after this step' in err
  assert f'SIGTERM received: saved step {saved}' in err


def test_a_second_ctrl_c_exits_at_once_and_keeps_the_last_checkpoint(tmp_path):
  proc = subprocess.Popen(
      [
          sys.executable,
          '-m',
          'ce_jax.train',
          '--config=tiny',
          '--num_steps=100000',
          '--log_every=100000',
          '--eval_every=100000',
          '--checkpoint_every=20',
          f'--workdir={tmp_path}',
      ],
      cwd=REPO,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )
  deadline = time.time() + 300  # a loaded 2-core machine starts slowly
  while time.time() < deadline and proc.poll() is None:
    if len(list((tmp_path / 'checkpoints').glob('[0-9]*'))) >= 2:
      break
    time.sleep(0.1)
  proc.send_signal(signal.SIGINT)
  time.sleep(0.05)
  proc.send_signal(signal.SIGINT)
  sent = time.perf_counter()
  _, err = proc.communicate(timeout=60)
  seconds = time.perf_counter() - sent
  print(f'exited {seconds:.2f} s after the second Ctrl-C')
  assert proc.returncode == 128 + signal.SIGINT, err[-3000:]
  assert 'SIGINT received again: exiting now, without saving.' in err
  assert 'Traceback' not in err and seconds < 2

  mngr = checkpoints.manager(tmp_path, read_only=True)
  last = mngr.latest_step()
  mngr.close()
  assert last is not None and last >= 20
  state = restore_state(tmp_path, tiny(), last)
  assert int(state.step) == last and checkpoints.is_finite(state)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.gen.params))
