"""The inpainting web app: its error answers over HTTP, and a real browser painting a hole."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import base64  # pylint: disable=g-import-not-at-top
import importlib
import io
import json
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import zlib

import cv2
import numpy as np
from PIL import Image
import pytest

from ce_jax import app, baselines, inpaint
from conftest import SAMPLES, run_module

SAMPLE = SAMPLES / 'dog.jpg'
NOT_AN_IMAGE = SAMPLES / 'CREDITS.tsv'


@pytest.fixture(scope='module')
def model():
  return app.load_model()  # the shipped model, as `python -m ce_jax.app` with no flags


@pytest.fixture(scope='module')
def url(model):
  """The app served from a thread of this process, on a free port."""
  server = app.make_server('127.0.0.1', 0, model)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  yield f'http://127.0.0.1:{server.server_address[1]}'
  server.shutdown()
  server.server_close()


def request(url, body=None):
  """(status, answer) of a GET (body None) or a POST of JSON (a dict) or raw bytes."""
  data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
  req = urllib.request.Request(url, data=data, headers={'Content-Type': 'application/json'})
  try:
    with urllib.request.urlopen(req, timeout=120) as r:
      status, raw, kind = r.status, r.read(), r.headers.get_content_type()
  except urllib.error.HTTPError as e:
    status, raw, kind = e.code, e.read(), e.headers.get_content_type()
  return status, json.loads(raw) if kind == 'application/json' else raw.decode()


def png(array) -> str:
  return app.data_url(np.asarray(array, np.uint8))


def decode(data_url) -> np.ndarray:
  return np.asarray(Image.open(io.BytesIO(app.data_url_bytes(data_url, 'image'))))


def ramp(height=48, width=64):
  ys, xs = np.mgrid[:height, :width]
  return np.stack([3 * xs, 4 * ys, xs + ys], -1).astype(np.uint8)


def test_page_and_unknown_routes(url):
  status, html = request(url + '/')
  assert status == 200 and '<canvas id="mask">' in html and 'pretrained' in html
  assert '/*SETTINGS*/null' not in html and 'http' not in html  # it loads nothing from the web
  assert request(url + '/nope')[0] == 404
  status, answer = request(url + '/api/nope', {})
  assert status == 404 and 'No endpoint /api/nope' in answer['error']


@pytest.mark.parametrize(
    'body, status, words',
    [
        (b'not json', 400, 'not JSON'),
        ([1, 2], 400, 'not a JSON object'),
        ({}, 400, 'has no photo'),
        ({'photo': 'data:image/png;base64,@@@'}, 400, 'not base64'),
        ({'photo': 'data:text/plain;base64,aGVsbG8='}, 400, 'photo is not an image'),
        ({'photo': png(ramp())}, 400, 'has no mask'),
        ({'photo': png(ramp()), 'mask': 'aGVsbG8='}, 400, 'mask is not an image'),
        ({'photo': png(ramp()), 'mask': png(np.zeros((48, 64)))}, 400, 'mask is empty'),
        ({'photo': png(ramp()), 'mask': png(np.full((48, 64), 255))}, 400, 'Use a smaller hole'),
    ],
)
def test_bad_inpaint_requests_get_a_one_line_message(url, body, status, words):
  got, answer = request(url + '/api/inpaint', body)
  assert got == status and words in answer['error'], answer
  assert '\n' not in answer['error'] and 'Traceback' not in answer['error']


def test_too_large_uploads_are_refused(url, monkeypatch):
  monkeypatch.setattr(app, 'MAX_BODY_BYTES', 1000)
  noise = np.random.default_rng(0).integers(0, 256, (40, 40, 3))
  status, answer = request(url + '/api/photo', {'photo': png(noise)})
  assert status == 413 and 'too large' in answer['error']


def test_huge_photos_are_downscaled_and_giant_ones_refused(url):
  status, answer = request(url + '/api/photo', {'photo': png(np.zeros((6, app.MAX_SIDE + 4, 3)))})
  assert status == 200 and (answer['width'], answer['height']) == (app.MAX_SIDE, 6)
  assert f'Downscaled from {app.MAX_SIDE + 4}x6 to {app.MAX_SIDE}x6 px' in answer['note']
  assert decode(answer['preview']).shape == (6, app.MAX_SIDE, 3)
  exif = Image.Exif()
  exif[0x0112] = 6  # a camera held upright: turn the stored landscape by 90 degrees
  upright = io.BytesIO()
  Image.new('RGB', (2 * app.MAX_SIDE, 40)).save(upright, 'JPEG', exif=exif)
  photo, note = app.decode_photo(upright.getvalue())
  assert photo.shape == (app.MAX_SIDE, 20, 3) and f'from 40x{2 * app.MAX_SIDE} to 20x' in note
  for w, h, words in (
      (9000, 9000, '9000x9000 px (81 megapixels); the limit is 80'),
      (20000, 10000, 'far more than 80 megapixels'),
  ):
    with pytest.raises(ValueError, match=re.escape(words)):  # refused before decoding
      app.decode_photo(png_header(w, h))


def png_header(width, height) -> bytes:
  """The start of a PNG of that size: enough for Pillow to open it, not to decode it."""

  def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

  header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
  return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IEND', b'')


def test_inpaint_answers_what_the_command_line_computes(url, model):
  """The same inpaint_photo and Telea as `python -m ce_jax.inpaint`, on two holes at once."""
  photo = inpaint.read_photo(SAMPLE)
  h, w = photo.shape[:2]
  hole = inpaint.hole_from_spec('30,40,20,16', h, w, model.config) | inpaint.hole_from_spec(
      '120,80,24,20', h, w, model.config
  )
  sent = 'data:image/jpeg;base64,' + base64.b64encode(SAMPLE.read_bytes()).decode()
  status, answer = request(url + '/api/inpaint', {'photo': sent, 'mask': png(hole * 255)})
  assert status == 200, answer
  assert (answer['width'], answer['height'], answer['holes'], answer['note']) == (w, h, 2, '')
  expected = inpaint.inpaint_photo(
      photo, hole, model.config, model.variables, model.predict, model.blend
  )
  np.testing.assert_array_equal(decode(answer['result']), expected)
  np.testing.assert_array_equal(decode(answer['telea']), baselines.telea_photo(photo, hole))


def run_app(*flags):
  return run_module('-m', 'ce_jax.app', *flags, timeout=120)


def test_command_line_errors_are_one_line(tmp_path):
  with socket.socket() as busy:
    busy.bind(('127.0.0.1', 0))
    busy.listen()
    in_use = run_app(f'--port={busy.getsockname()[1]}')
  no_model = run_app('--port=0', f'--workdir={tmp_path}')
  for r, words in ((in_use, 'the port is in use'), (no_model, 'No checkpoint in')):
    assert r.returncode == 1 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1].startswith('app: ') and words in r.stderr


# The browser test: headless Chromium through Selenium.


def _may_install() -> bool:
  """Installing is for throwaway machines: root, and CI=true or CE_JAX_INSTALL_BROWSER=1."""
  asked = (
      os.environ.get('CI', '').lower() == 'true' or os.environ.get('CE_JAX_INSTALL_BROWSER') == '1'
  )
  return asked and hasattr(os, 'geteuid') and os.geteuid() == 0


def _install(*command) -> bool:
  r = subprocess.run(
      command,
      capture_output=True,
      text=True,
      timeout=900,
      env=dict(os.environ, DEBIAN_FRONTEND='noninteractive'),
  )
  return r.returncode == 0


def _browser_paths():
  browser = next(
      filter(None, map(shutil.which, ('chromium', 'chromium-browser', 'google-chrome'))), None
  )
  return browser, shutil.which('chromedriver')


def _selenium_or_skip():
  """selenium's webdriver package, pip-installed when allowed; else the test is skipped."""
  try:
    return importlib.import_module('selenium.webdriver')
  except ImportError:
    if not (
        _may_install()
        and _install(sys.executable, '-m', 'pip', 'install', '-q', 'selenium>=4.20,<5')
    ):
      pytest.skip(
          'selenium is not installed: pip install "selenium>=4.20,<5" (or set '
          'CE_JAX_INSTALL_BROWSER=1 as root to let this test install it)'
      )
    importlib.invalidate_caches()
    return importlib.import_module('selenium.webdriver')


