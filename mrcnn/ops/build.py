"""Build the RoIAlign op library against the installed TensorFlow.

Run ahead of time with ``python -m mrcnn.ops.build`` (``make build-ops``), or
let :func:`ensure_built` do it lazily on first use of ``mrcnn.ops.roi_align``.

Sources: ``custom_ops/roi_align/`` of a repository checkout, else the copy that
``pip install .`` puts in the package (``mrcnn/ops/_src/``, see ``setup.py``).

Output: ``<cache>/<key>/roi_align_<cpu|cuda>.so`` where ``<cache>`` is
``$MRCNN_OPS_CACHE`` or ``~/.cache/mrcnn/ops`` and ``<key>`` hashes the
TensorFlow version, the compile flags and the source files, so a new
TensorFlow or an edited source rebuilds. A file lock makes concurrent
processes wait for one build instead of racing.

Compilers: ``g++`` (``$CXX``) with ``tf.sysconfig`` flags, ``-std=c++17 -O3
-fPIC -shared``; for CUDA, nvcc (``$MRCNN_NVCC``, ``/usr/local/cuda/bin/nvcc``
or ``nvcc`` on PATH) with ``-DGOOGLE_CUDA=1 -x cu --expt-relaxed-constexpr``.

When CUDA is compiled, and why only sometimes linked:

* The CUDA source (``roi_align_kernels.cu.cc``) includes no TensorFlow or
  Eigen header, only CUDA's own, so nvcc stays quick (seconds, not minutes, on
  a 2-core machine). The host side of the GPU kernels (registration, stream
  lookup) lives in ``roi_align_kernels.cc`` and ``roi_align_max_grad.cc`` under
  ``#if GOOGLE_CUDA``.
* Linked build (``roi_align_cuda.so``): when TensorFlow was built with CUDA
  **and** a GPU is visible. The ``.cc`` files are compiled with
  ``-DGOOGLE_CUDA=1`` against a temporary include dir in which
  ``third_party/gpus/cuda/include`` points at the toolkit's include dir, and
  the library links ``libcudart``.
* Otherwise (no GPU, e.g. CI): the CPU-only ``roi_align_cpu.so`` is built. The
  command-line build still compiles the CUDA object as a compile check when
  nvcc exists (a CUDA compile error fails the command with a non-zero exit), but
  does not link it: a CPU library that needs ``libcudart`` would fail to load on
  machines without the CUDA runtime, and with no GPU it would never run. The
  lazy build (first use) skips the compile check, it only costs time.
* ``MRCNN_OPS_SKIP_CUDA=1`` (or ``--skip-cuda``) skips CUDA entirely.
  ``MRCNN_CUDA_ARCH`` (e.g. ``sm_90``) overrides the target architecture
  (default: the visible GPU's, else ``sm_80`` for the compile check).
"""

import argparse
import contextlib
import fcntl
import hashlib
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCE_FILES = ("roi_align.h", "roi_align_cpu.h", "roi_align_ops.cc", "roi_align_kernels.cc",
                "roi_align_max_grad.cc", "roi_align_kernels.cu.cc")
CXX_SOURCES = ("roi_align_ops.cc", "roi_align_kernels.cc", "roi_align_max_grad.cc")
CUDA_SOURCE = "roi_align_kernels.cu.cc"
# TensorFlow's x86-64 wheels require AVX, so -mavx is safe wherever they run.
CXX_FLAGS = ["-std=c++17", "-O3", "-fPIC", "-w"] + (
    ["-mavx"] if platform.machine().lower() in ("x86_64", "amd64") else [])
NVCC_FLAGS = ["-std=c++17", "-O3", "-DGOOGLE_CUDA=1", "-x", "cu", "--expt-relaxed-constexpr",
              "-Xcompiler", "-fPIC"]
BUILD_FORMAT = "1"  # bump when this module changes how libraries are built


class BuildError(RuntimeError):
    """A compiler failed or no sources/compiler were found."""


