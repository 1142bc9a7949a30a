"""dst_dali: Dynamic Scale Training (Stitcher) collages as an NVIDIA DALI pipeline.

The DALI operator plugin (csrc/) is compiled here by driving g++ and nvcc directly: DALI 2.x
headers need C++20 for both, and CMake < 3.26 cannot compile CUDA as C++20 with nvcc 13.

Environment switches
  DST_DALI_CPU_ONLY=1        build only the CPU backend (also the default when nvcc is missing)
  DST_DALI_CUDA_ARCHS=80;90  SASS targets (default: every architecture nvcc 13 supports from
                             Turing on, plus PTX of the newest for later GPUs)
  NVCC=/path/to/nvcc         the CUDA compiler (default: nvcc on PATH)

The plugin is built against the installed DALI and only works with that DALI version; it
carries that version in a string, and `import dst_dali` refuses a mismatch with a message to
rebuild.
"""
import os
import shutil
import subprocess

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))
CPU_SOURCES = ["csrc/collage_stitch.cc", "csrc/host_cpu.cc"]
CUDA_SOURCES = ["csrc/collage_stitch.cu"]
HEADERS = ["csrc/collage_geometry.h", "csrc/collage_kernel.h", "csrc/collage_rows_cpu.h",
           "csrc/collage_stitch.h"]
DEFAULT_CUDA_ARCHS = "75;80;86;89;90;100;120"


def _run(cmd):
    print(" ".join(cmd), flush=True)
    subprocess.check_call(cmd, cwd=HERE)


def _cuda_home(nvcc):
    """The first CUDA install with cuda_runtime.h: CUDA_HOME, nvcc's own, /usr/local/cuda, or
    the headers of the CUDA runtime wheel torch brings (enough for a CPU-only build)."""
    import sysconfig
    site = sysconfig.get_paths()["purelib"]
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates += ["/usr/local/cuda", os.path.join(site, "nvidia", "cu13"),
                   os.path.join(site, "nvidia", "cuda_runtime")]
    for home in filter(None, candidates):
        if os.path.isfile(os.path.join(home, "include", "cuda_runtime.h")):
            return home
    return None


class BuildDaliPlugin(build_ext):
    """Builds the CollageStitch plugin library in place of a Python extension module."""

    def build_extension(self, ext):
        import nvidia.dali as dali
        import nvidia.dali.sysconfig as dali_sysconfig

        target = os.path.abspath(self.get_ext_fullpath(ext.name))
        tmp = os.path.abspath(self.build_temp)
        os.makedirs(tmp, exist_ok=True)
        os.makedirs(os.path.dirname(target), exist_ok=True)

        dali_flags = dali_sysconfig.get_compile_flags()
        dali_lib = dali_sysconfig.get_lib_dir()
        nvcc = os.environ.get("NVCC") or shutil.which("nvcc")
        cuda = nvcc is not None and os.environ.get("DST_DALI_CPU_ONLY", "0") in ("", "0")
        if not cuda:
            print("dst_dali: building the CPU backend only "
                  f"({'DST_DALI_CPU_ONLY is set' if nvcc else 'nvcc not found'})")
        cuda_home = _cuda_home(nvcc)
        # DALI's headers include cuda_runtime.h even in host-only code.
        cuda_inc = [f"-I{cuda_home}/include"] if cuda_home else []

        objects = []
        for src in CPU_SOURCES:
            obj = os.path.join(tmp, os.path.basename(src) + ".o")
            _run(["g++", "-std=c++20", "-O3", "-fPIC", "-ffp-contract=off",
                  "-Wno-free-nonheap-object", *dali_flags, *cuda_inc,
                  f'-DDST_DALI_BUILD_INFO="dali={dali.__version__} cuda={int(cuda)}"',
                  "-c", src, "-o", obj])
            objects.append(obj)
        link_cuda = []
        if cuda:
            archs = os.environ.get("DST_DALI_CUDA_ARCHS", DEFAULT_CUDA_ARCHS).replace(",", ";")
            archs = [a.strip() for a in archs.split(";") if a.strip()]
            gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs]
            gencode.append(f"-gencode=arch=compute_{archs[-1]},code=compute_{archs[-1]}")
            for src in CUDA_SOURCES:
                obj = os.path.join(tmp, os.path.basename(src) + ".o")
                # --fmad=false: no fused multiply-adds, so the device rounds the shared
                # arithmetic of collage_geometry.h exactly as the host build does.
                _run([nvcc, "-std=c++20", "-O3", "--fmad=false", "-Xcompiler", "-fPIC",
                      "-Xcompiler", "-Wno-free-nonheap-object", *dali_flags, *gencode,
                      "-c", src, "-o", obj])
                objects.append(obj)
            link_cuda = [f"-L{cuda_home}/lib64", "-lcudart_static", "-lrt", "-ldl", "-lpthread"]
        _run(["g++", "-shared", "-o", target, *objects, f"-L{dali_lib}", "-ldali", *link_cuda,
              f"-Wl,-rpath,{dali_lib}", "-Wl,-rpath,$ORIGIN/../nvidia/dali"])


setup(
    name="dst_dali",
    version="0.1.0",
    description="Dynamic Scale Training (Stitcher) for object detection as an NVIDIA DALI "
                "pipeline with a fused CPU/CUDA collage operator",
    license="Apache-2.0",  # LICENSE; data/coco128 keeps its own terms (its README)
    # pipelines/ (the DALI graph) installs as dst_dali.pipelines: no generic top-level name;
    # it imports dst_dali.* absolutely, which holds in the source tree and installed alike.
    packages=find_packages(include=["dst_dali", "dst_dali.*"]) + ["dst_dali.pipelines"],
    package_dir={"dst_dali.pipelines": "pipelines"},
    ext_modules=[Extension("dst_dali._collage_stitch",
                           sources=CPU_SOURCES + CUDA_SOURCES, depends=HEADERS)],
    cmdclass={"build_ext": BuildDaliPlugin},
    python_requires=">=3.10",
    # The operator needs DALI alone, and exactly the DALI it was built against (pyproject.toml).
    install_requires=["numpy", "nvidia-dali-cuda120==2.4.0"],
    # The loader and probes need torch; the trainer also detectron2, which has no wheel for
    # recent Pythons: tools/install_detectron2.sh installs it.
    extras_require={"loader": ["torch", "torchvision", "pycocotools", "tqdm", "msgspec",
                               "xxhash", "pillow"],
                    "train": ["torch", "torchvision", "pycocotools", "matplotlib", "tqdm",
                              "msgspec", "xxhash", "pillow"]},
)
