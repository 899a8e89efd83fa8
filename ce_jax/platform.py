"""Process setup, called first thing in every command's `main` (nothing happens at import).

  from ce_jax import platform
  platform.setup()                       # before JAX starts a backend

It does two things, and logs one line naming what it changed:

* On CPU, XLA's own convolutions instead of YNNPACK's where that was measured to be faster
  (BENCHMARKS.md, "CPU convolutions"), unless the user set the flag in XLA_FLAGS already.
* Multi-host: `jax.distributed.initialize()` when the command line or the environment asks for
  it (README, "Many hosts"): --distributed (JAX detects a Cloud TPU pod slice, SLURM, Open MPI
  or Kubernetes itself), explicit --coordinator_address / --num_processes / --process_id, JAX's
  own JAX_COORDINATOR_ADDRESS variables, a SLURM job step of several tasks, or a GKE TPU slice of
  several hosts (TPU_WORKER_HOSTNAMES). A single process, the common case, initialises nothing.
"""

import importlib.metadata
import os
import sys
import threading

from absl import flags
import jax

# XLA's CPU backend hands convolutions to YNNPACK by default, which runs this project's
# convolutions much slower than XLA's own (BENCHMARKS.md): keep YNNPACK for the rest.
CPU_CONV_FLAG = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'
# jaxlib releases on which CPU_CONV_FLAG was measured to help (an unknown flag aborts XLA, so it
# is never set on a release where it was not measured).
CPU_CONV_FLAG_JAXLIB = ('0.10.', '0.12.')
# Seconds a process of a multi-host run waits for the others to join the coordinator before it
# gives up in one line (--coordinator_timeout), rather than JAX's abort after five minutes.
COORDINATOR_TIMEOUT = 300


def define_flags() -> None:
  """--distributed, and --coordinator_address, --num_processes, --process_id."""
  flags.DEFINE_bool(
      'distributed',
      False,
      'Multi-host run: jax.distributed.initialize() detects '
      'the cluster (Cloud TPU pod slice, SLURM, Open MPI, Kubernetes).',
  )
  flags.DEFINE_string(
      'coordinator_address',
      None,
      'host:port of process 0, for multi-host runs JAX cannot detect itself.',
  )
  flags.DEFINE_integer('num_processes', None, 'Number of processes of a multi-host run.')
  flags.DEFINE_integer('process_id', None, "This process's index in a multi-host run.")
  flags.DEFINE_integer(
      'coordinator_timeout',
      COORDINATOR_TIMEOUT,
      'Seconds a multi-host process waits for every process to join the coordinator.',
  )


def _installed(package: str) -> str | None:
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return None


def _backend_started() -> bool:
  from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top

  return bool(xla_bridge._backends)  # pylint: disable=protected-access


def _prefer_xla_cpu_convolutions() -> str | None:
  """Adds CPU_CONV_FLAG to XLA_FLAGS where measured; returns what changed, if anything."""
  xla_flags = os.environ.get('XLA_FLAGS', '')
  jaxlib = _installed('jaxlib') or ''
  if (
      'ynn_fusion_type' in xla_flags
      or not jaxlib.startswith(CPU_CONV_FLAG_JAXLIB)
      or _installed('libtpu')
      or _backend_started()
  ):
    return None
  os.environ['XLA_FLAGS'] = f'{xla_flags} {CPU_CONV_FLAG}'.strip()
  return 'XLA CPU convolutions instead of YNNPACK'


