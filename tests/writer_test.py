"""What training writes for people to watch: metrics.jsonl, TensorBoard scalars and image grids."""

import io
import json
import sys

import numpy as np
from PIL import Image

from ce_jax import train


def test_tensorboard_gets_scalars_and_the_evaluation_grid(tmp_path):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  from tensorboard.util import tensor_util  # pylint: disable=g-import-not-at-top

  grid = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
  Image.fromarray(grid).save(tmp_path / 'grid.png')
  writer = train.Writer(tmp_path)
  writer.scalars(7, {'psnr': 17.5}, prefix='eval/')
  writer.image(7, 'eval/inpaintings', tmp_path / 'grid.png')
  writer.close()

  events = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={'tensors': 0})
  events.Reload()
  [image] = events.Tensors('eval/inpaintings')  # tf.summary.image: [width, height, png]
  width, height, png = tensor_util.make_ndarray(image.tensor_proto)
  assert (image.step, int(width), int(height)) == (7, 30, 20)
  np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), grid)
  assert json.loads((tmp_path / 'metrics.jsonl').read_text()) == {'step': 7, 'eval/psnr': 17.5}


def test_without_tensorflow_metrics_still_reach_the_jsonl(tmp_path, monkeypatch, capsys):
  import clu  # pylint: disable=g-import-not-at-top

  monkeypatch.setitem(sys.modules, 'clu.metric_writers', None)  # import fails as without TF
  monkeypatch.delattr(clu, 'metric_writers', raising=False)
  writer = train.Writer(tmp_path)
  writer.scalars(3, {'g_loss': 0.5}, prefix='train/')
  writer.image(3, 'eval/inpaintings', tmp_path / 'missing.png')
  writer.close()
  assert json.loads((tmp_path / 'metrics.jsonl').read_text()) == {'step': 3, 'train/g_loss': 0.5}
  assert (
      'No TensorBoard events without TensorFlow (pip install "ce_jax[tf]")'
      in capsys.readouterr().err
  )
  assert not list(tmp_path.glob('events.out.tfevents*'))
