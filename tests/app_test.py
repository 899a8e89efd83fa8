"""The inpainting web app: its error answers over HTTP, and a real browser painting a hole."""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import base64  # pylint: disable=g-import-not-at-top
import importlib
import io
import json
from pathlib import Path
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
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


def fetch_image(url, path) -> np.ndarray:
  """The image an answer names (GET path), decoded."""
  with urllib.request.urlopen(url + path, timeout=60) as r:
    assert r.headers.get_content_type() in ('image/png', 'image/jpeg')
    return np.asarray(Image.open(io.BytesIO(r.read())))


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
  assert fetch_image(url, answer['preview']).shape == (6, app.MAX_SIDE, 3)
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
  np.testing.assert_array_equal(fetch_image(url, answer['result']), expected)
  np.testing.assert_array_equal(
      fetch_image(url, answer['telea']), baselines.telea_photo(photo, hole)
  )


def test_large_photos_get_a_small_answer_and_images_are_kept_a_while(url, model, monkeypatch):
  """The answer names its images (fetched as PNGs), so it stays small for any photo size; the
  server keeps the images of the latest answers only."""
  ys, xs = np.mgrid[:1200, :1800]
  photo = np.stack([xs % 251, ys % 241, (xs + ys) % 239], -1).astype(np.uint8)
  hole = np.zeros(photo.shape[:2], np.uint8)
  hole[500:560, 800:900] = 255
  body = json.dumps({'photo': png(photo), 'mask': png(hole)}).encode()
  req = urllib.request.Request(url + '/api/inpaint', data=body)
  with urllib.request.urlopen(req, timeout=120) as r:
    raw = r.read()
  assert len(raw) < 1000, len(raw)  # was the two PNGs in base64: megabytes
  answer = json.loads(raw)
  assert fetch_image(url, answer['result']).shape == photo.shape
  kept = app.Images(count=2, max_bytes=10)
  first, second, third = (kept.put(bytes(8), 'image/png') for _ in range(3))
  assert kept.get(first.rsplit('/', 1)[1]) is None  # over the count
  assert kept.get(second.rsplit('/', 1)[1]) is None  # over the bytes: the newest alone
  assert kept.get(third.rsplit('/', 1)[1]) == (bytes(8), 'image/png')
  status, text = request(url + '/api/image/no-such-token')
  assert status == 404 and 'no longer kept' in text


def test_example_photos_are_served_and_nothing_else(url):
  status, html = request(url + '/')
  for name in app.EXAMPLES:
    assert f'"{name}"' in html
    with urllib.request.urlopen(f'{url}/samples/{name}', timeout=60) as r:
      assert r.read() == (SAMPLES / name).read_bytes()
  for path in ('/samples/CREDITS.tsv', '/samples/../app.py', '/samples/', '/api/image/'):
    assert request(url + path)[0] == 404, path


def test_concurrent_requests_wait_for_a_work_slot(url, model, monkeypatch):
  """At most WORK_SLOTS requests are read and decoded at once: memory stays bounded."""
  running, most = [0], [0]
  lock = threading.Lock()

  def slow_route(model, request):
    del model, request
    with lock:
      running[0] += 1
      most[0] = max(most[0], running[0])
    time.sleep(0.3)
    with lock:
      running[0] -= 1
    return {'ok': True}

  monkeypatch.setitem(app.ROUTES, '/api/photo', slow_route)
  threads = [
      threading.Thread(target=request, args=(url + '/api/photo', {'photo': ''})) for _ in range(6)
  ]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=60)
  assert most[0] == app.WORK_SLOTS == 2


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


# A folder to keep the browser test's screenshots in (default: the test's tmp_path).
SCREENSHOTS = os.environ.get('CE_JAX_SCREENSHOTS')


