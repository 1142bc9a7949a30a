// The CPU backend's row kernels for uint8 HWC collages (the common case): a row is runs of
// padding and component spans; a span's pixels come from per-component column tables built once
// a sample, so a pixel costs only its sampling. Same arithmetic as StitchPixel in
// collage_geometry.h (NearestSource, LinearSource, LinearRow, LerpFixed, LinearOut,
// SourceColumnIndex, SourceChannel), hence the same bytes; the tests compare them.
#ifndef DST_DALI_COLLAGE_ROWS_CPU_H_
#define DST_DALI_COLLAGE_ROWS_CPU_H_

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "collage_geometry.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define DST_DALI_X86_SIMD 1
#endif

namespace dst_dali {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the gathers below read pixels as little-endian words");

#ifdef DST_DALI_X86_SIMD
inline bool CpuHasSsse3() {
  static const bool has = __builtin_cpu_supports("ssse3");
  return has;
}
inline bool CpuHasAvx2() {
  static const bool has = __builtin_cpu_supports("avx2");
  return has;
}
#else
inline bool CpuHasSsse3() { return false; }
inline bool CpuHasAvx2() { return false; }
#endif

// ---------------------------------------------------------------------------------------------
// Padding

/** The padding pixel in output bytes. */
struct PadPixel {
  uint8_t value[kMaxChannels];
  int channels;
  bool uniform;  // every channel alike: a memset

  explicit PadPixel(const PixelParams &p) : channels(p.channels), uniform(true) {
    for (int c = 0; c < channels; c++) {
      value[c] = ConvertOut<uint8_t>(p.pad[c]);
      uniform = uniform && value[c] == value[0];
    }
  }

