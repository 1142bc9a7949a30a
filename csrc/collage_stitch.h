// CollageStitch: the DST collage as one DALI operator (schema and CPU backend in
// collage_stitch.cc, GPU backend in collage_stitch.cu).
//
// Inputs, k = n*n components (each a batch of B samples), in this order:
//   images[k]  HWC uint8                                  (GPU or CPU, matching the backend)
//   boxes[k]   (N, 4) float ltrb, source pixels           (CPU; optional)
//   labels[k]  (N,) or (N, 1) int32                       (CPU; with boxes)
//   polygons[k] (P, 3) int32 [box index, first vertex, one past last vertex]  (CPU; optional)
//   vertices[k] (V, 2) float (x, y), source pixels        (CPU; with polygons)
// i.e. k, 3k or 5k inputs, the layout of DALI's COCO reader with ltrb=True, polygon_masks=True.
// Sample b of the output is the collage of sample b of every component input. With plan_only
// (CPU), each image input is the image's shape instead, (H, W, C), and no pixel is made.
//
// Outputs:
//   0 collage   HWC uint8, or CHW/HWC float normalized with mean/std
//   1 boxes     (M, 4) float ltrb, collage pixels
//   2 labels    (M,) int32
//   3 polygons  (Q, 3) int32, box index into output 1
//   4 vertices  (W, 2) float, collage pixels
//   5 origin    (M, 2) int32 [component, input box index]: an input box missing here was
//               dropped as degenerate (empty before or after scaling)
//   6 placement (k, 4) int32 [y0, x0, h, w] of each component's pixels in the collage
//
// Host-side planning (sizes, placement, boxes) is done in SetupImpl for both backends: the
// output shapes depend on it, and the annotations come from the reader on the host anyway, so
// remapping a few hundred boxes there is cheaper than a device round trip.
#ifndef DST_DALI_COLLAGE_STITCH_H_
#define DST_DALI_COLLAGE_STITCH_H_

#include <time.h>

#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "collage_geometry.h"
#include "collage_kernel.h"
#include "dali/core/format.h"
#include "dali/core/span.h"
#include "dali/core/static_switch.h"
#include "dali/pipeline/operator/checkpointing/stateless_operator.h"
#include "dali/pipeline/operator/common.h"
#include "dali/pipeline/operator/operator.h"

namespace dst_dali {

/** The calling thread's CPU time, in nanoseconds. */
inline uint64_t ThreadCpuNs() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<uint64_t>(t.tv_sec) * 1000000000ull + t.tv_nsec;
}

/**
 * Adds to the process-wide totals that say where a pipeline's CPU goes (host_cpu.cc, read
 * from Python with dst_dali.host_cpu_stats): host CPU time of runs with k components
 * (planning and, on the CPU backend, every pixel task), batches and samples.
 */
void RecordHostCpu(int k, uint64_t ns, int batches, int samples);

/** Annotations of one output sample, laid out as the outputs want them. */
struct SampleAnnotations {
  std::vector<float> boxes;      // 4 per box
  std::vector<int32_t> labels;
  std::vector<int32_t> polygons;  // 3 per polygon
  std::vector<float> vertices;   // 2 per vertex
  std::vector<int32_t> origin;   // 2 per box
  std::vector<int32_t> placement;  // 4 per component
  void clear() {
    boxes.clear();
    labels.clear();
    polygons.clear();
    vertices.clear();
    origin.clear();
    placement.clear();
  }
};

/** Calls copy(output index, member) for each annotation output, in the outputs' order. */
template <typename F>
void ForEachAnnotationOutput(F &&copy) {
  copy(1, &SampleAnnotations::boxes);
  copy(2, &SampleAnnotations::labels);
  copy(3, &SampleAnnotations::polygons);
  copy(4, &SampleAnnotations::vertices);
  copy(5, &SampleAnnotations::origin);
  copy(6, &SampleAnnotations::placement);
}

/** Fails, naming the driver found and the one needed, where the CUDA driver is older than the
 * runtime the GPU backend was built with (collage_stitch.cu). */
void CheckCudaDriver();

/** Calls f.template operator()<Out, kCHW, kInterp>() for the runtime choice of the three. */
template <typename F>
void DispatchPixelFormat(bool float_out, bool chw, Interp interp, F &&f) {
  BOOL_SWITCH(float_out, kFloat, (
    using Out = std::conditional_t<kFloat, float, uint8_t>;
    BOOL_SWITCH(chw, kCHW, (
      VALUE_SWITCH(interp, kInterp, (Interp::kNearest, Interp::kLinear), (
        f.template operator()<Out, kCHW, kInterp>();
      ), (DALI_FAIL("CollageStitch: unknown interpolation")));
    ));
  ));
}

