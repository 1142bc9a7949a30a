// The collage kernel alone, for bench/gpu/kernel_check.py (make gpu-kernel-check): a shared
// library with a C interface (ctypes), built by nvcc from csrc/'s headers and no DALI. It runs
// one batch through the kernel on the GPU, or through the CPU replay of its launch, with every
// buffer in its own allocation followed by a guard band, and the same batch through the CPU
// backend's row code; it maps boxes and points as the operator plans them, and times the kernel
// against a device-to-device copy.
#include <cuda_runtime_api.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "collage_kernel.h"
#include "collage_rows_cpu.h"

namespace dst_dali {

/** The case a call runs (ctypes mirrors it): interp 0 nearest, 1 bilinear; B samples. */
struct Spec {
  int k, interp, float_out, chw, reverse, channels, B;
  float max_size;
};

namespace {

constexpr uint8_t kGuardByte = 0xC3;
constexpr uint8_t kSentinel[2] = {0x5A, 0xA5};  // two fills: an unwritten pixel differs

enum Fault : int { kNoFault = 0, kSkipRow = 1, kWritePastEnd = 2 };

/** The pixel formats of the matrix; the plugin picks them with DALI's BOOL_SWITCH and
 * VALUE_SWITCH, the harness with plain branches. */
template <typename F>
void Dispatch(bool float_out, bool chw, Interp interp, F &&f) {
  auto by_interp = [&]<typename Out, bool kCHW>() {
    if (interp == Interp::kNearest)
      f.template operator()<Out, kCHW, Interp::kNearest>();
    else
      f.template operator()<Out, kCHW, Interp::kLinear>();
  };
  auto by_layout = [&]<typename Out>() {
    if (chw)
      by_interp.template operator()<Out, true>();
    else
      by_interp.template operator()<Out, false>();
  };
  if (float_out)
    by_layout.template operator()<float>();
  else
    by_layout.template operator()<uint8_t>();
}

/** A batch as the operator plans it. */
struct Batch {
  int k, B, C;
  Interp interp;
  bool float_out, chw;
  PixelParams params{};
  std::vector<CollageSample> samples;
  std::vector<AxisTap> taps;

  size_t OutBytes(int s) const {
    return static_cast<size_t>(samples[s].out_h) * samples[s].out_w * C *
           (float_out ? sizeof(float) : 1);
  }
};

Batch Plan(const Spec &spec, const uint8_t *const *images, const int32_t *src_hw,
           const float *short_side, const int32_t *flip, const float *pad, const float *mean,
           const float *std) {
  Batch b;
  b.k = spec.k;
  b.B = spec.B;
  b.C = spec.channels;
  b.interp = spec.interp ? Interp::kLinear : Interp::kNearest;
  b.float_out = spec.float_out;
  b.chw = spec.chw;
  b.params.channels = b.C;
  b.params.reverse_channels = spec.reverse;
  for (int c = 0; c < b.C; c++) {
    b.params.pad[c] = pad[c];
    b.params.mean[c] = mean[c];
    b.params.inv_std[c] = 1.f / std[c];
  }
  b.samples.resize(b.B);
  for (int s = 0; s < b.B; s++) {
    Size2 src[kMaxComponents];
    for (int j = 0; j < b.k; j++)
      src[j] = {src_hw[(s * b.k + j) * 2], src_hw[(s * b.k + j) * 2 + 1]};
    PlanCollage(b.samples[s], b.k, src, short_side + s * b.k, spec.max_size, flip + s * b.k);
    for (int j = 0; j < b.k; j++) b.samples[s].comp[j].src = images[s * b.k + j];
    AppendTaps(b.samples[s], b.interp, b.taps);
  }
  return b;
}

/** The CPU backend's rows (collage_stitch.cc's choice of path) into out[s]. */
void CpuRows(Batch b, void *const *out) {
  for (int s = 0; s < b.B; s++) b.samples[s].out = out[s];
  PadPixel pad(b.params);
  for (int s = 0; s < b.B; s++) {
    const CollageSample &cs = b.samples[s];
    if (!b.float_out && !b.chw && b.interp == Interp::kNearest) {
      NearestSpans spans(cs, b.params, true);
      StitchRowsU8(cs, b.params, pad, spans, 0, cs.out_h);
    } else if (!b.float_out && !b.chw) {
      LinearSpans spans(cs, b.params, true);
      StitchRowsU8(cs, b.params, pad, spans, 0, cs.out_h);
    } else {
      Dispatch(b.float_out, b.chw, b.interp, [&]<typename Out, bool kCHW, Interp kI>() {
        StitchRowsGeneric<Out, kCHW, kI>(cs, b.taps.data(), b.params, 0, cs.out_h);
      });
    }
  }
}

/** The launch grid, with the planted faults of the harness's own tests. */
LaunchGrid Grid(const Batch &b, int fault) {
  int mh = 0, mw = 0;
  for (const auto &s : b.samples) {
    mh = s.out_h > mh ? s.out_h : mh;
    mw = s.out_w > mw ? s.out_w : mw;
  }
  LaunchGrid g = MakeLaunchGrid(mh, mw, b.B);
  if (fault == kSkipRow) {  // a launch geometry one block row short
    if (g.grid_y > 1)
      g.grid_y--;
    else if (g.grid_x > 1)
      g.grid_x--;
  }
  return g;
}

/** Where buffers live: device memory for the GPU, host memory for the emulated launch. */
struct Memory {
  bool gpu;
  std::vector<void *> owned;
  cudaError_t error = cudaSuccess;

