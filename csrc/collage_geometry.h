// The arithmetic of a DST collage, shared by the CPU operator (collage_stitch.cc), the CUDA
// kernel (collage_kernel.h, launched by collage_stitch.cu and by bench/gpu/kernel_check) and
// the CPU emulation of that kernel's launch (which the tests run on machines without a GPU).
// Everything that decides a pixel value or a box coordinate lives here, so the paths cannot
// drift apart. No DALI header: the kernel check builds it with nvcc alone.
//
// Conventions
//   * images are HWC uint8; boxes are ltrb in source pixels; vertices are (x, y) in source pixels;
//   * component i of a k = n*n collage sits at grid row i / n, column i % n, in the top-left
//     corner of its cell;
//   * nearest neighbour uses pixel centres (the "nearest-exact" rule of torch / PIL / DALI):
//     output pixel d of a length-D axis samples source pixel floor((d + 0.5) * S / D).
#ifndef DST_DALI_COLLAGE_GEOMETRY_H_
#define DST_DALI_COLLAGE_GEOMETRY_H_

#include <cstdint>
#include <vector>

#if defined(__CUDACC__)
#define DST_HD __host__ __device__ __forceinline__
#else
#define DST_HD inline
#endif

namespace dst_dali {

constexpr int kMaxComponents = 16;  // k = 1, 4, 9 or 16
constexpr int kMaxChannels = 4;

enum class Interp : int { kNearest = 0, kLinear = 1 };

/** Side n of a k = n*n grid, or -1 when k is not a positive square of at most kMaxComponents. */
inline int GridSide(int k) {
  for (int n = 1; n * n <= kMaxComponents; n++)
    if (n * n == k) return n;
  return -1;
}

struct Size2 {
  int h, w;
};

/**
 * The size detectron2's ResizeShortestEdge gives an h x w image: short side to `short_edge`,
 * long side capped at `max_size`, each rounded with int(x + 0.5). Same double-precision
 * arithmetic as detectron2's Python, so the sizes agree exactly.
 */
inline Size2 RegularSize(int h, int w, double short_edge, double max_size) {
  double scale = short_edge / (h < w ? h : w);
  double newh, neww;
  if (h < w) {
    newh = short_edge;
    neww = scale * w;
  } else {
    newh = scale * h;
    neww = short_edge;
  }
  double longer = newh > neww ? newh : neww;
  if (longer > max_size) {
    double s = max_size / longer;
    newh *= s;
    neww *= s;
  }
  return {static_cast<int>(newh + 0.5), static_cast<int>(neww + 0.5)};
}

/** One component image and where it lands in the collage. */
struct Component {
  const uint8_t *src;  // HWC, src_h x src_w x channels
  int src_h, src_w;
  int y0, x0;          // top-left corner of its pixels in the collage
  int h, w;            // its size in the collage
  int flip;            // mirrored horizontally
  int ytaps, xtaps;    // its h row taps and w column taps in the batch's tap table
};

/** One output sample: k components on an out_h x out_w canvas of n x n cells. */
struct CollageSample {
  Component comp[kMaxComponents];
  int k, n;
  int cell_h, cell_w;
  int out_h, out_w;
  void *out;
};

/** Batch-wide pixel parameters. Padding is written as-is (it is in output units). */
struct PixelParams {
  int channels;
  int reverse_channels;  // output channel c reads input channel channels-1-c (RGB <-> BGR)
  float pad[kMaxChannels];
  float mean[kMaxChannels];
  float inv_std[kMaxChannels];
};

/** A component is shrunk to fit its cell by no more than this factor of its 1/n scale: the
 * canvas grows past the mean regular size only as far as the largest component needs. */
constexpr double kMinComponentFit = 0.875;

/**
 * Places k components (sizes src[i], regular sizes reg[i]) on a canvas the size of a regular
 * image: the mean of the components' regular sizes (they share an orientation), grown where a
 * component would otherwise shrink by more than kMinComponentFit. Cells are 1/n of the canvas;
 * each component gets 1/n of its regular size, shrunk with its aspect ratio kept only as far as
 * it must to fit its cell, and sits in the cell's top-left corner.
 */
inline void PlaceComponents(CollageSample &s, int k, const Size2 *src, const Size2 *reg) {
  int n = GridSide(k);
  double mean_h = 0, mean_w = 0, max_h = 0, max_w = 0;
  for (int i = 0; i < k; i++) {
    mean_h += reg[i].h / static_cast<double>(k);
    mean_w += reg[i].w / static_cast<double>(k);
    max_h = reg[i].h > max_h ? reg[i].h : max_h;
    max_w = reg[i].w > max_w ? reg[i].w : max_w;
  }
  double canvas_h = mean_h > kMinComponentFit * max_h ? mean_h : kMinComponentFit * max_h;
  double canvas_w = mean_w > kMinComponentFit * max_w ? mean_w : kMinComponentFit * max_w;
  s.k = k;
  s.n = n;
  s.cell_h = static_cast<int>(canvas_h / n) > 0 ? static_cast<int>(canvas_h / n) : 1;
  s.cell_w = static_cast<int>(canvas_w / n) > 0 ? static_cast<int>(canvas_w / n) : 1;
  s.out_h = s.cell_h * n;
  s.out_w = s.cell_w * n;
  for (int i = 0; i < k; i++) {
    Component &c = s.comp[i];
    c.src_h = src[i].h;
    c.src_w = src[i].w;
    double h = reg[i].h / static_cast<double>(n), w = reg[i].w / static_cast<double>(n);
    double fit = 1.0;
    if (s.cell_h < h * fit) fit = s.cell_h / h;
    if (s.cell_w < w * fit) fit = s.cell_w / w;
    int ih = static_cast<int>(h * fit + 0.5), iw = static_cast<int>(w * fit + 0.5);
    c.h = ih < 1 ? 1 : (ih > s.cell_h ? s.cell_h : ih);
    c.w = iw < 1 ? 1 : (iw > s.cell_w ? s.cell_w : iw);
    c.y0 = (i / n) * s.cell_h;
    c.x0 = (i % n) * s.cell_w;
  }
}

/**
 * Plans collage s of k images of sizes src[i]: each one's regular size (short side
 * short_side[i], long side capped at max_size, at least 1 pixel a side: an extreme aspect ratio
 * can round one side to 0 in detectron2 too), the placement, and the flips.
 */
inline void PlanCollage(CollageSample &s, int k, const Size2 *src, const float *short_side,
                        double max_size, const int *flip) {
  Size2 reg[kMaxComponents];
  for (int i = 0; i < k; i++) {
    reg[i] = RegularSize(src[i].h, src[i].w, short_side[i], max_size);
    reg[i].h = reg[i].h < 1 ? 1 : reg[i].h;
    reg[i].w = reg[i].w < 1 ? 1 : reg[i].w;
  }
  PlaceComponents(s, k, src, reg);
  for (int i = 0; i < k; i++) s.comp[i].flip = flip[i] != 0;
}

// ---------------------------------------------------------------------------------------------
// Per pixel

/** Nearest source index of output index d (pixel centres), in exact integer arithmetic. */
DST_HD int NearestSource(int d, int dst_len, int src_len) {
  int64_t s = ((2 * static_cast<int64_t>(d) + 1) * src_len) / (2 * static_cast<int64_t>(dst_len));
  return s < src_len ? static_cast<int>(s) : src_len - 1;
}

/**
 * Bilinear is fixed point, as in OpenCV's and DALI's uint8 kernels, so that the CPU paths and
 * the CUDA kernel compute the same integers: weights have kWeightBits fractional bits; a
 * horizontal step keeps kRowBits of them (it fits 16 bits), the vertical step gives the value
 * with kValueBits.
 */
constexpr int kWeightBits = 11;
constexpr int kWeightOne = 1 << kWeightBits;
constexpr int kRowBits = kWeightBits - 4;
constexpr int kValueBits = kRowBits + kWeightBits;

/**
 * Bilinear taps of output index d (pixel centres, edge clamped, no antialiasing): source
 * indices i0, i1 and the weight of i1 in 1/kWeightOne. The source position
 * ((2d + 1) * src_len - dst_len) / (2 * dst_len) is exact rational arithmetic, rounded to
 * the nearest weight; where clamped, the weight is 0.
 */
DST_HD void LinearSource(int d, int dst_len, int src_len, int &i0, int &i1, int &weight) {
  int64_t num = (2 * static_cast<int64_t>(d) + 1) * src_len - dst_len;
  int64_t den = 2 * static_cast<int64_t>(dst_len);
  i0 = 0;
  weight = 0;
  if (num > 0) {
    i0 = static_cast<int>(num / den);
    weight = static_cast<int>(((num % den) * kWeightOne + dst_len) / den);
    if (weight == kWeightOne) {
      i0++;
      weight = 0;
    }
  }
  if (i0 >= src_len - 1) {
    i0 = src_len - 1;
    weight = 0;
  }
  i1 = i0 + 1 < src_len ? i0 + 1 : src_len - 1;
}

/** Source column of collage-local column lx, mirrored first when the component is flipped. */
DST_HD int SourceColumnIndex(const Component &c, int lx) {
  return c.flip ? c.w - 1 - lx : lx;
}

/**
 * Where one output row or column of a component samples its source: the source indices i0, i1
 * and the weight of i1 (bilinear; nearest has i1 = i0 and weight 0). Taps are computed once per
 * sample on the host, so a pixel costs no division by the image size (a 64-bit division per axis
 * and pixel on the GPU otherwise).
 */
struct AxisTap {
  int32_t i0, i1, weight;
};

/** Appends the row taps and the column taps (mirrored where flipped) of every component of s to
 * the batch's tap table, and records where they start. */
inline void AppendTaps(CollageSample &s, Interp interp, std::vector<AxisTap> &taps) {
  auto tap = [&](int d, int dst_len, int src_len) {
    AxisTap t{0, 0, 0};
    if (interp == Interp::kNearest)
      t.i0 = t.i1 = NearestSource(d, dst_len, src_len);
    else
      LinearSource(d, dst_len, src_len, t.i0, t.i1, t.weight);
    taps.push_back(t);
  };
  for (int i = 0; i < s.k; i++) {
    Component &c = s.comp[i];
    c.ytaps = static_cast<int>(taps.size());
    for (int ly = 0; ly < c.h; ly++) tap(ly, c.h, c.src_h);
    c.xtaps = static_cast<int>(taps.size());
    for (int lx = 0; lx < c.w; lx++) tap(SourceColumnIndex(c, lx), c.w, c.src_w);
  }
}

/** One interpolation step between a and b in fixed point: a * (1 - w) + b * w. */
DST_HD int32_t LerpFixed(int32_t a, int32_t b, int weight) {
  return a * (kWeightOne - weight) + b * weight;
}

/** The horizontal step over one source row: the value with kRowBits fractional bits. */
DST_HD int32_t LinearRow(const uint8_t *row, int x0, int x1, int wx) {
  return LerpFixed(row[x0], row[x1], wx) >> (kWeightBits - kRowBits);
}

/** The component covering collage pixel (y, x), with its local coordinates; null on padding. */
DST_HD const Component *ComponentAt(const CollageSample &s, int y, int x, int &ly, int &lx) {
  int row = y / s.cell_h, col = x / s.cell_w;
  if (row >= s.n || col >= s.n) return nullptr;
  const Component &c = s.comp[row * s.n + col];
  ly = y - c.y0;
  lx = x - c.x0;
  return (ly < c.h && lx < c.w) ? &c : nullptr;
}

template <typename Out>
DST_HD Out ConvertOut(float v);

template <>
DST_HD uint8_t ConvertOut<uint8_t>(float v) {
  v = v < 0.f ? 0.f : (v > 255.f ? 255.f : v);
  return static_cast<uint8_t>(v + 0.5f);
}

template <>
DST_HD float ConvertOut<float>(float v) {
  return v;
}

/** The input channel output channel ch reads. */
DST_HD int SourceChannel(const PixelParams &p, int ch) {
  return p.reverse_channels ? p.channels - 1 - ch : ch;
}

DST_HD float Normalize(const PixelParams &p, int ch, float v) {
  return (v - p.mean[ch]) * p.inv_std[ch];
}

/** A bilinear value (kValueBits fractional bits) rounded to uint8. */
DST_HD uint8_t RoundLinear(int32_t v) {
  return static_cast<uint8_t>((v + (1 << (kValueBits - 1))) >> kValueBits);
}

/** A bilinear value as output: uint8 rounds it (uint8 output is never normalized), float
 * normalizes it. */
template <typename Out>
DST_HD Out LinearOut(const PixelParams &p, int ch, int32_t v);

template <>
DST_HD uint8_t LinearOut<uint8_t>(const PixelParams &, int, int32_t v) {
  return RoundLinear(v);
}

template <>
DST_HD float LinearOut<float>(const PixelParams &p, int ch, int32_t v) {
  return Normalize(p, ch, static_cast<float>(v) * (1.f / (1 << kValueBits)));
}

/** Writes all channels of collage pixel (y, x) of sample s, sampling through the batch's
 * taps (AppendTaps). */
template <typename Out, bool kCHW, Interp kInterp>
DST_HD void StitchPixel(const CollageSample &s, const AxisTap *taps, const PixelParams &p, int y,
                        int x) {
  Out *out = static_cast<Out *>(s.out);
  const int C = p.channels;
  const int64_t plane = static_cast<int64_t>(s.out_h) * s.out_w;
  const int64_t pix = static_cast<int64_t>(y) * s.out_w + x;
  auto store = [&](int ch, Out v) { out[kCHW ? ch * plane + pix : pix * C + ch] = v; };
  int ly, lx;
  const Component *c = ComponentAt(s, y, x, ly, lx);
  if (!c) {
    for (int ch = 0; ch < C; ch++) store(ch, ConvertOut<Out>(p.pad[ch]));
    return;
  }
  const AxisTap ty = taps[c->ytaps + ly], tx = taps[c->xtaps + lx];
  const int64_t row_bytes = static_cast<int64_t>(c->src_w) * C;
  if (kInterp == Interp::kNearest) {
    const uint8_t *src = c->src + ty.i0 * row_bytes + tx.i0 * C;
    for (int ch = 0; ch < C; ch++)
      store(ch, ConvertOut<Out>(Normalize(p, ch, src[SourceChannel(p, ch)])));
  } else {
    const uint8_t *r0 = c->src + ty.i0 * row_bytes;
    const uint8_t *r1 = c->src + ty.i1 * row_bytes;
    for (int ch = 0; ch < C; ch++) {
      int sc = SourceChannel(p, ch);
      int32_t h0 = LinearRow(r0, tx.i0 * C + sc, tx.i1 * C + sc, tx.weight);
      int32_t h1 = LinearRow(r1, tx.i0 * C + sc, tx.i1 * C + sc, tx.weight);
      store(ch, LinearOut<Out>(p, ch, LerpFixed(h0, h1, ty.weight)));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The CUDA launch: one thread per output pixel, a block of kBlockX x kBlockY pixels, blockIdx.z
// is the sample. Defined here so the CPU can replay the exact launch.

constexpr int kBlockX = 32;
constexpr int kBlockY = 8;

struct LaunchGrid {
  int grid_x, grid_y, grid_z;
  int block_x, block_y;
};

inline LaunchGrid MakeLaunchGrid(int max_h, int max_w, int num_samples) {
  return {(max_w + kBlockX - 1) / kBlockX, (max_h + kBlockY - 1) / kBlockY, num_samples,
          kBlockX, kBlockY};
}

/** The body of one CUDA thread: bounds check, then one pixel. */
template <typename Out, bool kCHW, Interp kInterp>
DST_HD void StitchThread(const CollageSample *samples, const AxisTap *taps, const PixelParams &p,
                         int bx, int by, int bz, int tx, int ty, int bdx, int bdy) {
  const CollageSample &s = samples[bz];
  int x = bx * bdx + tx;
  int y = by * bdy + ty;
  if (x >= s.out_w || y >= s.out_h) return;
  StitchPixel<Out, kCHW, kInterp>(s, taps, p, y, x);
}

// ---------------------------------------------------------------------------------------------
// Per box and per vertex

/** Collage x of source x: mirror in the source, scale by the component's pixel scale, shift. */
DST_HD float MapX(const Component &c, float x) {
  float xs = c.flip ? c.src_w - x : x;
  return xs * (static_cast<float>(c.w) / c.src_w) + c.x0;
}

DST_HD float MapY(const Component &c, float y) {
  return y * (static_cast<float>(c.h) / c.src_h) + c.y0;
}

/** Maps an ltrb box; a flip swaps which source edge becomes the left one. */
DST_HD void MapBox(const Component &c, const float *in, float *out) {
  float a = MapX(c, in[0]), b = MapX(c, in[2]);
  out[0] = c.flip ? b : a;
  out[1] = MapY(c, in[1]);
  out[2] = c.flip ? a : b;
  out[3] = MapY(c, in[3]);
}

/** A mapped box is kept when both sides exceed min_size (detectron2 drops empty boxes too). */
DST_HD bool BoxKept(const float *box, float min_size) {
  return box[2] - box[0] > min_size && box[3] - box[1] > min_size;
}

}  // namespace dst_dali

#endif  // DST_DALI_COLLAGE_GEOMETRY_H_