// Stateless (its randomness comes in as arguments), so DALI's checkpointing skips it.
template <typename Backend>
class CollageStitch : public dali::StatelessOperator<Backend> {
 public:
  explicit CollageStitch(const dali::OpSpec &spec) : dali::StatelessOperator<Backend>(spec) {
    k_ = spec.template GetArgument<int>("k");
    n_ = GridSide(k_);
    DALI_ENFORCE(n_ > 0, dali::make_string("CollageStitch: argument k=", k_,
                                           " must be a square number of components (1, 4, 9 "
                                           "or 16), so that they tile a square grid"));
    max_size_ = spec.template GetArgument<float>("max_size");
    DALI_ENFORCE(max_size_ > 0, dali::make_string("CollageStitch: argument max_size=", max_size_,
                                                  " must be positive"));
    std::string interp = spec.template GetArgument<std::string>("interp");
    DALI_ENFORCE(interp == "nearest" || interp == "linear",
                 dali::make_string("CollageStitch: argument interp='", interp,
                                   "' must be 'nearest' or 'linear'"));
    interp_ = interp == "nearest" ? Interp::kNearest : Interp::kLinear;
    auto dtype = spec.template GetArgument<dali::DALIDataType>("dtype");
    DALI_ENFORCE(dtype == ::DALI_UINT8 || dtype == ::DALI_FLOAT,
                 "CollageStitch: argument dtype must be types.UINT8 or types.FLOAT");
    float_out_ = dtype == ::DALI_FLOAT;
    std::string layout = spec.template GetArgument<std::string>("output_layout");
    DALI_ENFORCE(layout == "HWC" || layout == "CHW",
                 dali::make_string("CollageStitch: argument output_layout='", layout,
                                   "' must be 'HWC' or 'CHW'"));
    chw_ = layout == "CHW";
    reverse_channels_ = spec.template GetArgument<bool>("reverse_channels");
    pad_ = spec.template GetRepeatedArgument<float>("pad_value");
    mean_ = spec.template GetRepeatedArgument<float>("mean");
    std_ = spec.template GetRepeatedArgument<float>("std");
    for (float s : std_)
      DALI_ENFORCE(s != 0.f, "CollageStitch: argument std must not contain 0");
    if (!float_out_) {
      bool identity = true;
      for (float m : mean_) identity = identity && m == 0.f;
      for (float s : std_) identity = identity && s == 1.f;
      DALI_ENFORCE(identity, "CollageStitch: mean/std normalization needs dtype=types.FLOAT");
    }
    box_tolerance_ = spec.template GetArgument<float>("box_tolerance");
    min_box_size_ = spec.template GetArgument<float>("min_box_size");
    emulate_gpu_launch_ = spec.template GetArgument<bool>("_emulate_gpu_launch");
    portable_cpu_ = spec.template GetArgument<bool>("_portable_cpu");
    plan_only_ = spec.template GetArgument<bool>("plan_only");
    if constexpr (std::is_same_v<Backend, dali::GPUBackend>) {
      DALI_ENFORCE(!plan_only_, "CollageStitch: plan_only is for the CPU backend (it plans on "
                                "the host, for a GPU graph's annotations)");
      CheckCudaDriver();
    }
  }

 protected:
  bool SetupImpl(std::vector<dali::OutputDesc> &output_desc, const dali::Workspace &ws) override {
    uint64_t start = ThreadCpuNs();
    Plan(ws);
    int B = samples_.size();
    output_desc.resize(7);
    dali::TensorListShape<> img(B, 3), boxes(B, 2), labels(B, 1), polys(B, 2), verts(B, 2),
        origin(B, 2), placement(B, 2);
    for (int s = 0; s < B; s++) {
      const CollageSample &c = samples_[s];
      const int64_t h = plan_only_ ? 0 : c.out_h, w = plan_only_ ? 0 : c.out_w;
      if (chw_)
        img.set_tensor_shape(s, {params_.channels, h, w});
      else
        img.set_tensor_shape(s, {h, w, params_.channels});
      const SampleAnnotations &a = annotations_[s];
      int64_t nbox = a.labels.size();
      boxes.set_tensor_shape(s, {nbox, 4});
      labels.set_tensor_shape(s, {nbox});
      polys.set_tensor_shape(s, {static_cast<int64_t>(a.polygons.size() / 3), 3});
      verts.set_tensor_shape(s, {static_cast<int64_t>(a.vertices.size() / 2), 2});
      origin.set_tensor_shape(s, {nbox, 2});
      placement.set_tensor_shape(s, {k_, 4});
    }
    output_desc[0] = {img, float_out_ ? ::DALI_FLOAT : ::DALI_UINT8};
    output_desc[1] = {boxes, ::DALI_FLOAT};
    output_desc[2] = {labels, ::DALI_INT32};
    output_desc[3] = {polys, ::DALI_INT32};
    output_desc[4] = {verts, ::DALI_FLOAT};
    output_desc[5] = {origin, ::DALI_INT32};
    output_desc[6] = {placement, ::DALI_INT32};
    RecordHostCpu(k_, ThreadCpuNs() - start, 0, 0);
    return true;
  }

