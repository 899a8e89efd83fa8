"""The wheel: what it holds and says, built without writing into the source tree."""

import email.parser
import re
import subprocess
import sys
import zipfile

import pytest
import yaml

import ce_jax
from conftest import REPO, SAMPLES


def _tree_entries() -> set[str]:
  """The repository's top-level entries and those of ce_jax/ (where builds leave their files)."""
  return {p.name for p in REPO.iterdir()} | {
      f'ce_jax/{p.name}' for p in (REPO / 'ce_jax').iterdir()
  }


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
  pytest.importorskip('hatchling', reason='the build backend: pip install "hatchling>=1.27"')
  out = tmp_path_factory.mktemp('wheel')
  before = _tree_entries()
  r = subprocess.run(
      [
          sys.executable,
          '-m',
          'pip',
          'wheel',
          '--no-deps',
          '--no-build-isolation',
          '-q',
          '-w',
          out,
          '.',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert r.returncode == 0, r.stderr[-3000:]
  new = _tree_entries() - before
  assert not new, f'the build wrote {new} into the source tree'
  (path,) = out.glob('ce_jax-*.whl')
  return zipfile.ZipFile(path)


def test_the_wheel_holds_the_package_and_its_data_alone(wheel):
  names = wheel.namelist()
  dist_info = f'ce_jax-{ce_jax.__version__}.dist-info'
  assert {n.split('/')[0] for n in names} == {'ce_jax', dist_info}  # no top-level experiments
  assert not [n for n in names if '__pycache__' in n or n.endswith('.pyc')]
  for needed in (
      'ce_jax/train.py',
      'ce_jax/app.html',
      'ce_jax/configs/default.py',
      'ce_jax/samples/CREDITS.tsv',
      'ce_jax/pretrained/export.json',
      'ce_jax/pretrained/MODEL_CARD.md',
      'ce_jax/pretrained/LICENSE.md',
  ):
    assert needed in names, needed
  shipped = {n.rsplit('/', 1)[1] for n in names if n.startswith('ce_jax/samples/')}
  assert shipped == {p.name for p in SAMPLES.iterdir()}
  weights = [n for n in names if n.startswith('ce_jax/pretrained/generator/')]
  in_tree = [p for p in (REPO / 'ce_jax/pretrained/generator').rglob('*') if p.is_file()]
  assert len(weights) == len(in_tree) > 0


def test_the_metadata_states_the_version_urls_and_the_weights_terms(wheel):
  dist_info = f'ce_jax-{ce_jax.__version__}.dist-info'
  meta = email.parser.Parser().parsestr(wheel.read(f'{dist_info}/METADATA').decode())
  assert meta['Name'] == 'ce_jax' and meta['Version'] == ce_jax.__version__ == '0.2.0'
  assert meta['Author']
  urls = dict(u.rsplit(', ', 1) for u in meta.get_all('Project-URL'))
  assert all(u.startswith('https://') for u in urls.values()) and len(urls) >= 2
  assert meta['License-Expression'] == (
      'Apache-2.0 AND LicenseRef-ce-jax-pretrained-weights-non-commercial'
  )
  terms = ' '.join(
      wheel.read(f'{dist_info}/licenses/ce_jax/pretrained/LICENSE.md').decode().split()
  )
  assert 'for non-commercial research and education only' in terms
  assert 'Apache License' in wheel.read(f'{dist_info}/licenses/LICENSE').decode()


def test_citation_and_changelog_name_this_version():
  cff = yaml.safe_load((REPO / 'CITATION.cff').read_text())
  assert cff['cff-version'] == '1.2.0' and cff['version'] == ce_jax.__version__
  titles = {r['title']: r for r in cff['references']}
  pathak = titles['Context Encoders: Feature Learning by Inpainting']
  assert pathak['year'] == 2016 and pathak['authors'][0]['family-names'] == 'Pathak'
  assert titles['Image Inpainting with Context Encoders']['type'] == 'report'
  versions = re.findall(r'^## (\d+\.\d+\.\d+)', (REPO / 'CHANGELOG.md').read_text(), re.M)
  assert versions[0] == ce_jax.__version__ and '0.1.0' in versions
