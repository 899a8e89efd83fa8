"""Peak memory of `python -m ce_jax.app` while it answers N large photos at once (README figure).

  python scripts/app_memory.py [--requests=6] [--work_slots=2] [--size=6000x4000]

Starts the app on a free port, sends N concurrent POST /api/inpaint of one JPEG photo of that
size (a bundled photo scaled up, with grain, so that it compresses like a camera's) with a
300x200 px hole, waits for every answer and prints the server's resident memory before and at
its peak (the kernel's VmHWM), and the time each answer took.
"""

import base64
import concurrent.futures
import io
import json
import os
from pathlib import Path
import re
import subprocess
import sys
import time
import urllib.request

from absl import app as absl_app, flags
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
flags.DEFINE_integer('requests', 6, 'Concurrent requests.')
flags.DEFINE_integer('work_slots', 2, "The app's --work_slots.")
flags.DEFINE_string('size', '6000x4000', 'The photo, WIDTHxHEIGHT px.')


def memory_mb(pid: int) -> dict:
  status = Path(f'/proc/{pid}/status').read_text()
  return {k: int(re.search(rf'{k}:\s+(\d+) kB', status)[1]) / 1024 for k in ('VmRSS', 'VmHWM')}


def large_photo(width: int, height: int) -> bytes:
  img = Image.open(REPO / 'ce_jax' / 'samples' / 'swans.jpg').convert('RGB')
  img = np.asarray(img.resize((width, height), Image.BICUBIC), np.int16)
  grain = np.random.default_rng(0).normal(0, 6, img.shape).astype(np.int16)
  buf = io.BytesIO()
  Image.fromarray(np.clip(img + grain, 0, 255).astype(np.uint8)).save(buf, 'JPEG', quality=90)
  return buf.getvalue()


def main(argv):
  del argv
  width, height = map(int, flags.FLAGS.size.split('x'))
  photo = large_photo(width, height)
  mask = np.zeros((height, width), np.uint8)
  mask[height // 2 - 100 : height // 2 + 100, width // 2 - 150 : width // 2 + 150] = 255
  buf = io.BytesIO()
  Image.fromarray(mask).save(buf, 'PNG')
  body = json.dumps(
      {
          'photo': 'data:image/jpeg;base64,' + base64.b64encode(photo).decode(),
          'mask': 'data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode(),
      }
  ).encode()
  server = subprocess.Popen(
      [sys.executable, '-m', 'ce_jax.app', '--port=0', f'--work_slots={flags.FLAGS.work_slots}'],
      cwd=REPO,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'),
      stdout=subprocess.PIPE,
      text=True,
  )
  try:
    url = None
    for line in server.stdout:
      if m := re.search(r'Open (http://\S+/)', line):
        url = m[1]
        break
    if url is None:
      sys.exit('app_memory: the app did not start.')
    idle = memory_mb(server.pid)['VmRSS']

    def send(_):
      start = time.perf_counter()
      req = urllib.request.Request(url + 'api/inpaint', data=body)
      with urllib.request.urlopen(req, timeout=600) as r:
        answer = json.loads(r.read())
      return time.perf_counter() - start, answer

    n = flags.FLAGS.requests
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
      answers = list(pool.map(send, range(n)))
    mem = memory_mb(server.pid)
    seconds = ', '.join(f'{s:.1f}' for s, _ in answers)
    a = answers[0][1]
    print(
        f'{n} concurrent {width}x{height} photos ({len(photo) / 2**20:.1f} MB JPEG; answered at '
        f'{a["width"]}x{a["height"]}), --work_slots={flags.FLAGS.work_slots}: RSS {idle:.0f} MB '
        f'idle, peak {mem["VmHWM"]:.0f} MB, {mem["VmRSS"]:.0f} MB after; answers in {seconds} s'
    )
  finally:
    server.terminate()
    server.wait(timeout=60)


if __name__ == '__main__':
  absl_app.run(main)