def test_paint_undo_compare_and_continue_in_the_browser(url, model, chrome, tmp_path):
  # pylint: disable=g-import-not-at-top  # selenium is there once the chrome fixture is
  from selenium.webdriver.common.action_chains import ActionChains
  from selenium.common.exceptions import TimeoutException
  from selenium.webdriver.common.by import By
  from selenium.webdriver.common.keys import Keys
  from selenium.webdriver.support.ui import WebDriverWait

  def find(element_id):
    return chrome.find_element(By.ID, element_id)

  def js(script, *args):
    return chrome.execute_script(script, *args)

  def wait_for(state, timeout=60):
    try:
      WebDriverWait(chrome, timeout).until(
          lambda d: d.find_element(By.TAG_NAME, 'body').get_attribute('data-state') == state
      )
    except TimeoutException:
      now = js('return document.body.dataset.state')
      raise AssertionError(f'{now!r}, not {state!r}: {find("message").text}') from None
    return find('message').text

  def shot(name):
    folder = Path(SCREENSHOTS or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    chrome.save_screenshot(str(folder / f'app_{name}.png'))

  def shown(element_id) -> np.ndarray:
    """The pixels an <img> of the page shows (its src is a blob: URL)."""
    data = chrome.execute_async_script(
        """const done = arguments[arguments.length - 1];
        fetch(document.getElementById(arguments[0]).src).then(r => r.blob()).then(b => {
          const reader = new FileReader();
          reader.onload = () => done(reader.result);
          reader.readAsDataURL(b);
        });""",
        element_id,
    )
    return decode(data)

  def holes():
    """The holes exactly as the page sends them (all False when none is painted)."""
    if not js('return hasHoles()'):
      return np.zeros((h, w), bool)
    return app.decode_mask(app.data_url_bytes(js('return maskDataURL()'), 'mask'), h, w)

  def drag(tool, start, end):
    """A stroke or rectangle from `start` to `end`, fractions of the photo from its centre."""
    js(f'document.querySelector("input[name=tool][value={tool}]").click()')
    canvas = find('mask')
    cw, ch = canvas.rect['width'], canvas.rect['height']
    a = (round(start[0] * cw), round(start[1] * ch))
    ActionChains(chrome).move_to_element_with_offset(canvas, *a).click_and_hold().move_by_offset(
        round((end[0] - start[0]) * cw), round((end[1] - start[1]) * ch)
    ).release().perform()

  def keys(*combo):
    chain = ActionChains(chrome)
    for k in combo[:-1]:
      chain = chain.key_down(k)
    chain = chain.send_keys(combo[-1])
    for k in reversed(combo[:-1]):
      chain = chain.key_up(k)
    chain.perform()

  def settled():  # undo / redo run after the history's pending work
    WebDriverWait(chrome, 10).until(lambda d: 'done' in js('return queue.then(() => "done")'))

  chrome.get(url)
  upload = find('file')
  upload.send_keys(str(NOT_AN_IMAGE))
  assert 'photo is not an image' in wait_for('error')
  upload.send_keys(str(SAMPLE))
  wait_for('ready')
  find('go').click()
  assert 'Nothing to fill yet' in wait_for('error')

  # One brush stroke across the middle of the photo, from 40 % to 60 % of its width.
  photo = inpaint.read_photo(SAMPLE)
  h, w = photo.shape[:2]
  original_src = find('photo').get_attribute('src')
  drag('brush', (-0.1, 0), (0.1, 0))
  stroke = holes()
  ys, xs = np.nonzero(stroke)
  scale = find('mask').rect['width'] / w  # screen px per photo px
  radius = int(find('size').get_attribute('value')) / scale / 2
  assert stroke[h // 2, w // 2] and abs(ys.mean() - h / 2) < 2 and np.ptp(ys) < 2 * radius + 3
  assert abs(xs.min() - (0.4 * w - radius)) < 3 and abs(xs.max() - (0.6 * w + radius)) < 3

  # Undo and redo, by keys and by buttons.
  settled()
  keys(Keys.CONTROL, 'z')
  settled()
  assert not holes().any() and find('undo').get_attribute('disabled')
  keys(Keys.CONTROL, Keys.SHIFT, 'z')
  settled()
  np.testing.assert_array_equal(holes(), stroke)
  drag('rect', (0.2, -0.3), (0.3, -0.2))
  with_rect = holes()
  assert with_rect.sum() > stroke.sum()
  settled()
  find('undo').click()
  settled()
  np.testing.assert_array_equal(holes(), stroke)
  find('redo').click()
  settled()
  np.testing.assert_array_equal(holes(), with_rect)
  find('undo').click()
  settled()

  find('go').click()
  assert find('busy').is_displayed()  # the answer takes a moment: the overlay shows it
  assert 'Filled 1 hole' in wait_for('done')
  result = shown('result')
  assert result.shape == photo.shape
  changed = np.any(result != photo, axis=-1)
  assert changed[stroke].mean() > 0.5
  far = cv2.distanceTransform((~stroke).astype(np.uint8), cv2.DIST_L2, 5) > model.blend + 2
  np.testing.assert_array_equal(result[far], photo[far])
  assert shown('telea').shape == photo.shape
  download = find('download')
  assert download.is_displayed() and download.get_attribute('href').startswith('blob:')
  assert download.get_attribute('download') == 'dog_filled.png'

  # Before / after at the editor's size: the result covers the editor right of the slider.
  editor, after = find('editor').rect, find('result').rect
  assert (after['width'], after['height']) == (editor['width'], editor['height'])
  inner = js('return [window.innerWidth, window.innerHeight]')  # the editor fills the window
  assert editor['width'] > 0.9 * (inner[0] - 40) or editor['height'] > 0.5 * inner[1], editor
  assert js('return $("after").style.clipPath') == 'inset(0px 0px 0px 50%)'
  shot('compare')
  js('$("compare").value = 20; $("compare").dispatchEvent(new Event("input"))')
  assert js('return $("after").style.clipPath') == 'inset(0px 0px 0px 20%)'
  js('document.querySelector("input[name=view][value=telea]").click()')
  assert find('telea').is_displayed() and not find('result').is_displayed()
  shot('compare_telea')

  # Continue on the result: it becomes the photo; a new hole is filled on it; undo goes back.
  first_result_src = find('result').get_attribute('src')
  find('continue').click()
  assert 'Editing the result' in wait_for('ready')
  assert find('photo').get_attribute('src') == first_result_src and not holes().any()
  assert not find('after').is_displayed()
  drag('rect', (-0.3, -0.25), (-0.2, -0.1))
  second_hole = holes()
  find('go').click()
  wait_for('done')
  second = shown('result')
  far = cv2.distanceTransform((~second_hole).astype(np.uint8), cv2.DIST_L2, 5) > model.blend + 2
  np.testing.assert_array_equal(second[far], result[far])  # the first fill is kept
  assert np.any(second != result, axis=-1)[second_hole].mean() > 0.5
  settled()
  keys(Keys.CONTROL, 'z')
  settled()
  assert not holes().any() and find('photo').get_attribute('src') == first_result_src
  keys(Keys.CONTROL, 'z')
  settled()
  assert find('photo').get_attribute('src') == original_src
  np.testing.assert_array_equal(holes(), stroke)

  # An error clears the old result: a hole larger than the model can fill.
  find('go').click()
  wait_for('done')
  drag('rect', (-0.49, -0.49), (0.49, 0.49))
  find('go').click()
  assert 'Use a smaller hole' in wait_for('error')
  assert not find('after').is_displayed() and not find('result').get_attribute('src')
  assert not find('download').is_displayed()

  # An example photo, one click away; and the page on a phone.
  chrome.execute_cdp_cmd(
      'Emulation.setDeviceMetricsOverride',
      {'width': 390, 'height': 844, 'deviceScaleFactor': 2, 'mobile': True},
  )
  try:
    chrome.find_element(By.CSS_SELECTOR, '[data-example="swans.jpg"]').click()
    assert 'swans.jpg: 256x144 px' in wait_for('ready')
    width = find('editor').rect['width']
    assert width >= 0.9 * (390 - 16), width
    assert js('return document.documentElement.scrollWidth') <= 390  # nothing off the side
    drag('brush', (-0.05, 0.1), (0.05, 0.1))
    find('go').click()
    wait_for('done')
    shot('phone')
  finally:
    chrome.execute_cdp_cmd('Emulation.clearDeviceMetricsOverride', {})