@pytest.fixture(scope='module')
def chrome():
  """Headless Chromium; apt-installs chromium and chromium-driver when allowed, else skips."""
  webdriver = _selenium_or_skip()
  browser, driver = _browser_paths()
  if not (browser and driver) and _may_install() and shutil.which('apt-get'):
    _install('apt-get', 'update', '-qq')
    _install('apt-get', 'install', '-y', '-qq', 'chromium', 'chromium-driver')
    browser, driver = _browser_paths()
  if not (browser and driver):
    pytest.skip(
        f'no {"chromium" if not browser else "chromedriver"} on PATH: apt-get install '
        'chromium chromium-driver (or set CE_JAX_INSTALL_BROWSER=1 as root to let this '
        'test install them)'
    )
  options = webdriver.ChromeOptions()
  options.binary_location = browser
  for arg in (
      '--headless=new',
      '--no-sandbox',
      '--disable-dev-shm-usage',
      '--disable-gpu',
      '--window-size=1100,800',
  ):
    options.add_argument(arg)
  driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(driver))
  yield driver
  driver.quit()


def test_paint_a_hole_in_the_browser(url, model, chrome):
  # pylint: disable=g-import-not-at-top  # selenium is there once the chrome fixture is
  from selenium.webdriver.common.action_chains import ActionChains
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import WebDriverWait

  def wait_for(state, timeout=60):
    WebDriverWait(chrome, timeout).until(
        lambda d: d.find_element(By.TAG_NAME, 'body').get_attribute('data-state') == state
    )
    return chrome.find_element(By.ID, 'message').text

  chrome.get(url)
  upload = chrome.find_element(By.ID, 'file')
  upload.send_keys(str(NOT_AN_IMAGE))
  assert 'photo is not an image' in wait_for('error')
  upload.send_keys(str(SAMPLE))
  wait_for('ready')
  chrome.find_element(By.ID, 'go').click()
  assert 'mask is empty' in wait_for('error')

  # One brush stroke across the middle of the photo, from 40 % to 60 % of its width.
  photo = inpaint.read_photo(SAMPLE)
  h, w = photo.shape[:2]
  canvas = chrome.find_element(By.ID, 'mask')
  scale = canvas.rect['width'] / w  # screen px per photo px
  start = (round(-0.1 * w * scale), 0)  # from the canvas's centre
  ActionChains(chrome).move_to_element_with_offset(canvas, *start).click_and_hold().move_by_offset(
      round(0.2 * w * scale), 0
  ).release().perform()
  hole = app.decode_mask(
      app.data_url_bytes(chrome.execute_script('return maskDataURL()'), 'mask'), h, w
  )  # the holes exactly as the page sends them
  ys, xs = np.nonzero(hole)
  radius = int(chrome.find_element(By.ID, 'size').get_attribute('value')) / scale / 2
  assert hole[h // 2, w // 2] and abs(ys.mean() - h / 2) < 2 and np.ptp(ys) < 2 * radius + 3
  assert abs(xs.min() - (0.4 * w - radius)) < 3 and abs(xs.max() - (0.6 * w + radius)) < 3

  chrome.find_element(By.ID, 'go').click()
  assert 'Filled 1 hole' in wait_for('done')
  result = decode(chrome.find_element(By.ID, 'result').get_attribute('src'))
  assert result.shape == photo.shape
  changed = np.any(result != photo, axis=-1)
  assert changed[hole].mean() > 0.5
  far = cv2.distanceTransform((~hole).astype(np.uint8), cv2.DIST_L2, 5) > model.blend + 2
  np.testing.assert_array_equal(result[far], photo[far])
  assert decode(chrome.find_element(By.ID, 'telea').get_attribute('src')).shape == photo.shape
  download = chrome.find_element(By.ID, 'download')
  assert download.is_displayed() and download.get_attribute('href').startswith('blob:')
  assert download.get_attribute('download') == 'dog_filled.png'
