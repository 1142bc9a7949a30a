// CollageStitch: the schema and the CPU backend.
#include "collage_stitch.h"

#include <algorithm>
#include <memory>
#include <vector>

#include "collage_rows_cpu.h"

namespace dst_dali {

namespace {

constexpr int kRowsPerTask = 64;

/** Calls f(sample, y_begin, y_end) for every band of kRowsPerTask output rows: a pool task. */
template <typename F>
void ForEachRowBand(const std::vector<CollageSample> &samples, F &&f) {
  for (int s = 0; s < static_cast<int>(samples.size()); s++)
    for (int y = 0; y < samples[s].out_h; y += kRowsPerTask)
      f(s, y, std::min(y + kRowsPerTask, samples[s].out_h));
}

/** Queues the uint8 HWC row tasks of the batch, with Spans' column tables built once a sample
 * and shared by its tasks until they have run. */
template <typename Spans, typename Timed>
void AddRowTasks(dali::ThreadPool &tp, const std::vector<CollageSample> &samples,
                 const PixelParams &p, bool simd, Timed &&timed) {
  auto spans = std::make_shared<std::vector<Spans>>();
  spans->reserve(samples.size());
  for (const CollageSample &s : samples) spans->emplace_back(s, p, simd);
  auto pad = std::make_shared<PadPixel>(p);
  ForEachRowBand(samples, [&](int s, int y, int y_end) {
    tp.AddWork(timed([&samples, &p, spans, pad, s, y, y_end](int) {
      StitchRowsU8(samples[s], p, *pad, (*spans)[s], y, y_end);
    }), static_cast<int64_t>(y_end - y) * samples[s].out_w);
  });
}

}  // namespace

/** The batch's pixels, in the thread pool's tasks. */
template <>
void CollageStitch<dali::CPUBackend>::Stitch(dali::Workspace &ws) {
  BindPointers(ws);
  const int B = samples_.size();
  auto &tp = ws.GetThreadPool();
  // every pool task adds its own CPU time: the pool's threads, not this one, do the pixels
  auto timed = [this](auto &&task) {
    return [this, task](int thread) {
      uint64_t t0 = ThreadCpuNs();
      task(thread);
      RecordHostCpu(k_, ThreadCpuNs() - t0, 0, 0);
    };
  };

  if (emulate_gpu_launch_) {
    Size2 m = MaxOutputSize();
    LaunchGrid grid = MakeLaunchGrid(m.h, m.w, B);
    const AxisTap *taps = Taps().data();
    DispatchPixelFormat(float_out_, chw_, interp_, [&]<typename Out, bool kCHW, Interp kI>() {
      EmulateLaunch<Out, kCHW, kI>(samples_.data(), taps, params_, grid);
    });
  } else if (!float_out_ && !chw_ && interp_ == Interp::kNearest) {
    AddRowTasks<NearestSpans>(tp, samples_, params_, !portable_cpu_, timed);
    tp.RunAll();
  } else if (!float_out_ && !chw_) {
    AddRowTasks<LinearSpans>(tp, samples_, params_, !portable_cpu_, timed);
    tp.RunAll();
  } else {
    const AxisTap *taps = Taps().data();
    DispatchPixelFormat(float_out_, chw_, interp_, [&]<typename Out, bool kCHW, Interp kI>() {
      ForEachRowBand(samples_, [&](int s, int y, int y_end) {
        tp.AddWork(timed([this, taps, s, y, y_end](int) {
          StitchRowsGeneric<Out, kCHW, kI>(samples_[s], taps, params_, y, y_end);
        }), static_cast<int64_t>(y_end - y) * samples_[s].out_w);
      });
      tp.RunAll();
    });
  }
}

template <>
void CollageStitch<dali::CPUBackend>::RunImpl(dali::Workspace &ws) {
  const uint64_t start = ThreadCpuNs();
  const int B = samples_.size();
  if (plan_only_)
    ws.Output<dali::CPUBackend>(0).SetLayout(chw_ ? "CHW" : "HWC");
  else
    Stitch(ws);
  ForEachAnnotationOutput([&](int idx, auto member) {
    auto &out = ws.Output<dali::CPUBackend>(idx);
    for (int s = 0; s < B; s++) {
      const auto &v = annotations_[s].*member;
      if (!v.empty()) std::memcpy(out.raw_mutable_tensor(s), v.data(), v.size() * sizeof(v[0]));
    }
  });
  // a plan's batch is counted by the GPU operator that stitches it; its CPU time is the batch's
  RecordHostCpu(k_, ThreadCpuNs() - start, plan_only_ ? 0 : 1, plan_only_ ? 0 : B);
}

}  // namespace dst_dali