  void RunImpl(dali::Workspace &ws) override;
  void Stitch(dali::Workspace &ws);  // the CPU backend's pixels

  /** Points every component at its input sample and every collage at its output sample. */
  void BindPointers(dali::Workspace &ws) {
    auto &out = ws.template Output<Backend>(0);
    out.SetLayout(chw_ ? "CHW" : "HWC");
    for (size_t s = 0; s < samples_.size(); s++) {
      samples_[s].out = out.raw_mutable_tensor(s);
      for (int j = 0; j < k_; j++)
        samples_[s].comp[j].src = ws.template Input<Backend>(j).template tensor<uint8_t>(s);
    }
  }

  /** The batch's tap table (AppendTaps), for the paths that sample pixel by pixel. */
  const std::vector<AxisTap> &Taps() {
    taps_.clear();
    for (auto &s : samples_) AppendTaps(s, interp_, taps_);
    return taps_;
  }

  /** Max output height and width of the batch, for the launch grid. */
  Size2 MaxOutputSize() const {
    Size2 m{0, 0};
    for (const auto &s : samples_) {
      if (s.out_h > m.h) m.h = s.out_h;
      if (s.out_w > m.w) m.w = s.out_w;
    }
    return m;
  }

  int k_, n_;
  float max_size_;
  Interp interp_;
  bool float_out_, chw_, reverse_channels_;
  std::vector<float> pad_, mean_, std_;
  float box_tolerance_, min_box_size_;
  bool emulate_gpu_launch_;
  bool portable_cpu_;  // the CPU backend without SIMD, as on CPUs other than x86-64
  bool plan_only_;     // image inputs are shapes; no pixels

  PixelParams params_{};
  std::vector<CollageSample> samples_;
  std::vector<AxisTap> taps_;
  std::vector<SampleAnnotations> annotations_;

 private:
  /** Per-sample, per-component values of argument `name` (1 or k values a sample, as a
   * constant or an argument input). */
  template <typename T>
  std::vector<T> ComponentArg(const dali::Workspace &ws, const char *name, int B) const {
    std::vector<T> out(static_cast<size_t>(B) * k_);
    for (int s = 0; s < B; s++)
      dali::GetGeneralizedArg<T>(dali::make_span(out.data() + s * k_, k_), name, s,
                                 this->spec_, ws);
    return out;
  }

  void Plan(const dali::Workspace &ws);
  void CheckInputs(const dali::Workspace &ws) const;
  dali::TensorShape<3> ImageShape(const dali::Workspace &ws, int j, int s) const;
  void PlanPixelParams(int channels);
  void PlanSample(const dali::Workspace &ws, int s, const float *short_side, const int *flip);
  void PlanAnnotations(const dali::Workspace &ws, int s);
  std::vector<int32_t> MapBoxes(const dali::Workspace &ws, int s, int j);
  void MapPolygons(const dali::Workspace &ws, int s, int j,
                   const std::vector<int32_t> &new_index);
};

/** "sample 3 ('000000000009.jpg')": the reader's file name, when the input carries one. */
template <typename Backend>
std::string SampleName(const dali::TensorList<Backend> &t, int s) {
  const std::string &src = t.GetMeta(s).GetSourceInfo();
  return src.empty() ? dali::make_string("sample ", s)
                     : dali::make_string("sample ", s, " ('", src, "')");
}

