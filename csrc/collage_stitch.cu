// CollageStitch: the GPU backend. One thread per output pixel: StitchKernel from
// collage_kernel.h, whose thread body the CPU emulation replays in the tests.
#include <cuda_runtime_api.h>

#include "collage_kernel.h"
#include "collage_stitch.h"
#include "dali/core/cuda_error.h"
#include "dali/kernels/dynamic_scratchpad.h"

namespace dst_dali {

void CheckCudaDriver() {
  static const std::string error = [] {
    int driver = 0;
    cudaDriverGetVersion(&driver);
    return DriverFloorError(driver, CUDART_VERSION);
  }();
  DALI_ENFORCE(error.empty(), error);
}

template <>
void CollageStitch<dali::GPUBackend>::RunImpl(dali::Workspace &ws) {
  DALI_ENFORCE(!emulate_gpu_launch_ && !portable_cpu_,
               "CollageStitch: _emulate_gpu_launch and _portable_cpu are for the CPU backend");
  const uint64_t start = ThreadCpuNs();  // the host's share; the kernel's time is not in it
  BindPointers(ws);
  const int B = samples_.size();
  cudaStream_t stream = ws.stream();
  dali::kernels::DynamicScratchpad scratch(dali::AccessOrder{stream});

  const AxisTap *taps_gpu = scratch.ToGPU(stream, Taps());
  const CollageSample *samples_gpu = scratch.ToGPU(stream, samples_);
  Size2 m = MaxOutputSize();
  LaunchGrid g = MakeLaunchGrid(m.h, m.w, B);
  DispatchPixelFormat(float_out_, chw_, interp_, [&]<typename Out, bool kCHW, Interp kI>() {
    CUDA_CALL((LaunchStitch<Out, kCHW, kI>(g, stream, samples_gpu, taps_gpu, params_)));
  });

  // Annotations were remapped on the host in SetupImpl: stage them in pinned memory (freed in
  // stream order by the scratchpad) and copy each output sample.
  ForEachAnnotationOutput([&](int idx, auto member) {
    auto &out = ws.Output<dali::GPUBackend>(idx);
    for (int s = 0; s < B; s++) {
      const auto &v = annotations_[s].*member;
      if (v.empty()) continue;
      auto *pinned = scratch.ToPinned(v);
      CUDA_CALL(cudaMemcpyAsync(out.raw_mutable_tensor(s), pinned, v.size() * sizeof(v[0]),
                                cudaMemcpyHostToDevice, stream));
    }
  });
  RecordHostCpu(k_, ThreadCpuNs() - start, 1, B);
}

}  // namespace dst_dali

// What the driver floor is applied to, for Python (dst_dali/op/device.py): the CUDA runtime
// this backend was built with (linked statically) and the node's driver (0: none found).
extern "C" __attribute__((visibility("default"))) int dst_dali_cuda_runtime() {
  return CUDART_VERSION;
}

extern "C" __attribute__((visibility("default"))) int dst_dali_cuda_driver() {
  int driver = 0;
  if (cudaDriverGetVersion(&driver) != cudaSuccess) return 0;
  return driver;
}

DALI_REGISTER_OPERATOR(CollageStitch, ::dst_dali::CollageStitch<::dali::GPUBackend>, ::dali::GPU);