// The DALI version the plugin was compiled against: dst_dali/op/plugin.py reads it from the
// library file before loading it, since a plugin built for another DALI crashes on load.
extern "C" __attribute__((visibility("default"), used)) const char dst_dali_build_info[] =
    "dst_dali-build-info: " DST_DALI_BUILD_INFO ";";

// The GPU backend's driver floor (DriverFloorError) for Python: the device choice
// (dst_dali/op/device.py) applies the rule the operator enforces, before torch or DALI touch
// CUDA. Writes the reason (empty when the driver runs the runtime) and returns its length.
extern "C" __attribute__((visibility("default"))) int dst_dali_driver_floor(int driver,
                                                                         int runtime,
                                                                         char *message,
                                                                         int len) {
  const std::string error = ::dst_dali::DriverFloorError(driver, runtime);
  if (len > 0) {
    const int n = std::min<int>(error.size(), len - 1);
    error.copy(message, n);
    message[n] = '\0';
  }
  return static_cast<int>(error.size());
}

DALI_REGISTER_OPERATOR(CollageStitch, ::dst_dali::CollageStitch<::dali::CPUBackend>, ::dali::CPU);

DALI_SCHEMA(CollageStitch)
    .DocStr(R"(Dynamic Scale Training collage: k = n*n images, each resized to 1/n of the size
detectron2's ResizeShortestEdge would give it (short side `short_side`, long side capped at
`max_size`), optionally mirrored, tiled into an n x n grid in one pass per output pixel; boxes,
labels and polygon vertices are remapped with them. k = 1 is a fused resize + flip.

Inputs: k images (HWC uint8), then optionally k boxes (N, 4 ltrb float) and k labels (int32),
then optionally k polygons (P, 3 int32) and k vertices (V, 2 float), as DALI's COCO reader
gives them with ltrb=True, polygon_masks=True.

Outputs: collage, boxes, labels, polygons, vertices, origin (component, input box index) of
each output box, placement (y0, x0, h, w) of each component.)")
    .MakeStateless()
    .NumInput(1, 5 * ::dst_dali::kMaxComponents)
    .InputDevice(0, 5 * ::dst_dali::kMaxComponents, ::dali::InputDevice::MatchBackendOrCPU)
    .NumOutput(7)
    .AddOptionalArg("k", "Number of components, a square: 1, 4, 9 or 16.", 4)
    .AddArg("short_side",
            "Short side of each component's regular (k = 1) size: 1 or k values a sample.",
            ::DALI_FLOAT_VEC, true)
    .AddOptionalArg("max_size", "Cap on the long side of the regular size.", 1333.f)
    .AddOptionalArg("flip", "Mirror components horizontally: 1 or k values (0/1) a sample.",
                    std::vector<int>{0}, true)
    .AddOptionalArg("interp", "'nearest' (the method's definition) or 'linear'.", "nearest")
    .AddOptionalArg("pad_value", "Value of pixels not covered by a component, in output units; "
                    "1 or one per channel.", std::vector<float>{0.f})
    .AddOptionalTypeArg("dtype", "Output type: UINT8, or FLOAT for normalized output.",
                        ::DALI_UINT8)
    .AddOptionalArg("output_layout", "HWC or CHW.", "HWC")
    .AddOptionalArg("reverse_channels", "Output channel c is input channel C-1-c: RGB in, BGR "
                    "out (DALI's CPU decoder pays a conversion pass for BGR; here it is free).",
                    false)
    .AddOptionalArg("mean", "Subtracted from pixels (dtype=FLOAT); 1 or one per channel.",
                    std::vector<float>{0.f})
    .AddOptionalArg("std", "Pixels are divided by it (dtype=FLOAT); 1 or one per channel.",
                    std::vector<float>{1.f})
    .AddOptionalArg("box_tolerance", "Boxes may exceed their image by this many pixels (they "
                    "are clipped); farther out is an error.", 1.f)
    .AddOptionalArg("min_box_size", "Boxes whose width or height after mapping is not larger "
                    "are dropped (see the origin output).", 0.f)
    .AddOptionalArg("plan_only", "CPU only: everything but the pixels. The k image inputs are "
                    "then the images' shapes, (H, W, C) integers a sample as "
                    "fn.peek_image_shape gives them; output 0 is empty (no rows, no columns) and "
                    "outputs 1-6 are those of the same arguments on images of these shapes. A GPU "
                    "graph plans with it on the host, so its annotations need no copy back.",
                    false)
    .AddOptionalArg("_portable_cpu", "CPU only, for tests: no SIMD, the code CPUs other than "
                    "x86-64 run.", false)
    .AddOptionalArg("_emulate_gpu_launch", "CPU only, for tests: compute pixels by replaying "
                    "the CUDA kernel's launch grid with its per-thread function.", false);