/** Sizes, placement, pixel parameters and annotations of the batch: everything but pixels. */
template <typename Backend>
void CollageStitch<Backend>::Plan(const dali::Workspace &ws) {
  CheckInputs(ws);
  const int B = ws.GetInputBatchSize(0);
  const int C = ImageShape(ws, 0, 0)[2];
  DALI_ENFORCE(C >= 1 && C <= kMaxChannels,
               dali::make_string("CollageStitch: images have ", C, " channels; 1 to ",
                                 kMaxChannels, " are supported"));
  PlanPixelParams(C);
  const std::vector<float> short_side = ComponentArg<float>(ws, "short_side", B);
  const std::vector<int> flip = ComponentArg<int>(ws, "flip", B);
  samples_.resize(B);
  annotations_.resize(B);
  for (int s = 0; s < B; s++) {
    PlanSample(ws, s, &short_side[s * k_], &flip[s * k_]);
    PlanAnnotations(ws, s);
  }
}

/** The input count, and each input's device, type and layout. */
template <typename Backend>
void CollageStitch<Backend>::CheckInputs(const dali::Workspace &ws) const {
  const int num_inputs = ws.NumInput();
  DALI_ENFORCE(num_inputs == k_ || num_inputs == 3 * k_ || num_inputs == 5 * k_,
               dali::make_string("CollageStitch: got ", num_inputs, " inputs for k=", k_,
                                 "; expected k images, optionally followed by k boxes and k "
                                 "labels, optionally followed by k polygons and k vertices"));
  DALI_ENFORCE(ws.GetInputBatchSize(0) > 0,
               "CollageStitch: empty batch; every input needs at least one sample");
  for (int j = 0; j < k_; j++) {
    DALI_ENFORCE(ws.template InputIsType<Backend>(j),
                 dali::make_string("CollageStitch: image input ", j, " is on the wrong device ",
                                   "(the GPU operator takes GPU images, the CPU one CPU images)"));
    const auto &in = ws.template Input<Backend>(j);
    if (plan_only_) {
      DALI_ENFORCE((in.type() == ::DALI_INT64 || in.type() == ::DALI_INT32) &&
                   in.sample_dim() == 1,
                   dali::make_string("CollageStitch: with plan_only, image input ", j,
                                     " must be the images' shapes, (H, W, C) int64 or int32 a "
                                     "sample as fn.peek_image_shape gives them; got type ",
                                     in.type(), " with ", in.sample_dim(), " dimensions"));
      continue;
    }
    DALI_ENFORCE(in.type() == ::DALI_UINT8,
                 dali::make_string("CollageStitch: image input ", j, " has type ", in.type(),
                                   "; decoded uint8 images are expected"));
    DALI_ENFORCE(in.sample_dim() == 3,
                 dali::make_string("CollageStitch: image input ", j, " has ", in.sample_dim(),
                                   " dimensions; HWC images are expected"));
    const auto &layout = in.GetLayout();
    DALI_ENFORCE(layout.empty() || layout == "HWC",
                 dali::make_string("CollageStitch: image input ", j, " has layout '",
                                   layout.str(), "'; HWC is expected"));
  }
  for (int j = k_; j < num_inputs; j++)
    DALI_ENFORCE(ws.template InputIsType<dali::CPUBackend>(j),
                 dali::make_string("CollageStitch: annotation input ", j,
                                   " must be on the CPU (boxes, labels, polygons, vertices)"));
}

/** (H, W, C) of component j's image in sample s: its shape, or with plan_only its values. */
template <typename Backend>
dali::TensorShape<3> CollageStitch<Backend>::ImageShape(const dali::Workspace &ws, int j,
                                                        int s) const {
  const auto &in = ws.template Input<Backend>(j);
  if constexpr (std::is_same_v<Backend, dali::CPUBackend>) {
    if (plan_only_) {
      DALI_ENFORCE(in.shape()[s].num_elements() == 3,
                   dali::make_string("CollageStitch: image input ", j, ", ", SampleName(in, s),
                                     " holds ", in.shape()[s].num_elements(),
                                     " values; plan_only takes (H, W, C)"));
      dali::TensorShape<3> shape;
      TYPE_SWITCH(in.type(), dali::type2id, T, (int32_t, int64_t), (
        const T *v = in.template tensor<T>(s);
        shape = {v[0], v[1], v[2]};
      ), (DALI_FAIL("CollageStitch: plan_only takes int32 or int64 shapes")));  // NOLINT
      return shape;
    }
  }
  return in.shape()[s].template to_static<3>();
}