  void Fill(uint8_t *dst, int count) const {
    if (count <= 0) return;
    if (uniform) {
      std::memset(dst, value[0], static_cast<size_t>(count) * channels);
      return;
    }
    for (int i = 0; i < count; i++, dst += channels) std::memcpy(dst, value, channels);
  }
};

// ---------------------------------------------------------------------------------------------
// Nearest: a gather of source bytes

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

/** Plans a row of w pixels whose pixel i starts at source byte xoff[i] (C channels, output
 * channel c taken from source channel SourceChannel(c)) in a row of src_row_bytes. */
inline ShufflePlan PlanShuffle(const int32_t *xoff, int w, const PixelParams &p,
                               int src_row_bytes) {
  ShufflePlan plan;
  const int C = p.channels, n = w * C;
  if (n < 16 || src_row_bytes < 16) return plan;
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

#ifdef DST_DALI_X86_SIMD
__attribute__((target("ssse3"))) inline void ShuffleGather(uint8_t *dst, int n,
                                                           const uint8_t *src_row,
                                                           const uint8_t *next_src_row,
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

/** Nearest spans: a column table per component (4 bytes a column: the gather streams it) and,
 * where the CPU has pshufb, a shuffle plan. An output row whose source rows equal the previous
 * row's is a memcpy of it (every row twice or more on an upscale). */
class NearestSpans {
 public:
  struct Band {};  // no state across the rows of a task

  NearestSpans(const CollageSample &s, const PixelParams &p, bool simd) : s_(s), p_(p) {
    const int C = p.channels;
    for (int i = 0; i < s.k; i++) {
      const Component &c = s.comp[i];
      start_[i] = offsets_.size();
      for (int lx = 0; lx < c.w; lx++)
        offsets_.push_back(NearestSource(SourceColumnIndex(c, lx), c.w, c.src_w) * C);
      if (simd && CpuHasSsse3())
        shuffle_[i] = PlanShuffle(offsets_.data() + start_[i], c.w, p, c.src_w * C);
    }
  }

  /** Output row y of grid row r reads the same source rows as row y - 1. */
  bool RepeatsRowAbove(int r, int y) const {
    if ((y - 1) / s_.cell_h != r) return false;
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

  void Copy(int i, int ly, uint8_t *dst, Band &) const {
    const Component &c = s_.comp[i];
    const int C = p_.channels;
    const int64_t src_stride = static_cast<int64_t>(c.src_w) * C;
    int sy = NearestSource(ly, c.h, c.src_h);
    const uint8_t *row = c.src + sy * src_stride;
#ifdef DST_DALI_X86_SIMD
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
  }

 private:
  const CollageSample &s_;
  const PixelParams &p_;
  std::vector<int32_t> offsets_;
  std::array<ShufflePlan, kMaxComponents> shuffle_;
  std::array<size_t, kMaxComponents> start_{};
};

// ---------------------------------------------------------------------------------------------
// Bilinear: fixed point, a horizontal pass per source row (cached), then a vertical one

/** The horizontal step of n output elements: h[e] = LinearRow(row, x0[e], x1[e], w[e]), which
 * fits 16 bits (255 << kRowBits). */
inline void LinearRowScalar(int16_t *h, const uint8_t *row, const int32_t *x0, const int32_t *x1,
                            const int32_t *w, int n) {
  for (int e = 0; e < n; e++) h[e] = static_cast<int16_t>(LinearRow(row, x0[e], x1[e], w[e]));
}

/** The vertical step: out[e] = RoundLinear(LerpFixed(h0[e], h1[e], wy)) (LinearOut<uint8_t>). */
inline void LinearColumnScalar(uint8_t *out, const int16_t *h0, const int16_t *h1, int wy,
                               int n, int from = 0) {
  for (int e = from; e < n; e++) out[e] = RoundLinear(LerpFixed(h0[e], h1[e], wy));
}

#ifdef DST_DALI_X86_SIMD
/** LinearRow of 8 elements, as int32: for C <= 3 channels, where every x1[e] is x0[e] + C or
 * has weight 0 (LinearSource's taps), one 4-byte gather at x0 holds both taps, bytes 0 and C. */
__attribute__((target("avx2"))) inline __m256i LinearRow8(const uint8_t *row, const int32_t *x0,
                                                          const int32_t *w, __m128i tap1_shift) {
  const __m256i byte = _mm256_set1_epi32(0xFF);
  __m256i at = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(x0));
  __m256i word = _mm256_i32gather_epi32(reinterpret_cast<const int *>(row), at, 1);
  __m256i a = _mm256_and_si256(word, byte);
  __m256i b = _mm256_and_si256(_mm256_srl_epi32(word, tap1_shift), byte);
  __m256i wt = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(w));
  // LerpFixed(a, b, w) = a * (one - w) + b * w = (a << kWeightBits) + (b - a) * w
  __m256i v = _mm256_add_epi32(_mm256_slli_epi32(a, kWeightBits),
                               _mm256_mullo_epi32(_mm256_sub_epi32(b, a), wt));
  return _mm256_srai_epi32(v, kWeightBits - kRowBits);
}

/**
 * The horizontal step as byte shuffles, where a component is not shrunk much: each chunk of 8
 * output elements has its 16 taps within 16 source bytes, so one 16-byte load and one pshufb
 * give the 8 (x0, x1) byte pairs, and one madd with the (one - w, w) pairs gives the 8
 * LerpFixed values exactly. Planned once a sample; every source row of the component reuses it.
 */
struct PairChunk {
  int32_t src;  // start of the 16-byte source window, in the row
  uint8_t shuffle[16];
};

struct PairPlan {
  std::vector<PairChunk> chunks;  // elements [0, 8 * chunks.size()); the rest are scalar
  std::vector<int16_t> weights;   // (one - w, w) of each of those elements
  bool usable = false;
};

inline PairPlan PlanPairs(const int32_t *x0, const int32_t *x1, const int32_t *w, int n,
                          int row_bytes) {
  PairPlan plan;
  if (row_bytes < 16) return plan;
  for (int e = 0; e + 8 <= n; e += 8) {
    int lo = x0[e], hi = x0[e];
    for (int j = 0; j < 8; j++) {
      lo = std::min({lo, x0[e + j], x1[e + j]});
      hi = std::max({hi, x0[e + j], x1[e + j]});
    }
    if (hi - lo > 15) return PairPlan{};  // shrunk too much: the gather does it
    PairChunk c{std::min(lo, row_bytes - 16), {}};
    for (int j = 0; j < 8; j++) {
      c.shuffle[2 * j] = static_cast<uint8_t>(x0[e + j] - c.src);
      c.shuffle[2 * j + 1] = static_cast<uint8_t>(x1[e + j] - c.src);
      plan.weights.push_back(static_cast<int16_t>(kWeightOne - w[e + j]));
      plan.weights.push_back(static_cast<int16_t>(w[e + j]));
    }
    plan.chunks.push_back(c);
  }
  plan.usable = true;
  return plan;
}

/** LinearRow of one chunk's 8 elements, as int32. */
__attribute__((target("avx2"))) inline __m256i LinearPairs8(const uint8_t *row,
                                                           const PairChunk &c,
                                                           const int16_t *weights) {
  __m128i window = _mm_loadu_si128(reinterpret_cast<const __m128i *>(row + c.src));
  __m128i pairs = _mm_shuffle_epi8(window,
                                   _mm_loadu_si128(reinterpret_cast<const __m128i *>(c.shuffle)));
  __m256i v = _mm256_madd_epi16(_mm256_cvtepu8_epi16(pairs),
                                _mm256_loadu_si256(reinterpret_cast<const __m256i *>(weights)));
  return _mm256_srai_epi32(v, kWeightBits - kRowBits);
}

/** LinearRowScalar by a PairPlan, 16 elements a step. */
__attribute__((target("avx2"))) inline void LinearRowPairs(int16_t *h, const uint8_t *row,
                                                           const PairPlan &plan,
                                                           const int32_t *x0, const int32_t *x1,
                                                           const int32_t *w, int n) {
  const size_t chunks = plan.chunks.size();
  size_t c = 0;
  for (; c + 2 <= chunks; c += 2) {
    __m256i lo = LinearPairs8(row, plan.chunks[c], &plan.weights[16 * c]);
    __m256i hi = LinearPairs8(row, plan.chunks[c + 1], &plan.weights[16 * c + 16]);
    __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(h + 8 * c), packed);
  }
  const int e = static_cast<int>(8 * c);
  LinearRowScalar(h + e, row, x0 + e, x1 + e, w + e, n - e);
}

/** LinearRowScalar, 16 elements a step (see LinearRow8). A gather's read may end 3 bytes past
 * the row, so the caller keeps it off the image's last row. */
__attribute__((target("avx2"))) inline void LinearRowAvx2(int16_t *h, const uint8_t *row,
                                                          const int32_t *x0, const int32_t *x1,
                                                          const int32_t *w, int n, int C) {
  const __m128i tap1_shift = _mm_cvtsi32_si128(8 * C);
  int e = 0;
  for (; e + 16 <= n; e += 16) {
    __m256i lo = LinearRow8(row, x0 + e, w + e, tap1_shift);
    __m256i hi = LinearRow8(row, x0 + e + 8, w + e + 8, tap1_shift);
    // the pack works within 128-bit lanes; the permute puts the 8-byte groups back in order
    __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(lo, hi), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(h + e), packed);
  }
  LinearRowScalar(h + e, row, x0 + e, x1 + e, w + e, n - e);
}

