"""A local web page to inpaint your own photo: upload it, paint the holes, compare, download.

  python -m ce_jax.app [--workdir=pretrained] [--port=8080] [--host=127.0.0.1]

then open http://127.0.0.1:8080/. The page (ce_jax/app.html) paints the holes with a brush or
rectangles on a <canvas>, and shows the model's fill beside the original and OpenCV's Telea fill.
The photo is filled by the same `inpaint.inpaint_photo` as `python -m ce_jax.inpaint`, by a model
loaded once at startup; several separate holes are filled one after another.

The server is the standard library's `http.server`, not Gradio or Flask: one page and two JSON
endpoints need nothing more, so the app adds no dependency and no install step, loads nothing
from the network (the page is vanilla JavaScript, no CDN), and works offline.

  GET  /                 the page
  GET  /samples/NAME     a bundled sample photo (ce_jax/samples), the page's examples
  GET  /api/image/TOKEN  an image an answer below names (kept for the last IMAGES_KEPT answers)
  POST /api/photo        {"photo": data URL} -> {"width", "height", "note", "preview": URL}
  POST /api/inpaint      {"photo": data URL, "mask": data URL (white = hole)}
                         -> {"result", "telea": PNG URLs, "width", "height", "holes",
                             "seconds", "note"}

Answers are small JSON; the images they name are fetched as images (a 4000x2667 photo's two
fills were 23 MB of base64 JSON). Errors answer {"error": one line} with a 4xx status, which the
page shows. Photos whose longest side exceeds MAX_SIDE px are downscaled to it (the page says so,
and the result has that size); photos of more than MAX_PIXELS pixels or requests of more than
MAX_BODY_BYTES are refused. At most WORK_SLOTS requests are read, decoded and answered at a time
(the others wait their turn), which bounds the memory that concurrent large photos take. It
listens on 127.0.0.1 only unless --host says otherwise.
"""

import base64
import binascii
import collections
import ctypes
import dataclasses
import errno
import functools
import http.server
import io
import json
from pathlib import Path
import secrets
import sys
import threading
import time
import urllib.parse

from absl import app, flags, logging
import cv2
import numpy as np
from PIL import ExifTags, Image, ImageOps

from ce_jax import baselines, checkpoints, images, inpaint, masks, models, platform, steps

MAX_SIDE = 4096  # px on a photo's longest side; larger ones are downscaled to it
MAX_PIXELS = 80_000_000  # larger photos (and masks) are refused before they are decoded
MAX_PHOTO_MB = 50  # the page refuses larger files before sending them
MAX_BODY_BYTES = 2 * MAX_PHOTO_MB * 2**20  # a photo and its mask, base64-encoded
# Requests read, decoded and answered at a time: a large photo takes a few hundred MB on its way
# (request body, base64, pixels, fills, PNGs); more requests wait for a slot.
WORK_SLOTS = 2
IMAGES_KEPT = 24  # images of the latest answers the page may still fetch (previews, fills)
IMAGES_KEPT_BYTES = 256 * 2**20
PAGE = Path(__file__).resolve().parent / 'app.html'
SAMPLES = Path(__file__).resolve().parent / 'samples'
# The page's examples: bundled photos, one click away.
EXAMPLES = (
    'swans.jpg',
    'mont_saint_michel.jpg',
    'kitten.jpg',
    'tower_bridge_night.jpg',
    'coral_reef.jpg',
    'neuschwanstein_castle.jpg',
    'giraffes.jpg',
    'forest_stream.jpg',
)


def _malloc_trim():
  """glibc's malloc_trim, or None: gives the heap's free memory back to the system."""
  try:
    return ctypes.CDLL('libc.so.6').malloc_trim
  except (OSError, AttributeError):  # not glibc
    return None


MALLOC_TRIM = _malloc_trim()


