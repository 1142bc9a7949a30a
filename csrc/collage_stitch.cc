// CollageStitch: the schema and the CPU backend.
#include "collage_stitch.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#define DST_DALI_SHUFFLE_GATHER 1
#endif

namespace dst_dali {

namespace {

struct HostCpuTotals {
  std::atomic<uint64_t> ns{0}, batches{0}, samples{0};
};
HostCpuTotals host_cpu[kMaxComponents + 1];  // by k

constexpr int kRowsPerTask = 64;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "CopyGathered3 packs pixels assuming little-endian words");

/** Bilinear: a component's output column samples source elements x0 and x1 with weight fx. */
struct ColumnTap {
  int32_t x0, x1;
  float fx;
};

void FillPixels(uint8_t *dst, int count, const uint8_t *pad, int C, bool uniform) {
  if (count <= 0) return;
  if (uniform) {
    std::memset(dst, pad[0], static_cast<size_t>(count) * C);
    return;
  }
  for (int i = 0; i < count; i++, dst += C) std::memcpy(dst, pad, C);
}

template <int C, bool kReverse>
void CopyGathered(uint8_t *dst, const uint8_t *src_row, const int32_t *xoff, int w) {
  for (int i = 0; i < w; i++, dst += C) {
    const uint8_t *s = src_row + xoff[i];
    for (int c = 0; c < C; c++) dst[c] = s[kReverse ? C - 1 - c : c];
  }
}

/** The low 3 bytes of v as one pixel, channels reversed when asked. */
template <bool kReverse>
inline uint32_t Pixel3(uint32_t v) {
  v &= 0xFFFFFFu;
  return kReverse ? ((v & 0xFFu) << 16) | (v & 0xFF00u) | (v >> 16) : v;
}

/**
 * 3 channels: four pixels are four 4-byte loads packed into three 4-byte stores, instead of
 * twelve 1-byte moves. The 4th byte loaded must exist, which it does unless the source row is
 * the image's last one (then the plain loop does it all).
 */
template <bool kReverse>
void CopyGathered3(uint8_t *dst, const uint8_t *src_row, const int32_t *xoff, int w,
                   bool last_source_row) {
  int i = 0;
  if (!last_source_row) {
    for (; i + 4 <= w; i += 4, dst += 12) {
      uint32_t v[4];
      for (int j = 0; j < 4; j++) {
        std::memcpy(&v[j], src_row + xoff[i + j], 4);
        v[j] = Pixel3<kReverse>(v[j]);
      }
      // little-endian: pixel j's bytes are the low 3 bytes of v[j]
      uint32_t w0 = v[0] | (v[1] << 24);
      uint32_t w1 = (v[1] >> 8) | (v[2] << 16);
      uint32_t w2 = (v[2] >> 16) | (v[3] << 8);
      std::memcpy(dst, &w0, 4);
      std::memcpy(dst + 4, &w1, 4);
      std::memcpy(dst + 8, &w2, 4);
    }
  }
  CopyGathered<3, kReverse>(dst, src_row, xoff + i, w - i);
}

template <bool kReverse>
void CopyGathered(uint8_t *dst, const uint8_t *src_row, const int32_t *xoff, int w, int C,
                  bool last_source_row) {
  switch (C) {
    case 1: return CopyGathered<1, false>(dst, src_row, xoff, w);
    case 3: return CopyGathered3<kReverse>(dst, src_row, xoff, w, last_source_row);
    case 4: return CopyGathered<4, kReverse>(dst, src_row, xoff, w);
    default: return CopyGathered<2, kReverse>(dst, src_row, xoff, w);
  }
}

/**
 * The nearest gather of one component row as byte shuffles: the row's output bytes are cut
 * into chunks whose source bytes lie within 16 of each other, so one 16-byte load, one pshufb
 * and one 16-byte store make a chunk (about 5 pixels at the collage's usual 0.8x), where the
 * scalar gather pays a load per pixel. Planned once a sample from the column table; every row
 * of the component reuses the plan. Same source byte for every output byte as CopyGathered.
 */
struct ShuffleChunk {
  int32_t src;  // start of the 16-byte source window, in the row
  int32_t dst;  // first output byte; the store's 16 bytes end inside the row (see tail)
  uint8_t shuffle[16];
};

struct ShufflePlan {
  std::vector<ShuffleChunk> chunks;
  /** Source bytes of the last output bytes, from chunks' end on: a 16-byte store there would
   * run past the component, so they are moved one by one. */
  std::vector<int32_t> tail;
  bool usable = false;
};

bool CpuHasShuffle() {
#ifdef DST_DALI_SHUFFLE_GATHER
  static const bool has = __builtin_cpu_supports("ssse3");
  return has;
#else
  return false;
#endif
}

/** Plans a row of w pixels whose pixel i starts at source byte xoff[i] (C channels, output
 * channel c taken from source channel SourceChannel(c)) in a row of src_row_bytes. */
ShufflePlan PlanShuffle(const int32_t *xoff, int w, const PixelParams &p, int src_row_bytes) {
  ShufflePlan plan;
  const int C = p.channels, n = w * C;
  if (!CpuHasShuffle() || n < 16 || src_row_bytes < 16) return plan;
  auto source = [&](int e) { return xoff[e / C] + SourceChannel(p, e % C); };
  int e = 0;
  while (e + 16 <= n) {
    int lo = source(e), hi = lo, m = 1;
    for (; m < 16; m++) {
      int v = source(e + m);
      if (std::max(hi, v) - std::min(lo, v) > 15) break;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    // the window must stay inside the source row (it may be the image's last)
    ShuffleChunk c{std::min(lo, src_row_bytes - 16), e, {}};
    for (int j = 0; j < 16; j++)
      c.shuffle[j] = j < m ? static_cast<uint8_t>(source(e + j) - c.src) : 0x80;
    plan.chunks.push_back(c);
    e += m;  // this store's bytes past e + m are overwritten by the next chunk or the tail
  }
  for (; e < n; e++) plan.tail.push_back(source(e));
  plan.usable = true;
  return plan;
}

#ifdef DST_DALI_SHUFFLE_GATHER
__attribute__((target("ssse3")))
void ShuffleGather(uint8_t *dst, int n, const uint8_t *src_row, const uint8_t *next_src_row,
                   const ShufflePlan &plan) {
  for (const ShuffleChunk &c : plan.chunks) {
    // The next output row's source row is fetched while this one is shuffled: where a
    // downscale skips source rows, the hardware prefetcher loses the stream.
    _mm_prefetch(reinterpret_cast<const char *>(next_src_row + c.src), _MM_HINT_T0);
    __m128i window = _mm_loadu_si128(reinterpret_cast<const __m128i *>(src_row + c.src));
    __m128i shuffle = _mm_loadu_si128(reinterpret_cast<const __m128i *>(c.shuffle));
    _mm_storeu_si128(reinterpret_cast<__m128i *>(dst + c.dst),
                     _mm_shuffle_epi8(window, shuffle));
  }
  uint8_t *tail = dst + n - plan.tail.size();
  for (size_t e = 0; e < plan.tail.size(); e++) tail[e] = src_row[plan.tail[e]];
}
#endif

/**
 * The CPU fast paths for uint8 HWC output: row by row, each row a run of padding and component
 * spans, with per-component column tables built once a sample, so a pixel costs only its
 * sampling (nearest: shuffles where the CPU has them). Same arithmetic as StitchPixel
 * (NearestSource, LinearSource, Bilinear, Normalize, SourceColumnIndex), hence the same bytes;
 * with nearest, an output row whose source rows equal the previous row's is a memcpy of it
 * (every row twice or more on an upscale).
 */
class FastRowsU8 {
 public:
  FastRowsU8(const CollageSample &s, const PixelParams &p, Interp interp, bool simd)
      : s_(s), p_(p), interp_(interp) {
    const int C = p.channels;
    uniform_pad_ = true;
    for (int c = 0; c < C; c++) {
      pad_[c] = ConvertOut<uint8_t>(p.pad[c]);
      uniform_pad_ = uniform_pad_ && pad_[c] == pad_[0];
    }
    // Column tables: nearest keeps 4 bytes a column (the gather streams the table), linear
    // the two taps and their weight.
    for (int i = 0; i < s.k; i++) {
      const Component &c = s.comp[i];
      start_[i] = interp == Interp::kNearest ? offsets_.size() : taps_.size();
      for (int lx = 0; lx < c.w; lx++) {
        int sx = SourceColumnIndex(c, lx);
        if (interp == Interp::kNearest) {
          offsets_.push_back(NearestSource(sx, c.w, c.src_w) * C);
        } else {
          ColumnTap t;
          LinearSource(sx, c.w, c.src_w, t.x0, t.x1, t.fx);
          t.x0 *= C;
          t.x1 *= C;
          taps_.push_back(t);
        }
      }
      if (interp == Interp::kNearest && simd)
        shuffle_[i] = PlanShuffle(offsets_.data() + start_[i], c.w, p, c.src_w * C);
    }
  }

  void Run(int y_begin, int y_end) const {
    const int C = p_.channels;
    std::array<RowCache, kMaxComponents> caches;  // bilinear: per component, for this band
    const int64_t stride = static_cast<int64_t>(s_.out_w) * C;
    uint8_t *out = static_cast<uint8_t *>(s_.out);
    for (int y = y_begin; y < y_end; y++) {
      uint8_t *row = out + y * stride;
      int r = y / s_.cell_h;
      if (r < s_.n && y > y_begin && SameSourceRowsAsAbove(r, y)) {
        std::memcpy(row, row - stride, stride);
        continue;
      }
      int x = 0;
      for (int col = 0; r < s_.n && col < s_.n; col++) {
        int i = r * s_.n + col;
        const Component &c = s_.comp[i];
        Fill(row + static_cast<int64_t>(x) * C, c.x0 - x);
        x = c.x0;
        int ly = y - c.y0;
        if (ly < c.h) {
          CopySpan(c, i, ly, row + static_cast<int64_t>(x) * C, caches[i]);
          x += c.w;
        }
      }
      Fill(row + static_cast<int64_t>(x) * C, s_.out_w - x);
    }
  }

 private:
  /** The two most recent horizontal rows of one component (bilinear). */
  struct RowCache {
    int row[2] = {-1, -1};
    int next = 0;
    std::vector<float> values[2];
  };

  void Fill(uint8_t *dst, int count) const {
    FillPixels(dst, count, pad_, p_.channels, uniform_pad_);
  }

  bool SameSourceRowsAsAbove(int r, int y) const {
    if (interp_ != Interp::kNearest || (y - 1) / s_.cell_h != r) return false;
    for (int col = 0; col < s_.n; col++) {
      const Component &c = s_.comp[r * s_.n + col];
      int ly = y - c.y0;
      bool in = ly < c.h, prev_in = ly - 1 < c.h;
      if (in != prev_in ||
          (in && NearestSource(ly, c.h, c.src_h) != NearestSource(ly - 1, c.h, c.src_h)))
        return false;
    }
    return true;
  }

  void CopySpan(const Component &c, int i, int ly, uint8_t *dst, RowCache &cache) const {
    const int C = p_.channels;
    const int64_t src_stride = static_cast<int64_t>(c.src_w) * C;
    if (interp_ == Interp::kNearest) {
      int sy = NearestSource(ly, c.h, c.src_h);
      const uint8_t *row = c.src + sy * src_stride;
#ifdef DST_DALI_SHUFFLE_GATHER
      if (shuffle_[i].usable) {
        int next_sy = ly + 1 < c.h ? NearestSource(ly + 1, c.h, c.src_h) : sy;
        return ShuffleGather(dst, c.w * C, row, c.src + next_sy * src_stride, shuffle_[i]);
      }
#endif
      const int32_t *xoff = offsets_.data() + start_[i];
      if (p_.reverse_channels)
        CopyGathered<true>(dst, row, xoff, c.w, C, sy == c.src_h - 1);
      else
        CopyGathered<false>(dst, row, xoff, c.w, C, sy == c.src_h - 1);
      return;
    }
    const ColumnTap *t = taps_.data() + start_[i];
    int y0, y1;
    float fy;
    LinearSource(ly, c.h, c.src_h, y0, y1, fy);
    const float *h0 = HorizontalRow(c, t, y0, cache);
    const float *h1 = HorizontalRow(c, t, y1, cache);
    // uint8 output never normalizes (the operator refuses mean/std without dtype FLOAT), and
    // Normalize with mean 0, std 1 is the identity, so it is left out of this loop
    const int n = c.w * C;
    for (int e = 0; e < n; e++) dst[e] = ConvertOut<uint8_t>(Lerp(h0[e], h1[e], fy));
  }

  /**
   * The horizontal interpolation of source row sy over a component's columns (channels
   * already in output order), computed once however many output rows read it: an upscale
   * reads each source row for two or more output rows, as y0 and as y1.
   */
  const float *HorizontalRow(const Component &c, const ColumnTap *t, int sy,
                             RowCache &cache) const {
    for (int k = 0; k < 2; k++)
      if (cache.row[k] == sy) return cache.values[k].data();
    int k = cache.next;
    cache.next ^= 1;
    const int C = p_.channels;
    const uint8_t *r = c.src + static_cast<int64_t>(sy) * c.src_w * C;
    std::vector<float> &h = cache.values[k];
    h.resize(static_cast<size_t>(c.w) * C);
    for (int lx = 0; lx < c.w; lx++)
      for (int ch = 0; ch < C; ch++) {
        int sc = SourceChannel(p_, ch);
        h[lx * C + ch] = Lerp(r[t[lx].x0 + sc], r[t[lx].x1 + sc], t[lx].fx);
      }
    cache.row[k] = sy;
    return h.data();
  }

  const CollageSample &s_;
  const PixelParams &p_;
  Interp interp_;
  uint8_t pad_[kMaxChannels];
  bool uniform_pad_;
  std::vector<int32_t> offsets_;  // nearest
  std::array<ShufflePlan, kMaxComponents> shuffle_;  // nearest, where the CPU has pshufb
  std::vector<ColumnTap> taps_;    // linear
  std::array<int, kMaxComponents> start_{};
};

template <typename Out, bool kCHW, Interp kInterp>
void StitchRowsGeneric(const CollageSample &s, const PixelParams &p, int y_begin, int y_end) {
  for (int y = y_begin; y < y_end; y++)
    for (int x = 0; x < s.out_w; x++) StitchPixel<Out, kCHW, kInterp>(s, p, y, x);
}

}  // namespace

void RecordHostCpu(int k, uint64_t ns, int batches, int samples) {
  host_cpu[k].ns += ns;
  host_cpu[k].batches += batches;
  host_cpu[k].samples += samples;
}

template <>
void CollageStitch<dali::CPUBackend>::RunImpl(dali::Workspace &ws) {
  const uint64_t start = ThreadCpuNs();
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
    DispatchPixelFormat(float_out_, chw_, interp_, [&]<typename Out, bool kCHW, Interp kI>() {
      EmulateLaunch<Out, kCHW, kI>(samples_.data(), params_, grid);
    });
  } else if (!float_out_ && !chw_) {
    std::vector<FastRowsU8> rows;
    rows.reserve(B);
    for (int s = 0; s < B; s++) {
      rows.emplace_back(samples_[s], params_, interp_, !portable_cpu_);
      for (int y = 0; y < samples_[s].out_h; y += kRowsPerTask) {
        int y_end = std::min(y + kRowsPerTask, samples_[s].out_h);
        tp.AddWork(timed([&, s, y, y_end](int) { rows[s].Run(y, y_end); }),
                   static_cast<int64_t>(y_end - y) * samples_[s].out_w);
      }
    }
    tp.RunAll();
  } else {
    DispatchPixelFormat(float_out_, chw_, interp_, [&]<typename Out, bool kCHW, Interp kI>() {
      for (int s = 0; s < B; s++) {
        const CollageSample &cs = samples_[s];
        for (int y = 0; y < cs.out_h; y += kRowsPerTask) {
          int y_end = std::min(y + kRowsPerTask, cs.out_h);
          tp.AddWork(timed([&, s, y, y_end](int) {
            StitchRowsGeneric<Out, kCHW, kI>(samples_[s], params_, y, y_end);
          }), static_cast<int64_t>(y_end - y) * cs.out_w);
        }
      }
      tp.RunAll();
    });
  }