/** RoundLinear(LerpFixed(h0[e], h1[e], wy)) of 16 elements as int16, in order: one madd of the
 * interleaved rows with (one - wy, wy) gives each LerpFixed exactly. */
__attribute__((target("avx2"))) inline __m256i LinearValues16(const int16_t *h0,
                                                              const int16_t *h1,
                                                              __m256i weights) {
  const __m256i half = _mm256_set1_epi32(1 << (kValueBits - 1));
  __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(h0));
  __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(h1));
  __m256i lo = _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b), weights);  // 0-3, 8-11
  __m256i hi = _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b), weights);  // 4-7, 12-15
  lo = _mm256_srai_epi32(_mm256_add_epi32(lo, half), kValueBits);
  hi = _mm256_srai_epi32(_mm256_add_epi32(hi, half), kValueBits);
  return _mm256_packus_epi32(lo, hi);  // per lane: 0-7, 8-15
}

/** LinearColumnScalar, 32 elements a step. */
__attribute__((target("avx2"))) inline void LinearColumnAvx2(uint8_t *out, const int16_t *h0,
                                                             const int16_t *h1, int wy, int n) {
  const __m256i weights = _mm256_set1_epi32((wy << 16) | (kWeightOne - wy));
  int e = 0;
  for (; e + 32 <= n; e += 32) {
    __m256i bytes = _mm256_packus_epi16(LinearValues16(h0 + e, h1 + e, weights),
                                        LinearValues16(h0 + e + 16, h1 + e + 16, weights));
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(out + e),
                        _mm256_permute4x64_epi64(bytes, 0xD8));
  }
  LinearColumnScalar(out, h0, h1, wy, n, e);
}
#endif

/** Bilinear spans: per output element of a component's span its two source elements and the
 * weight; per task band, each component's two most recent horizontal rows (an upscale reads
 * each source row for two or more output rows). */
class LinearSpans {
 public:
  struct RowCache {
    int row[2] = {-1, -1};
    int next = 0;
    std::vector<int16_t> values[2];
  };
  struct Band {
    std::array<RowCache, kMaxComponents> cache;
  };

  LinearSpans(const CollageSample &s, const PixelParams &p, bool simd)
      : s_(s), p_(p), avx2_(simd && p.channels <= 3 && CpuHasAvx2()) {
    const int C = p.channels;
    for (int i = 0; i < s.k; i++) {
      const Component &c = s.comp[i];
      start_[i] = x0_.size();
      for (int lx = 0; lx < c.w; lx++) {
        int i0, i1, w;
        LinearSource(SourceColumnIndex(c, lx), c.w, c.src_w, i0, i1, w);
        for (int ch = 0; ch < C; ch++) {
          int sc = SourceChannel(p, ch);
          x0_.push_back(i0 * C + sc);
          x1_.push_back(i1 * C + sc);
          weight_.push_back(w);
        }
      }
#ifdef DST_DALI_X86_SIMD
      if (avx2_)
        pairs_[i] = PlanPairs(&x0_[start_[i]], &x1_[start_[i]], &weight_[start_[i]], c.w * C,
                              c.src_w * C);
#endif
    }
  }