  void *Alloc(size_t bytes) {
    void *p = nullptr;
    if (gpu) {
      Check(cudaMalloc(&p, bytes ? bytes : 1));
    } else {
      p = std::malloc(bytes ? bytes : 1);
    }
    owned.push_back(p);
    return p;
  }
  void Fill(void *dst, uint8_t v, size_t bytes) {
    if (gpu)
      Check(cudaMemset(dst, v, bytes));
    else
      std::memset(dst, v, bytes);
  }
  void ToDevice(void *dst, const void *src, size_t bytes) {
    if (gpu)
      Check(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
    else
      std::memcpy(dst, src, bytes);
  }
  void ToHost(void *dst, const void *src, size_t bytes) {
    if (gpu)
      Check(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
    else
      std::memcpy(dst, src, bytes);
  }
  void Check(cudaError_t e) {
    if (e != cudaSuccess && error == cudaSuccess) error = e;
  }
  ~Memory() {
    for (void *p : owned) gpu ? (void)cudaFree(p) : std::free(p);
  }
};

/** A buffer of `bytes` followed by `guard` bytes of kGuardByte. */
struct Guarded {
  void *ptr;
  size_t bytes, guard;

  bool GuardIntact(Memory &m) const {
    if (!guard) return true;
    std::vector<uint8_t> tail(guard);
    m.ToHost(tail.data(), static_cast<uint8_t *>(ptr) + bytes, guard);
    for (uint8_t v : tail)
      if (v != kGuardByte) return false;
    return true;
  }
};

Guarded NewGuarded(Memory &m, size_t bytes, size_t guard) {
  Guarded g{m.Alloc(bytes + guard), bytes, guard};
  if (guard) m.Fill(static_cast<uint8_t *>(g.ptr) + bytes, kGuardByte, guard);
  return g;
}

}  // namespace
}  // namespace dst_dali

using namespace dst_dali;  // NOLINT: the C interface below

extern "C" {

/** The result of one run. */
struct RunReport {
  int guard_overwritten;   // allocations whose guard band changed
  int64_t sentinel_diffs;  // output bytes that differ between the two sentinel fills
  int cuda_error;          // the first CUDA error, 0 if none
  char message[256];
};

/** Out sizes (B x 2) and placements (B x k x 4: y0, x0, h, w), as the operator plans them. */
int dst_plan(const Spec *spec, const int32_t *src_hw, const float *short_side,
             const int32_t *flip, int32_t *out_hw, int32_t *placement) {
  std::vector<const uint8_t *> none(spec->B * spec->k, nullptr);
  float zero[kMaxChannels] = {0}, one[kMaxChannels] = {1, 1, 1, 1};
  Batch b = Plan(*spec, none.data(), src_hw, short_side, flip, zero, zero, one);
  for (int s = 0; s < b.B; s++) {
    out_hw[s * 2] = b.samples[s].out_h;
    out_hw[s * 2 + 1] = b.samples[s].out_w;
    for (int j = 0; j < b.k; j++) {
      const Component &c = b.samples[s].comp[j];
      int32_t *p = placement + (s * b.k + j) * 4;
      p[0] = c.y0;
      p[1] = c.x0;
      p[2] = c.h;
      p[3] = c.w;
    }
  }
  return 0;
}

/**
 * Runs one batch: mode 0 launches the kernel on the GPU, 1 replays the launch on the CPU. The
 * output of the first of two launches (outputs pre-filled with two different sentinels) goes to
 * out[s], the CPU backend's rows to ref[s]. guard: bytes after every allocation, checked after
 * the launches (0 under compute-sanitizer, whose own padding then sees an overrun).
 */
int dst_run(const Spec *spec, int mode, const uint8_t *const *images, const int32_t *src_hw,
            const float *short_side, const int32_t *flip, const float *pad, const float *mean,
            const float *std, void *const *out, void *const *ref, int fault, int guard,
            RunReport *report) {
  std::memset(report, 0, sizeof(*report));
  Batch host = Plan(*spec, images, src_hw, short_side, flip, pad, mean, std);
  CpuRows(host, ref);

  Memory m{mode == 0};
  Batch dev = host;
  std::vector<Guarded> buffers;
  for (int s = 0; s < dev.B; s++)
    for (int j = 0; j < dev.k; j++) {
      Component &c = dev.samples[s].comp[j];
      size_t bytes = static_cast<size_t>(c.src_h) * c.src_w * dev.C;
      Guarded g = NewGuarded(m, bytes, guard);
      m.ToDevice(g.ptr, c.src, bytes);
      c.src = static_cast<const uint8_t *>(g.ptr);
      buffers.push_back(g);
    }
  std::vector<Guarded> outs;
  for (int s = 0; s < dev.B; s++) {
    outs.push_back(NewGuarded(m, dev.OutBytes(s), guard));
    dev.samples[s].out = outs.back().ptr;
  }
  if (fault == kWritePastEnd) dev.samples[dev.B - 1].out_h++;  // one row more than allocated
  Guarded taps = NewGuarded(m, dev.taps.size() * sizeof(AxisTap), guard);
  Guarded samples = NewGuarded(m, dev.samples.size() * sizeof(CollageSample), guard);
  m.ToDevice(taps.ptr, dev.taps.data(), taps.bytes);
  m.ToDevice(samples.ptr, dev.samples.data(), samples.bytes);
  buffers.push_back(taps);
  buffers.push_back(samples);
  const LaunchGrid g = Grid(dev, fault);

  std::vector<uint8_t> second;
  for (int run = 0; run < 2 && m.error == cudaSuccess; run++) {
    for (int s = 0; s < dev.B; s++) m.Fill(outs[s].ptr, kSentinel[run], outs[s].bytes);
    Dispatch(dev.float_out, dev.chw, dev.interp, [&]<typename Out, bool kCHW, Interp kI>() {
      const auto *sp = static_cast<const CollageSample *>(samples.ptr);
      const auto *tp = static_cast<const AxisTap *>(taps.ptr);
      if (m.gpu) {
        m.Check(LaunchStitch<Out, kCHW, kI>(g, 0, sp, tp, dev.params));
        m.Check(cudaDeviceSynchronize());
      } else {
        EmulateLaunch<Out, kCHW, kI>(sp, tp, dev.params, g);
      }
    });
    for (int s = 0; s < dev.B; s++) {
      if (run == 0) {
        m.ToHost(out[s], outs[s].ptr, outs[s].bytes);
        continue;
      }
      second.resize(outs[s].bytes);
      m.ToHost(second.data(), outs[s].ptr, outs[s].bytes);
      const uint8_t *first = static_cast<const uint8_t *>(out[s]);
      for (size_t i = 0; i < second.size(); i++) report->sentinel_diffs += first[i] != second[i];
    }
  }
  buffers.insert(buffers.end(), outs.begin(), outs.end());
  for (const Guarded &b : buffers) report->guard_overwritten += !b.GuardIntact(m);
  report->cuda_error = static_cast<int>(m.error);
  if (m.error != cudaSuccess)
    std::snprintf(report->message, sizeof(report->message), "%s", cudaGetErrorString(m.error));
  return m.error == cudaSuccess ? 0 : 1;
}

/** Maps n ltrb boxes (what == 0) or n (x, y) points (what == 1) of component j of one sample
 * (k components: sizes, short sides, flips) into the collage, as the operator's plan does. */
int dst_map(const Spec *spec, const int32_t *src_hw, const float *short_side,
            const int32_t *flip, int j, int what, int n, const float *in, float *out) {
  Spec one = *spec;
  one.B = 1;
  std::vector<const uint8_t *> none(spec->k, nullptr);
  float zero[kMaxChannels] = {0}, unit[kMaxChannels] = {1, 1, 1, 1};
  Batch b = Plan(one, none.data(), src_hw, short_side, flip, zero, zero, unit);
  const Component &c = b.samples[0].comp[j];
  for (int i = 0; i < n; i++) {
    if (what == 0) {
      MapBox(c, in + i * 4, out + i * 4);
    } else {
      out[i * 2] = MapX(c, in[i * 2]);
      out[i * 2 + 1] = MapY(c, in[i * 2 + 1]);
    }
  }
  return 0;
}

/** Writes why a driver for CUDA `driver` cannot run this build (runtime CUDART_VERSION, or
 * `runtime` where > 0), or nothing; returns the message's length. */
int dst_driver_floor(int driver, int runtime, char *message, int len) {
  std::string error = DriverFloorError(driver, runtime > 0 ? runtime : CUDART_VERSION);
  std::snprintf(message, len, "%s", error.c_str());
  return static_cast<int>(error.size());
}

/** The GPU's name and the driver's and runtime's versions; -1 when no GPU is usable. */
int dst_device(char *name, int len, int *driver, int *runtime) {
  *driver = *runtime = 0;
  cudaDriverGetVersion(driver);
  cudaRuntimeGetVersion(runtime);
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    return -1;
  }
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, 0) != cudaSuccess) return -1;
  std::snprintf(name, len, "%s (sm_%d%d, %.0f GiB)", prop.name, prop.major, prop.minor,
                prop.totalGlobalMem / double(1 << 30));
  return 0;
}

