// The collage's CUDA kernel and its launch, and the CPU replay of that launch, with no DALI
// header: the plugin (collage_stitch.cu) and the kernel check (bench/gpu/kernel_check) compile
// this very code. Host compilers see only EmulateLaunch.
#ifndef DST_DALI_COLLAGE_KERNEL_H_
#define DST_DALI_COLLAGE_KERNEL_H_

#include <string>

#include "collage_geometry.h"

#if defined(__CUDACC__)
#include <cuda_runtime_api.h>
#endif

namespace dst_dali {

/** Replays the CUDA launch on the CPU: every block and thread of the grid, same bounds checks. */
template <typename Out, bool kCHW, Interp kInterp>
void EmulateLaunch(const CollageSample *samples, const AxisTap *taps, const PixelParams &p,
                   const LaunchGrid &g) {
  for (int bz = 0; bz < g.grid_z; bz++)
    for (int by = 0; by < g.grid_y; by++)
      for (int bx = 0; bx < g.grid_x; bx++)
        for (int ty = 0; ty < g.block_y; ty++)
          for (int tx = 0; tx < g.block_x; tx++)
            StitchThread<Out, kCHW, kInterp>(samples, taps, p, bx, by, bz, tx, ty, g.block_x,
                                             g.block_y);
}

#if defined(__CUDACC__)
// The parameters stay in the kernel's parameter space (__grid_constant__): StitchThread takes
// them by reference, which would otherwise copy them to a stack frame in every thread.
template <typename Out, bool kCHW, Interp kInterp>
__global__ void StitchKernel(const CollageSample *samples, const AxisTap *taps,
                             const __grid_constant__ PixelParams p) {
  StitchThread<Out, kCHW, kInterp>(samples, taps, p, blockIdx.x, blockIdx.y, blockIdx.z,
                                   threadIdx.x, threadIdx.y, blockDim.x, blockDim.y);
}

/** Launches the kernel over grid g on stream; samples and taps are device pointers (the
 * samples' src and out too). Returns the launch's error. */
template <typename Out, bool kCHW, Interp kInterp>
cudaError_t LaunchStitch(const LaunchGrid &g, cudaStream_t stream, const CollageSample *samples,
                         const AxisTap *taps, const PixelParams &p) {
  dim3 grid(g.grid_x, g.grid_y, g.grid_z), block(g.block_x, g.block_y);
  StitchKernel<Out, kCHW, kInterp><<<grid, block, 0, stream>>>(samples, taps, p);
  return cudaGetLastError();
}
#endif

/**
 * Empty when a driver for CUDA `driver` (cudaDriverGetVersion: 1000 * major + 10 * minor) runs
 * code built with the CUDA runtime `runtime` (CUDART_VERSION), else the one-line reason. CUDA's
 * minor-version compatibility lets any driver of the runtime's major version run it; the
 * plugin links the runtime statically, so nothing else on the node lifts the floor.
 */
inline std::string DriverFloorError(int driver, int runtime) {
  const int major = runtime / 1000;
  if (driver >= major * 1000) return std::string();
  auto version = [](int v) {
    return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
  };
  // the first driver branch of each CUDA major version
  const char *branch = major >= 13 ? "R580" : major == 12 ? "R525" : "R450";
  return "CollageStitch's GPU backend was built with the CUDA " + version(runtime) +
         " runtime and needs an NVIDIA driver for CUDA " + std::to_string(major) +
         ".0 or later (" + branch + "+); this node's driver supports CUDA " +
         (driver > 0 ? version(driver) : std::string("nothing (no driver found)")) +
         ": update the driver, or build the plugin with an older CUDA toolkit (see setup.py)";
}

}  // namespace dst_dali

#endif  // DST_DALI_COLLAGE_KERNEL_H_