  ForEachAnnotationOutput([&](int idx, auto member) {
    auto &out = ws.Output<dali::CPUBackend>(idx);
    for (int s = 0; s < B; s++) {
      const auto &v = annotations_[s].*member;
      if (!v.empty()) std::memcpy(out.raw_mutable_tensor(s), v.data(), v.size() * sizeof(v[0]));
    }
  });
  RecordHostCpu(k_, ThreadCpuNs() - start, 1, B);
}

}  // namespace dst_dali

// Totals since the library was loaded (see RecordHostCpu), for dst_dali.host_cpu_stats: three
// arrays of dst_dali_host_cpu_slots() entries, indexed by k.
extern "C" __attribute__((visibility("default"))) int dst_dali_host_cpu_slots() {
  return ::dst_dali::kMaxComponents + 1;
}

extern "C" __attribute__((visibility("default"))) void dst_dali_host_cpu(uint64_t *ns,
                                                                         uint64_t *batches,
                                                                         uint64_t *samples) {
  for (int k = 0; k < dst_dali_host_cpu_slots(); k++) {
    ns[k] = ::dst_dali::host_cpu[k].ns;
    batches[k] = ::dst_dali::host_cpu[k].batches;
    samples[k] = ::dst_dali::host_cpu[k].samples;
  }
}

// The DALI version the plugin was compiled against: dst_dali/_plugin.py reads it from the
// library file before loading it, since a plugin built for another DALI crashes on load.
extern "C" __attribute__((visibility("default"), used)) const char dst_dali_build_info[] =
    "dst_dali-build-info: " DST_DALI_BUILD_INFO ";";

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
    .AddOptionalArg("_portable_cpu", "CPU only, for tests: no SIMD, the code CPUs other than "
                    "x86-64 run.", false)
    .AddOptionalArg("_emulate_gpu_launch", "CPU only, for tests: compute pixels by replaying "
                    "the CUDA kernel's launch grid with its per-thread function.", false);