class HttpError(Exception):
  """An expected error with its HTTP status; its message is shown on the page."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status = status


class Images:
  """The images of the latest answers, by token, for GET /api/image/TOKEN: the newest
  IMAGES_KEPT, within IMAGES_KEPT_BYTES."""

  def __init__(self, count: int = IMAGES_KEPT, max_bytes: int = IMAGES_KEPT_BYTES):
    self.count, self.max_bytes = count, max_bytes
    self._items = collections.OrderedDict()
    self._lock = threading.Lock()

  def put(self, data: bytes, content_type: str) -> str:
    """Keeps an image; returns the URL the page fetches it from."""
    token = secrets.token_urlsafe(12)
    with self._lock:
      self._items[token] = (data, content_type)
      while len(self._items) > self.count or (
          len(self._items) > 1 and sum(len(d) for d, _ in self._items.values()) > self.max_bytes
      ):
        self._items.popitem(last=False)
    return f'/api/image/{token}'

  def get(self, token: str):
    with self._lock:
      return self._items.get(token)


@dataclasses.dataclass
class Model:
  """A generator loaded once, with its jitted predict, shared by every request."""

  workdir: str
  config: object
  variables: object
  step: int
  predict: object
  blend: int = 3
  lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
  images: Images = dataclasses.field(default_factory=Images)

  def describe(self) -> str:
    c = self.config
    return (
        f'{self.workdir} (step {self.step}; {models.describe(c)}: sees {c.image_size} px '
        f'around a {c.hole_size} px hole)'
    )


def load_model(workdir=checkpoints.PRETRAINED, step='latest', blend: int = 3) -> Model:
  """Restores the generator and compiles its predict (on a blank photo) before any request."""
  config, variables, step = checkpoints.load_generator(workdir, step)
  model = Model(str(workdir), config, variables, step, steps.make_predict(config), blend)
  s = config.image_size
  hole = np.zeros((s, s), bool)
  hole[s // 2 - 2 : s // 2 + 2, s // 2 - 2 : s // 2 + 2] = True
  inpaint.inpaint_photo(
      np.zeros((s, s, 3), np.uint8), hole, config, variables, model.predict, blend
  )
  return model


def data_url_bytes(value, what: str) -> bytes:
  """The bytes of a 'data:...;base64,...' URL (or of bare base64)."""
  if not isinstance(value, str) or not value:
    raise ValueError(f'The request has no {what}.')
  try:
    return base64.b64decode(
        value.partition(',')[2] if value.startswith('data:') else value, validate=True
    )
  except (binascii.Error, ValueError):
    raise ValueError(f'The {what} is not base64 data.') from None


def encode(image: np.ndarray, fmt: str = 'PNG') -> bytes:
  """A uint8 image as PNG (lossless, for results) or JPEG (for previews)."""
  buf = io.BytesIO()
  Image.fromarray(image).save(
      buf, fmt, **({'compress_level': 1} if fmt == 'PNG' else {'quality': 92})
  )
  return buf.getvalue()


def data_url(image: np.ndarray, fmt: str = 'PNG') -> str:
  """A uint8 image as a data URL."""
  return f'data:image/{fmt.lower()};base64,{base64.b64encode(encode(image, fmt)).decode()}'


def open_image(data: bytes, what: str, max_pixels: int) -> Image.Image:
  """Opens (lazily) an image from bytes; refuses non-images and too many pixels in one line."""
  try:
    img = Image.open(io.BytesIO(data))
  except Image.DecompressionBombError:  # more than twice Pillow's limit, itself above ours
    raise ValueError(
        f'The {what} has far more than {max_pixels / 1e6:.0f} megapixels, the limit.'
    ) from None
  except Exception:  # pylint: disable=broad-except  # Pillow raises many kinds on junk
    raise ValueError(
        f'The {what} is not an image that can be read (jpg, png, webp, bmp, ...).'
    ) from None
  w, h = img.size
  if w * h > max_pixels:
    raise ValueError(
        f'The {what} is {w}x{h} px ({w * h / 1e6:.0f} megapixels); the limit is '
        f'{max_pixels / 1e6:.0f} megapixels.'
    )
  return img


def decode_photo(
    data: bytes, max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS
) -> tuple[np.ndarray, str]:
  """(H, W, 3) uint8 photo, turned upright by its EXIF orientation and downscaled to at most
  `max_side` px on its longest side, and a note saying whether it was downscaled."""
  img = open_image(data, 'photo', max_pixels)
  w, h = img.size
  try:
    if img.getexif().get(ExifTags.Base.Orientation, 1) in (5, 6, 7, 8):  # turned by 90 degrees
      w, h = h, w
    if max(w, h) > max_side:
      img.draft('RGB', (max_side, max_side))  # JPEG: decode at a reduced scale, much faster
    img = ImageOps.exif_transpose(img)
    transparent = images.has_transparency(img)
    img = images.to_rgb(img)  # as training reads photos: 16-bit scaled, transparency on white
  except Exception as e:  # pylint: disable=broad-except  # truncated or corrupt files
    raise ValueError(f'The photo cannot be decoded: {e}'.replace('\n', ' ')) from None
  note = f'The photo: {images.TRANSPARENCY_NOTE}.' if transparent else ''
  if max(w, h) > max_side:
    scale = max_side / max(w, h)
    img = img.resize(
        (max(1, round(w * scale)), max(1, round(h * scale))), Image.LANCZOS, reducing_gap=3.0
    )
    note = (
        f'Downscaled from {w}x{h} to {img.width}x{img.height} px (photos are limited to '
        f'{max_side} px on their longest side). {note}'
    ).strip()
  return np.asarray(img), note


def decode_mask(data: bytes, height: int, width: int) -> np.ndarray:
  """(H, W) bool hole from a mask image (white = hole, as `--mask=hole.png`), resized to the
  photo."""
  img = open_image(data, 'mask', MAX_PIXELS)
  try:
    img.load()
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f'The mask cannot be decoded: {e}'.replace('\n', ' ')) from None
  return masks.hole_from_image(img, height, width)


def photo_info(model: Model, request: dict) -> dict:
  """POST /api/photo: checks and normalises an upload, for the page to paint on."""
  photo, note = decode_photo(data_url_bytes(request.get('photo'), 'photo'))
  height, width = photo.shape[:2]
  preview = model.images.put(encode(photo, 'JPEG'), 'image/jpeg')
  return {'width': width, 'height': height, 'note': note, 'preview': preview}


def inpaint_request(model: Model, request: dict) -> dict:
  """POST /api/inpaint: the model's fill and Telea's of every hole of the mask."""
  photo, note = decode_photo(data_url_bytes(request.get('photo'), 'photo'))
  hole = decode_mask(data_url_bytes(request.get('mask'), 'mask'), *photo.shape[:2])
  start = time.perf_counter()
  with model.lock:  # one photo at a time: bounds memory, and the model is fast enough
    result = inpaint.inpaint_photo(
        photo, hole, model.config, model.variables, model.predict, model.blend
    )
  seconds = time.perf_counter() - start
  height, width = photo.shape[:2]
  return {
      'result': model.images.put(encode(result), 'image/png'),
      'telea': model.images.put(encode(baselines.telea_photo(photo, hole)), 'image/png'),
      'width': width,
      'height': height,
      'seconds': seconds,
      'note': note,
      'holes': cv2.connectedComponents(hole.astype(np.uint8), connectivity=8)[0] - 1,
  }


ROUTES = {'/api/photo': photo_info, '/api/inpaint': inpaint_request}


@functools.cache
def page_template() -> str:
  return PAGE.read_text(encoding='utf-8')


def page(model: Model) -> bytes:
  """The HTML page, with the model and the limits the page checks and shows."""
  settings = {
      'model': model.describe(),
      'maxSide': MAX_SIDE,
      'maxPhotoMB': MAX_PHOTO_MB,
      'holeFraction': (model.config.hole_size - 2 * model.config.mask.overlap)
      / model.config.image_size,
      'examples': [name for name in EXAMPLES if (SAMPLES / name).is_file()],
  }
  js = json.dumps(settings).replace('</', '<\\/')
  return page_template().replace('/*SETTINGS*/null', js).encode('utf-8')


class Handler(http.server.BaseHTTPRequestHandler):
  """GET / is the page; POST /api/* take and answer JSON; anything else is a 404."""

  server_version = 'ce_jax-app'

  def _send(self, status: int, body: bytes, content_type: str) -> None:
    self.send_response(status)
    self.send_header('Content-Type', content_type)
    self.send_header('Content-Length', str(len(body)))
    self.send_header('Cache-Control', 'no-store')
    self.end_headers()
    self.wfile.write(body)

  def _send_json(self, status: int, obj: dict) -> None:
    self._send(status, json.dumps(obj).encode(), 'application/json')

  def _read_json(self) -> dict:
    length = self.headers.get('Content-Length')
    if length is None or not length.isdigit():
      raise HttpError(411, 'The request has no Content-Length.')
    length = int(length)
    if length > MAX_BODY_BYTES:
      self.close_connection = True
      while length > 0:  # read it all, so that the browser gets the answer
        chunk = self.rfile.read(min(length, 2**20))
        if not chunk:
          break
        length -= len(chunk)
      raise HttpError(
          413,
          f'The upload is too large: photos are limited to {MAX_PHOTO_MB} MB '
          f'(requests to {MAX_BODY_BYTES // 2**20} MB).',
      )
    try:
      request = json.loads(self.rfile.read(length))
    except (UnicodeDecodeError, json.JSONDecodeError):
      raise HttpError(400, 'The request is not JSON.') from None
    if not isinstance(request, dict):
      raise HttpError(400, 'The request is not a JSON object.')
    return request

  def do_GET(self):  # pylint: disable=invalid-name
    path = urllib.parse.urlsplit(self.path).path
    folder, _, name = path.rpartition('/')
    image = self.server.model.images.get(name) if folder == '/api/image' else None
    if path in ('/', '/index.html'):
      self._send(200, page(self.server.model), 'text/html; charset=utf-8')
    elif image:
      self._send(200, *image)
    elif folder == '/samples' and name in EXAMPLES:
      self._send(200, (SAMPLES / name).read_bytes(), 'image/jpeg')
    elif folder == '/api/image':
      self._send(
          404,
          b'This image is no longer kept: inpaint the photo again.\n',
          'text/plain; charset=utf-8',
      )
    else:
      self._send(
          404, f'404: nothing at {path}; the app is at /.\n'.encode(), 'text/plain; charset=utf-8'
      )

  def do_POST(self):  # pylint: disable=invalid-name
    path = urllib.parse.urlsplit(self.path).path
    try:
      if path not in ROUTES:
        raise HttpError(404, f'No endpoint {path}; there are {", ".join(ROUTES)}.')
      with self.server.work_slots:  # bounds the memory of concurrent large photos
        try:
          answer = ROUTES[path](self.server.model, self._read_json())
        finally:
          if MALLOC_TRIM:  # a photo's buffers, freed, would stay in this thread's heap
            MALLOC_TRIM(0)
      self._send_json(200, answer)
    except HttpError as e:
      self._send_json(e.status, {'error': str(e)})
    except ValueError as e:  # bad photo, empty mask, a hole too large for the model
      self._send_json(400, {'error': str(e)})
    except Exception as e:  # pylint: disable=broad-except  # a bug: log it, keep serving
      logging.exception('%s failed', path)
      self._send_json(500, {'error': f"Internal error ({type(e).__name__}); see the app's log."})

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    logging.info('%s %s', self.address_string(), format % args)


class Server(http.server.ThreadingHTTPServer):
  daemon_threads = True
  model: Model | None = None
  work_slots = threading.BoundedSemaphore(WORK_SLOTS)

  def handle_error(self, request, client_address):
    if not isinstance(sys.exc_info()[1], ConnectionError):  # a tab closed mid-answer is no error
      super().handle_error(request, client_address)


def make_server(
    host: str, port: int, model: Model | None = None, work_slots: int = WORK_SLOTS
) -> Server:
  """Binds host:port (0: a free port) at once; set `.model` before serving."""
  server = Server((host, port), Handler)
  server.model = model
  server.work_slots = threading.BoundedSemaphore(work_slots)
  return server


FLAGS = flags.FLAGS


def define_flags():
  """Flags of this command (defined only when it runs, so modules import each other freely)."""
  inpaint.define_model_flags()
  flags.DEFINE_string(
      'host', '127.0.0.1', 'Address to listen on; 0.0.0.0 opens the app to your whole network.'
  )
  flags.DEFINE_integer('port', 8080, 'Port to listen on (0: any free port).')
  flags.DEFINE_integer(
      'work_slots',
      WORK_SLOTS,
      'Requests read and decoded at a time; each large photo takes a few hundred MB meanwhile.',
      lower_bound=1,
  )


def main(argv):
  logging.set_verbosity(logging.ERROR)  # orbax warns before a bad --workdir's one-line error
  del argv
  platform.setup()
  try:  # bind first: a port in use fails in a second, not after loading the model
    server = make_server(FLAGS.host, FLAGS.port, work_slots=FLAGS.work_slots)
  except (OSError, OverflowError) as e:  # OverflowError: a port outside 0-65535
    in_use = getattr(e, 'errno', None) == errno.EADDRINUSE
    why = 'the port is in use (pass --port=another)' if in_use else e
    sys.exit(f'app: cannot listen on {FLAGS.host}:{FLAGS.port}: {why}')
  try:
    server.model = load_model(FLAGS.workdir, FLAGS.step, FLAGS.blend)
  except (ValueError, OSError) as e:
    server.server_close()
    sys.exit(f'app: {e}')
  host, port = server.server_address[:2]
  if host not in ('127.0.0.1', '::1'):
    print(f'Listening on {host}: other machines on your network can use this app too.')
  print(
      f'Inpainting with {server.model.describe()}\n'
      f'Open http://{host}:{port}/ in your browser (Ctrl-C stops the app).',
      flush=True,
  )
  try:
    server.serve_forever()
  except KeyboardInterrupt:
    pass
  finally:
    server.server_close()


if __name__ == '__main__':
  define_flags()
  app.run(main)