/** Channel count, pad value and normalization, 1 or C values each. */
template <typename Backend>
void CollageStitch<Backend>::PlanPixelParams(int C) {
  auto per_channel = [&](const std::vector<float> &v, const char *name, float *dst) {
    DALI_ENFORCE(v.size() == 1 || static_cast<int>(v.size()) == C,
                 dali::make_string("CollageStitch: argument ", name, " has ", v.size(),
                                   " values; give 1 or one per channel (", C, ")"));
    for (int c = 0; c < C; c++) dst[c] = v[v.size() == 1 ? 0 : c];
  };
  params_.channels = C;
  params_.reverse_channels = reverse_channels_;
  per_channel(pad_, "pad_value", params_.pad);
  per_channel(mean_, "mean", params_.mean);
  per_channel(std_, "std", params_.inv_std);
  for (int c = 0; c < C; c++) params_.inv_std[c] = 1.f / params_.inv_std[c];
}

/** Output size and component placement of sample s, from its k images' sizes. */
template <typename Backend>
void CollageStitch<Backend>::PlanSample(const dali::Workspace &ws, int s,
                                        const float *short_side, const int *flip) {
  const int C = params_.channels;
  Size2 src[kMaxComponents];
  for (int j = 0; j < k_; j++) {
    auto shape = ImageShape(ws, j, s);
    const std::string name = SampleName(ws.template Input<Backend>(j), s);
    DALI_ENFORCE(shape[0] > 0 && shape[1] > 0,
                 dali::make_string("CollageStitch: image input ", j, ", ", name, " has size ",
                                   shape[0], "x", shape[1],
                                   "; zero-size images cannot be resized"));
    DALI_ENFORCE(shape[2] == C,
                 dali::make_string("CollageStitch: image input ", j, ", ", name, " has ",
                                   shape[2], " channels, but image input 0, sample 0 has ", C,
                                   "; decode every image to the same channel count"));
    DALI_ENFORCE(short_side[j] > 0 && std::isfinite(short_side[j]),
                 dali::make_string("CollageStitch: short_side=", short_side[j], " for sample ",
                                   s, ", component ", j, " must be positive"));
    src[j] = {static_cast<int>(shape[0]), static_cast<int>(shape[1])};
  }
  PlanCollage(samples_[s], k_, src, short_side, max_size_, flip);
}

/** Placement, boxes, labels, origin and polygons of sample s, in collage pixels. */
template <typename Backend>
void CollageStitch<Backend>::PlanAnnotations(const dali::Workspace &ws, int s) {
  SampleAnnotations &a = annotations_[s];
  a.clear();
  for (int j = 0; j < k_; j++) {
    const Component &c = samples_[s].comp[j];
    a.placement.insert(a.placement.end(), {c.y0, c.x0, c.h, c.w});
  }
  if (ws.NumInput() == k_) return;
  for (int j = 0; j < k_; j++) {
    std::vector<int32_t> new_index = MapBoxes(ws, s, j);
    if (ws.NumInput() == 5 * k_) MapPolygons(ws, s, j, new_index);
  }
}

/** "CollageStitch: component 1, sample 3 ('x.jpg')": where an annotation error is. */
template <typename Backend>
std::string ComponentName(const dali::Workspace &ws, int s, int j) {
  return dali::make_string("CollageStitch: component ", j, ", ",
                           SampleName(ws.template Input<Backend>(j), s));
}

/** Appends component j's kept boxes, labels and origins to sample s's annotations; returns
 * each input box's index among the output boxes, -1 where it was dropped. */