def distributed_request(
    coordinator_address=None,
    num_processes=None,
    process_id=None,
    distributed=False,
    environ=os.environ,
) -> dict | None:
  """The arguments for jax.distributed.initialize if this run spans several processes, else None.

  Explicit values win; then --distributed; otherwise the environment decides: JAX's own
  variables, a SLURM step of several tasks, a GKE TPU slice of several hosts ({} = JAX detects
  the rest itself).
  """
  explicit = {
      'coordinator_address': coordinator_address,
      'num_processes': num_processes,
      'process_id': process_id,
  }
  if any(v is not None for v in explicit.values()):
    missing = [k for k, v in explicit.items() if v is None]
    if missing:
      raise ValueError(
          f'Multi-host runs need all of --coordinator_address, --num_processes and '
          f'--process_id; missing --{", --".join(missing)}.'
      )
    if not 0 <= process_id < num_processes:
      raise ValueError(
          f'--process_id={process_id} must be in [0, --num_processes=' f'{num_processes}).'
      )
    check_address(coordinator_address)
    return explicit
  if distributed or environ.get('JAX_COORDINATOR_ADDRESS'):
    return {}
  if environ.get('SLURM_JOB_ID') and int(environ.get('SLURM_NTASKS', '1')) > 1:
    return {}
  if len([h for h in environ.get('TPU_WORKER_HOSTNAMES', '').split(',') if h]) > 1:
    return {}
  return None


def check_address(address: str) -> None:
  """A one-line ValueError unless `address` is HOST:PORT."""
  host, _, port = str(address).rpartition(':')
  if not (host and port.isdigit() and 0 < int(port) < 65536):
    raise ValueError(
        f"--coordinator_address={address} must be HOST:PORT, process 0's host and a free port "
        '(e.g. 10.0.0.1:1234).'
    )


def _initialize(request: dict, timeout: int) -> None:
  """jax.distributed.initialize(**request), given up after `timeout` s with one line and exit
  status 1: JAX itself aborts the process (a C++ dump blaming another task) after its own
  timeout, which a Python exception handler cannot catch."""
  if not (isinstance(timeout, int) and timeout > 0):
    raise ValueError(f'--coordinator_timeout={timeout} must be a positive number of seconds.')
  joined = threading.Event()
  address = request.get('coordinator_address') or os.environ.get('JAX_COORDINATOR_ADDRESS')
  where = f'at {address}' if address else '(detected from the environment)'
  who = (
      f'process {request["process_id"]} of {request["num_processes"]}'
      if 'process_id' in request
      else 'this process'
  )

  def give_up():
    if not joined.wait(timeout):
      print(
          f'platform: {who} waited {timeout} s (--coordinator_timeout) for the coordinator '
          f'{where} and every process to join; check that process 0 runs there and can be '
          'reached, and that all processes started with the same --num_processes.',
          file=sys.stderr,
          flush=True,
      )
      os._exit(1)  # pylint: disable=protected-access  # JAX holds the main thread in C++

  threading.Thread(target=give_up, name='coordinator-timeout', daemon=True).start()
  try:
    jax.distributed.initialize(**request, initialization_timeout=timeout + 60)
  finally:
    joined.set()


def setup(
    coordinator_address=None,
    num_processes=None,
    process_id=None,
    distributed=False,
    coordinator_timeout=COORDINATOR_TIMEOUT,
) -> None:
  """Process-wide settings for a command; call before anything starts a JAX backend."""
  changes = []
  if conv := _prefer_xla_cpu_convolutions():
    changes.append(conv)
  request = distributed_request(coordinator_address, num_processes, process_id, distributed)
  if request is not None:
    # Collectives between the CPU devices of several processes (a no-op on GPU and TPU),
    # unless the user chose an implementation.
    if 'JAX_CPU_COLLECTIVES_IMPLEMENTATION' not in os.environ:
      jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    _initialize(request, coordinator_timeout)
    changes.append(f'process {jax.process_index()} of {jax.process_count()}')
  if changes and jax.process_index() == 0:
    print(f'platform: {"; ".join(changes)}', file=sys.stderr, flush=True)


def setup_from_flags() -> None:
  """setup() with the multi-host flags of `define_flags`."""
  f = flags.FLAGS
  setup(f.coordinator_address, f.num_processes, f.process_id, f.distributed, f.coordinator_timeout)
