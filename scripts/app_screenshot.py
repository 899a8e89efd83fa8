"""Remakes docs/app.png, the README's picture of `python -m ce_jax.app`, in headless Chromium.

  python scripts/app_screenshot.py [--workdir=pretrained] [--output=docs/app.png]

Needs selenium, chromium and chromedriver (see tests/app_test.py). Run it by hand after the
shipped model changes: it uploads a bundled photo, paints a rectangle and a brush stroke, presses
Inpaint and saves the page, quantised to 256 colours to stay small.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from pathlib import Path  # pylint: disable=g-import-not-at-top
import shutil
import threading

from absl import app as absl_app, flags, logging
from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from ce_jax import app, checkpoints

REPO = Path(__file__).resolve().parents[1]
flags.DEFINE_string('workdir', checkpoints.PRETRAINED, 'The model, as for python -m ce_jax.app.')
flags.DEFINE_string('output', str(REPO / 'docs' / 'app.png'), 'Where to save the PNG.')
flags.DEFINE_string('photo', 'swans.jpg', 'A photo of ce_jax/samples.')
# (tool, brush size in screen px, from x, y, to x, y as fractions of the photo)
HOLES = (('rect', 0, 0.7, 0.3, 0.8, 0.45), ('brush', 40, 0.3, 0.5, 0.45, 0.55))
SIZE = (1100, 600)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  server = app.make_server('127.0.0.1', 0, app.load_model(flags.FLAGS.workdir))
  threading.Thread(target=server.serve_forever, daemon=True).start()
  options = webdriver.ChromeOptions()
  options.binary_location = shutil.which('chromium') or shutil.which('google-chrome')
  for arg in ('--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--hide-scrollbars'):
    options.add_argument(arg)
  driver = webdriver.Chrome(
      options=options, service=webdriver.ChromeService(shutil.which('chromedriver'))
  )
  try:
    driver.execute_cdp_cmd(
        'Emulation.setDeviceMetricsOverride',
        {'width': SIZE[0], 'height': SIZE[1], 'deviceScaleFactor': 1, 'mobile': False},
    )
    driver.get(f'http://127.0.0.1:{server.server_address[1]}/')

    def wait_for(state):
      WebDriverWait(driver, 60).until(
          lambda d: d.find_element(By.TAG_NAME, 'body').get_attribute('data-state') == state
      )

    driver.find_element(By.ID, 'file').send_keys(
        str(REPO / 'ce_jax' / 'samples' / flags.FLAGS.photo)
    )
    wait_for('ready')
    canvas = driver.find_element(By.ID, 'mask')
    rect = canvas.rect
    for tool, size, x0, y0, x1, y1 in HOLES:
      driver.find_element(By.CSS_SELECTOR, f'input[value={tool}]').click()
      if size:
        driver.execute_script(
            f'$("size").value = {size}; $("size").dispatchEvent(new Event("input"));'
        )
      a = (round((x0 - 0.5) * rect['width']), round((y0 - 0.5) * rect['height']))
      b = (round((x1 - 0.5) * rect['width']), round((y1 - 0.5) * rect['height']))
      ActionChains(driver).move_to_element_with_offset(canvas, *a).click_and_hold().move_by_offset(
          b[0] - a[0], b[1] - a[1]
      ).release().perform()
    driver.find_element(By.ID, 'go').click()
    wait_for('done')
    path = Path(flags.FLAGS.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    shot = Image.open(path).convert('RGB').quantize(256, dither=Image.Dither.NONE)
    shot.save(path, optimize=True)
    message = driver.find_element(By.ID, 'message').text
    print(f'{path}: {message} ({path.stat().st_size // 1024} KB)')
  finally:
    driver.quit()
    server.shutdown()


if __name__ == '__main__':
  absl_app.run(main)