template <typename Backend>
std::vector<int32_t> CollageStitch<Backend>::MapBoxes(const dali::Workspace &ws, int s, int j) {
  SampleAnnotations &a = annotations_[s];
  const Component &c = samples_[s].comp[j];
  const auto &boxes = ws.template Input<dali::CPUBackend>(k_ + j);
  const auto &labels = ws.template Input<dali::CPUBackend>(2 * k_ + j);
  auto where = [&]() { return ComponentName<Backend>(ws, s, j); };
  DALI_ENFORCE(boxes.type() == ::DALI_FLOAT,
               dali::make_string(where(), ": boxes must be float, got ", boxes.type()));
  DALI_ENFORCE(labels.type() == ::DALI_INT32,
               dali::make_string(where(), ": labels must be int32, got ", labels.type()));
  auto bshape = boxes.shape()[s];
  int64_t nbox = bshape.num_elements() / 4;
  DALI_ENFORCE(bshape.num_elements() == 0 || (bshape.size() == 2 && bshape[1] == 4),
               dali::make_string(where(), ": boxes must have shape (N, 4), got ", bshape));
  DALI_ENFORCE(labels.shape()[s].num_elements() == nbox,
               dali::make_string(where(), ": ", labels.shape()[s].num_elements(),
                                 " labels for ", nbox, " boxes"));
  const float *in = boxes.template tensor<float>(s);
  const int32_t *lab = labels.template tensor<int32_t>(s);
  const float lim[4] = {0.f, 0.f, static_cast<float>(c.src_w), static_cast<float>(c.src_h)};
  std::vector<int32_t> new_index(nbox, -1);
  for (int64_t b = 0; b < nbox; b++) {
    float box[4];
    for (int e = 0; e < 4; e++) {
      box[e] = in[b * 4 + e];
      DALI_ENFORCE(std::isfinite(box[e]),
                   dali::make_string(where(), ": box ", b, " has a non-finite coordinate"));
    }
    bool inside = box[0] >= -box_tolerance_ && box[1] >= -box_tolerance_ &&
                  box[2] <= lim[2] + box_tolerance_ && box[3] <= lim[3] + box_tolerance_;
    DALI_ENFORCE(inside, dali::make_string(where(), ": box ", b, " [", box[0], ", ", box[1],
                                           ", ", box[2], ", ", box[3],
                                           "] (ltrb) lies outside its ", c.src_w, "x", c.src_h,
                                           " image by more than box_tolerance=",
                                           box_tolerance_, " px"));
    // Within tolerance: clip, as detectron2 clips boxes to the image.
    box[0] = box[0] < 0.f ? 0.f : box[0];
    box[1] = box[1] < 0.f ? 0.f : box[1];
    box[2] = box[2] > lim[2] ? lim[2] : box[2];
    box[3] = box[3] > lim[3] ? lim[3] : box[3];
    if (box[2] - box[0] <= 0.f || box[3] - box[1] <= 0.f) continue;  // empty: dropped
    float mapped[4];
    MapBox(c, box, mapped);
    if (!BoxKept(mapped, min_box_size_)) continue;  // degenerate after scaling: dropped
    new_index[b] = a.labels.size();
    a.boxes.insert(a.boxes.end(), mapped, mapped + 4);
    a.labels.push_back(lab[b]);
    a.origin.insert(a.origin.end(), {j, static_cast<int32_t>(b)});
  }
  return new_index;
}

/** Appends component j's polygons whose box was kept, their vertices mapped with it. */
template <typename Backend>
void CollageStitch<Backend>::MapPolygons(const dali::Workspace &ws, int s, int j,
                                         const std::vector<int32_t> &new_index) {
  SampleAnnotations &a = annotations_[s];
  const Component &c = samples_[s].comp[j];
  const auto &polys = ws.template Input<dali::CPUBackend>(3 * k_ + j);
  const auto &verts = ws.template Input<dali::CPUBackend>(4 * k_ + j);
  DALI_ENFORCE(polys.type() == ::DALI_INT32 && verts.type() == ::DALI_FLOAT,
               dali::make_string(ComponentName<Backend>(ws, s, j),
                                 ": polygons must be int32 and vertices float"));
  const int64_t nbox = new_index.size();
  const int64_t npoly = polys.shape()[s].num_elements() / 3;
  const int64_t nvert = verts.shape()[s].num_elements() / 2;
  const int32_t *p = polys.template tensor<int32_t>(s);
  const float *v = verts.template tensor<float>(s);
  for (int64_t q = 0; q < npoly; q++) {
    int32_t box = p[q * 3], first = p[q * 3 + 1], last = p[q * 3 + 2];
    DALI_ENFORCE(box >= 0 && box < nbox && first >= 0 && first <= last && last <= nvert,
                 dali::make_string(ComponentName<Backend>(ws, s, j), ": polygon ", q, " [", box,
                                   ", ", first, ", ", last, "] does not index its ", nbox,
                                   " boxes and ", nvert, " vertices"));
    if (new_index[box] < 0) continue;  // its box was dropped
    int32_t start = a.vertices.size() / 2;
    for (int32_t i = first; i < last; i++)
      a.vertices.insert(a.vertices.end(), {MapX(c, v[i * 2]), MapY(c, v[i * 2 + 1])});
    a.polygons.insert(a.polygons.end(),
                      {new_index[box], start, static_cast<int32_t>(a.vertices.size() / 2)});
  }
}

}  // namespace dst_dali

#endif  // DST_DALI_COLLAGE_STITCH_H_