/**
 * Times the kernel alone on the GPU: CUDA events around `repeats` launches after warm-up, and
 * around as many device-to-device copies of the bytes the kernel moves. result: kernel ms a
 * launch, copy ms a copy, output bytes, bytes of the source rows the kernel reads.
 */
int dst_time(const Spec *spec, const uint8_t *const *images, const int32_t *src_hw,
             const float *short_side, const int32_t *flip, const float *pad, const float *mean,
             const float *std, int repeats, double *result, RunReport *report) {
  std::memset(report, 0, sizeof(*report));
  Batch dev = Plan(*spec, images, src_hw, short_side, flip, pad, mean, std);
  Memory m{true};
  double read = 0, written = 0;
  for (int s = 0; s < dev.B; s++) {
    CollageSample &cs = dev.samples[s];
    for (int j = 0; j < dev.k; j++) {
      Component &c = cs.comp[j];
      std::set<int> rows;  // the source rows the component's output rows sample
      for (int ly = 0; ly < c.h; ly++) {
        rows.insert(dev.taps[c.ytaps + ly].i0);
        rows.insert(dev.taps[c.ytaps + ly].i1);
      }
      read += static_cast<double>(rows.size()) * c.src_w * dev.C;
      size_t bytes = static_cast<size_t>(c.src_h) * c.src_w * dev.C;
      void *p = m.Alloc(bytes);
      m.ToDevice(p, c.src, bytes);
      c.src = static_cast<const uint8_t *>(p);
    }
    written += dev.OutBytes(s);
    cs.out = m.Alloc(dev.OutBytes(s));
  }
  void *taps = m.Alloc(dev.taps.size() * sizeof(AxisTap));
  void *samples = m.Alloc(dev.samples.size() * sizeof(CollageSample));
  m.ToDevice(taps, dev.taps.data(), dev.taps.size() * sizeof(AxisTap));
  m.ToDevice(samples, dev.samples.data(), dev.samples.size() * sizeof(CollageSample));
  const size_t copy_bytes = static_cast<size_t>(read + written) / 2;  // read + write = bytes
  void *copy_src = m.Alloc(copy_bytes), *copy_dst = m.Alloc(copy_bytes);
  m.Fill(copy_src, 1, copy_bytes);
  const LaunchGrid g = Grid(dev, kNoFault);
  cudaEvent_t t0, t1;
  m.Check(cudaEventCreate(&t0));
  m.Check(cudaEventCreate(&t1));
  float kernel_ms = 0, copy_ms = 0;
  Dispatch(dev.float_out, dev.chw, dev.interp, [&]<typename Out, bool kCHW, Interp kI>() {
    auto launch = [&]() {
      m.Check(LaunchStitch<Out, kCHW, kI>(g, 0, static_cast<const CollageSample *>(samples),
                                          static_cast<const AxisTap *>(taps), dev.params));
    };
    for (int i = 0; i < 5; i++) launch();
    m.Check(cudaEventRecord(t0));
    for (int i = 0; i < repeats; i++) launch();
    m.Check(cudaEventRecord(t1));
    m.Check(cudaEventSynchronize(t1));
    m.Check(cudaEventElapsedTime(&kernel_ms, t0, t1));
  });
  for (int i = 0; i < 5; i++)
    m.Check(cudaMemcpy(copy_dst, copy_src, copy_bytes, cudaMemcpyDeviceToDevice));
  m.Check(cudaEventRecord(t0));
  for (int i = 0; i < repeats; i++)
    m.Check(cudaMemcpyAsync(copy_dst, copy_src, copy_bytes, cudaMemcpyDeviceToDevice));
  m.Check(cudaEventRecord(t1));
  m.Check(cudaEventSynchronize(t1));
  m.Check(cudaEventElapsedTime(&copy_ms, t0, t1));
  cudaEventDestroy(t0);
  cudaEventDestroy(t1);
  result[0] = kernel_ms / repeats;
  result[1] = copy_ms / repeats;
  result[2] = written;
  result[3] = read;
  report->cuda_error = static_cast<int>(m.error);
  if (m.error != cudaSuccess)
    std::snprintf(report->message, sizeof(report->message), "%s", cudaGetErrorString(m.error));
  return m.error == cudaSuccess ? 0 : 1;
}

}  // extern "C"