  bool RepeatsRowAbove(int, int) const { return false; }

  void Copy(int i, int ly, uint8_t *dst, Band &band) const {
    const Component &c = s_.comp[i];
    int y0, y1, wy;
    LinearSource(ly, c.h, c.src_h, y0, y1, wy);
    const int16_t *h0 = HorizontalRow(i, y0, band.cache[i]);
    const int16_t *h1 = HorizontalRow(i, y1, band.cache[i]);
    const int n = c.w * p_.channels;
#ifdef DST_DALI_X86_SIMD
    if (avx2_) return LinearColumnAvx2(dst, h0, h1, wy, n);
#endif
    LinearColumnScalar(dst, h0, h1, wy, n);
  }

 private:
  /** The horizontal step over source row sy, computed once however many output rows read it
   * (as y0 or y1). */
  const int16_t *HorizontalRow(int i, int sy, RowCache &cache) const {
    for (int k = 0; k < 2; k++)
      if (cache.row[k] == sy) return cache.values[k].data();
    int k = cache.next;
    cache.next ^= 1;
    const Component &c = s_.comp[i];
    const int64_t row_bytes = static_cast<int64_t>(c.src_w) * p_.channels;
    const uint8_t *row = c.src + sy * row_bytes;
    const int n = c.w * p_.channels;
    std::vector<int16_t> &h = cache.values[k];
    h.resize(n);
    const size_t at = start_[i];
#ifdef DST_DALI_X86_SIMD
    if (pairs_[i].usable) {
      LinearRowPairs(h.data(), row, pairs_[i], &x0_[at], &x1_[at], &weight_[at], n);
    } else if (avx2_ && (c.src_h - 1 - sy) * row_bytes >= 3) {
      // the gather's 4-byte reads end at most 3 bytes past the row: the image must go on
      LinearRowAvx2(h.data(), row, &x0_[at], &x1_[at], &weight_[at], n, p_.channels);
    } else
#endif
      LinearRowScalar(h.data(), row, &x0_[at], &x1_[at], &weight_[at], n);
    cache.row[k] = sy;
    return h.data();
  }

  const CollageSample &s_;
  const PixelParams &p_;
  bool avx2_;
  std::vector<int32_t> x0_, x1_, weight_;  // per output element of every component's span
  std::array<size_t, kMaxComponents> start_{};
  std::array<PairPlan, kMaxComponents> pairs_;  // where the CPU has AVX2
};

// ---------------------------------------------------------------------------------------------
// Rows

/** Output rows [y_begin, y_end) of a uint8 HWC collage: padding and the Spans' component
 * spans. */
template <typename Spans>
void StitchRowsU8(const CollageSample &s, const PixelParams &p, const PadPixel &pad,
                  const Spans &spans, int y_begin, int y_end) {
  const int C = p.channels;
  typename Spans::Band band;
  const int64_t stride = static_cast<int64_t>(s.out_w) * C;
  uint8_t *out = static_cast<uint8_t *>(s.out);
  for (int y = y_begin; y < y_end; y++) {
    uint8_t *row = out + y * stride;
    int r = y / s.cell_h;
    if (r < s.n && y > y_begin && spans.RepeatsRowAbove(r, y)) {
      std::memcpy(row, row - stride, stride);
      continue;
    }
    int x = 0;
    for (int col = 0; r < s.n && col < s.n; col++) {
      int i = r * s.n + col;
      const Component &c = s.comp[i];
      pad.Fill(row + static_cast<int64_t>(x) * C, c.x0 - x);
      x = c.x0;
      int ly = y - c.y0;
      if (ly < c.h) {
        spans.Copy(i, ly, row + static_cast<int64_t>(x) * C, band);
        x += c.w;
      }
    }
    pad.Fill(row + static_cast<int64_t>(x) * C, s.out_w - x);
  }
}

/** Any output type and layout, a pixel at a time through the batch's taps (float output,
 * CHW). */
template <typename Out, bool kCHW, Interp kInterp>
void StitchRowsGeneric(const CollageSample &s, const AxisTap *taps, const PixelParams &p,
                       int y_begin, int y_end) {
  for (int y = y_begin; y < y_end; y++)
    for (int x = 0; x < s.out_w; x++) StitchPixel<Out, kCHW, kInterp>(s, taps, p, y, x);
}

}  // namespace dst_dali

#endif  // DST_DALI_COLLAGE_ROWS_CPU_H_