def _truthy(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def find_source_dir():
    """Directory holding the op sources: repo checkout first, then the package copy."""
    here = Path(__file__).resolve().parent
    candidates = [here.parents[1] / "custom_ops" / "roi_align", here / "_src"]
    for candidate in candidates:
        if all((candidate / name).is_file() for name in SOURCE_FILES):
            return candidate
    raise BuildError("RoIAlign sources not found; looked in " +
                     ", ".join(str(c) for c in candidates))


def cache_root():
    env = os.environ.get("MRCNN_OPS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mrcnn" / "ops"


def find_nvcc():
    for candidate in (os.environ.get("MRCNN_NVCC"), "/usr/local/cuda/bin/nvcc",
                      shutil.which("nvcc")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def gpu_runtime():
    """``(usable, reason, arch)``: whether to link CUDA kernels into the library."""
    import tensorflow as tf
    if not tf.test.is_built_with_cuda():
        return False, "this TensorFlow was built without CUDA", None
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return False, "no GPU is visible to TensorFlow", None
    arch = None
    details = tf.config.experimental.get_device_details(gpus[0])
    if details.get("compute_capability"):
        major, minor = details["compute_capability"]
        arch = f"sm_{major}{minor}"
    return True, f"TensorFlow has CUDA and sees {len(gpus)} GPU(s)", arch


def tf_flags():
    import tensorflow as tf
    return tf.__version__, tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags()


def cache_key(source_dir, variant, tf_version, compile_flags):
    digest = hashlib.sha256()
    for part in (BUILD_FORMAT, variant, tf_version, sys.version.split()[0], *compile_flags,
                 *CXX_FLAGS, *NVCC_FLAGS):
        digest.update(part.encode() + b"\0")
    for name in SOURCE_FILES:
        digest.update((Path(source_dir) / name).read_bytes() + b"\0")
    return f"tf{tf_version}-{variant}-{digest.hexdigest()[:16]}"


def _run(cmd, log):
    log("$ " + " ".join(shlex.quote(str(c)) for c in cmd))
    # Output goes to a file, not a pipe (a long error log would fill a pipe
    # and block the compiler). Own process group: a failed build can stop the
    # compiler driver and its children (cc1plus, cicc...) together.
    output = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([str(c) for c in cmd], stdout=output, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    proc.output_file = output
    return proc


def _output_of(proc):
    proc.output_file.seek(0)
    text = proc.output_file.read()
    proc.output_file.close()
    return text


def _stop(procs):
    for _, proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.output_file.close()


def _wait_all(procs, what):
    """Wait for the compilers; on the first failure stop the others (fail fast)."""
    failures = []
    pending = list(procs)
    try:
        while pending and not failures:
            for item in list(pending):
                name, proc = item
                if proc.poll() is None:
                    continue
                pending.remove(item)
                out = _output_of(proc)
                if proc.returncode != 0:
                    failures.append(f"{name} failed (exit {proc.returncode}):\n{out[-6000:]}")
            if pending and not failures:
                time.sleep(0.05)
    finally:  # failure, KeyboardInterrupt...: do not leave compilers running
        _stop(pending)
    if failures:
        raise BuildError(f"{what}:\n" + "\n".join(failures))


@contextlib.contextmanager
def _cuda_include_dir(nvcc):
    """Temp dir where ``third_party/gpus/cuda/include`` -> the toolkit's include dir."""
    toolkit_include = Path(nvcc).resolve().parents[1] / "include"
    with tempfile.TemporaryDirectory(prefix="mrcnn_cuda_inc_") as tmp:
        link = Path(tmp) / "third_party" / "gpus" / "cuda" / "include"
        link.parent.mkdir(parents=True)
        link.symlink_to(toolkit_include)
        yield tmp, toolkit_include


def build(out_dir=None, source_dir=None, cuda="auto", force=False, log=print):
    """Compile the library; return a dict describing what was done.

    Args:
      out_dir: directory for the ``.so`` (default: the keyed cache dir).
      source_dir: where the sources are (default: :func:`find_source_dir`).
      cuda: ``"auto"`` (link if a GPU runtime exists, else compile-check when
        nvcc exists), ``"link"`` (link if a GPU runtime exists, else no CUDA),
        ``"check"`` (compile-check only if nvcc exists), ``"skip"`` (no CUDA).
      force: rebuild even if the library exists.
      log: callable for progress lines (compiler commands, decisions).

    Raises:
      BuildError: a compiler failed (including nvcc) or sources are missing.
    """
    source_dir = Path(source_dir) if source_dir else find_source_dir()
    if _truthy("MRCNN_OPS_SKIP_CUDA"):
        cuda = "skip"
    nvcc = find_nvcc() if cuda != "skip" else None
    link_cuda, cuda_reason, arch = False, "skipped (MRCNN_OPS_SKIP_CUDA / --skip-cuda)", None
    if cuda != "skip":
        if nvcc is None:
            cuda_reason = "nvcc not found"
        elif cuda in ("auto", "link"):
            link_cuda, cuda_reason, arch = gpu_runtime()
        else:
            cuda_reason = "compile check only requested"
    # "link" (the lazy build) skips the compile-only check: it would only cost time.
    compile_cuda = nvcc is not None and (link_cuda or cuda in ("auto", "check"))
    arch = os.environ.get("MRCNN_CUDA_ARCH") or arch or "sm_80"

    tf_version, compile_flags, link_flags = tf_flags()
    variant = "cuda" if link_cuda else "cpu"
    key = cache_key(source_dir, variant, tf_version, compile_flags)
    out_dir = Path(out_dir) if out_dir else cache_root() / key
    out_dir.mkdir(parents=True, exist_ok=True)
    library = out_dir / f"roi_align_{variant}.so"
    info = dict(library=library, source_dir=source_dir, cuda_linked=link_cuda,
                cuda_compiled=False, cuda_reason=cuda_reason, built=False, seconds={})
    cxx = os.environ.get("CXX", "g++")

    check_stamp = out_dir / "cuda_compile_check.ok"
    with open(out_dir / ".lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        need_library = force or not library.is_file()
        need_check = (compile_cuda and not link_cuda and (force or not check_stamp.is_file()))
        if not need_library and not need_check:
            log(f"up to date: {library}")
            info["cuda_compiled"] = compile_cuda and check_stamp.is_file() or link_cuda
            return info
        with contextlib.ExitStack() as stack:
            tmp = Path(stack.enter_context(
                tempfile.TemporaryDirectory(prefix="mrcnn_ops_build_", dir=out_dir)))
            cuda_inc = toolkit_include = None
            if compile_cuda:
                cuda_inc, toolkit_include = stack.enter_context(_cuda_include_dir(nvcc))
            cuda_defs = (["-DGOOGLE_CUDA=1", f"-I{cuda_inc}", f"-I{toolkit_include}"]
                         if link_cuda else [])
            procs, objects = [], []
            start = time.monotonic()
            if need_library:
                for name in CXX_SOURCES:
                    obj = tmp / (name + ".o")
                    objects.append(obj)
                    procs.append((name, _run([cxx, *CXX_FLAGS, *cuda_defs, *compile_flags,
                                              f"-I{source_dir}", "-c", source_dir / name,
                                              "-o", obj], log)))
            cu_obj = tmp / (CUDA_SOURCE + ".o")
            if compile_cuda and (need_check or link_cuda):
                procs.append((CUDA_SOURCE, _run([nvcc, *NVCC_FLAGS, f"-arch={arch}",
                                                 f"-I{cuda_inc}", f"-I{source_dir}", "-c",
                                                 source_dir / CUDA_SOURCE, "-o", cu_obj], log)))
            _wait_all(procs, "compiling the RoIAlign op failed")
            info["seconds"]["compile_wall"] = round(time.monotonic() - start, 1)
            if compile_cuda:
                info["cuda_compiled"] = True
                if not link_cuda:
                    check_stamp.write_text(f"{nvcc} -arch={arch}\n")
            if need_library:
                link_inputs = list(objects)
                extra = []
                if link_cuda:
                    link_inputs.append(cu_obj)
                    lib_dir = Path(toolkit_include).parent / "lib64"
                    extra = [f"-L{lib_dir}", "-lcudart", f"-Wl,-rpath,{lib_dir}"]
                tmp_library = tmp / library.name
                _wait_all([("link", _run([cxx, "-shared", *link_inputs, "-o", tmp_library,
                                          *link_flags, *extra], log))],
                          "linking the RoIAlign op failed")
                os.replace(tmp_library, library)
                info["built"] = True
            info["seconds"]["total"] = round(time.monotonic() - start, 1)
    return info


def cuda_compile_check(source_dir=None, out_dir=None, log=print):
    """Compile only the CUDA source to an object (no TensorFlow needed).

    Returns the seconds nvcc took. Raises ``BuildError`` if nvcc is missing or
    fails.
    """
    source_dir = Path(source_dir) if source_dir else find_source_dir()
    nvcc = find_nvcc()
    if nvcc is None:
        raise BuildError("nvcc not found (set MRCNN_NVCC or install the CUDA toolkit)")
    arch = os.environ.get("MRCNN_CUDA_ARCH") or "sm_80"
    with _cuda_include_dir(nvcc) as (cuda_inc, _), \
            tempfile.TemporaryDirectory(prefix="mrcnn_cuda_check_", dir=out_dir) as tmp:
        start = time.monotonic()
        _wait_all([(CUDA_SOURCE, _run([nvcc, *NVCC_FLAGS, f"-arch={arch}", f"-I{cuda_inc}",
                                       f"-I{source_dir}", "-c", source_dir / CUDA_SOURCE,
                                       "-o", Path(tmp) / "check.o"], log))],
                  "compiling the RoIAlign CUDA kernels failed")
        return round(time.monotonic() - start, 1)


def ensure_built(log=None):
    """Path of a library for this TensorFlow, building it if needed (no CUDA check)."""
    quiet = log or (lambda line: None)
    info = build(cuda="link" if find_nvcc() else "skip", log=quiet)
    if info["built"] and log is None:
        print(f"mrcnn.ops: built {info['library']} in {info['seconds'].get('total')} s",
              file=sys.stderr)
    return info["library"]


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mrcnn.ops.build",
                                     description="Compile the RoIAlign custom op.")
    parser.add_argument("--out-dir", help="output directory (default: keyed cache dir)")
    parser.add_argument("--source-dir", help="op sources (default: custom_ops/roi_align)")
    parser.add_argument("--skip-cuda", action="store_true", help="do not run nvcc")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--cuda-check-only", action="store_true",
                        help="only compile the CUDA source (fails if nvcc is missing)")
    args = parser.parse_args(argv)
    if args.cuda_check_only:
        try:
            seconds = cuda_compile_check(args.source_dir, args.out_dir)
        except BuildError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"CUDA: compile check passed in {seconds} s")
        return 0
    try:
        info = build(out_dir=args.out_dir, source_dir=args.source_dir,
                     cuda="skip" if args.skip_cuda else "auto", force=args.force)
    except BuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"sources: {info['source_dir']}")
    print(f"library: {info['library']} ({'built' if info['built'] else 'cached'})")
    cuda_state = ("linked" if info["cuda_linked"] else
                  "compiled (compile check, not linked)" if info["cuda_compiled"] else
                  "not compiled")
    print(f"CUDA: {cuda_state}; {info['cuda_reason']}")
    if info["seconds"]:
        print("seconds: " + ", ".join(f"{k}={v}" for k, v in info["seconds"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
