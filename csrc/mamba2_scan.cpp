// The chunked Mamba2 (SSD) scan in one kernel: each head walks its sequence chunk by chunk with its
// state ([n, p], float32) held in cache, and every product is a small matrix product on the CPU's
// matrix unit (PyTorch's brgemm micro-kernels: AMX tiles for bfloat16, AVX-512 / AVX2 for float32).
// Per chunk of q steps, with a the cumulative sum of dt * A inside the chunk (<= 0, non-increasing):
//   y     = exp(a) (C S) + L (x dt) + D x          L[l, s] = exp(a_l - a_s) (C_l . B_s), s <= l
//   S    <- exp(a_last) S + B^T (x dt exp(a_last - a))
// The model's PyTorch scan (model/ssd.py `_chunk_scan`, the same chunked algebra in batched matmuls)
// is the oracle; it spends most of its time streaming per-chunk states and scores through memory,
// which this kernel never writes. Operands of the products are in the input dtype (bfloat16 ones
// rounded once from float32 values), products accumulate in float32, the state stays float32.
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <ATen/native/cpu/utils.h>
#include <c10/util/BFloat16.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "network.h"
#include "simd.h"

namespace network {
namespace {

namespace cpublas = at::native::cpublas;

// Storage type -> the type brgemm takes, and whether its right operand is in VNNI layout (bfloat16:
// element (k, j) of a [K, J] operand at ((k / 2) * J + j) * 2 + k % 2, K even; float32: row-major).
template <typename T>
struct Mm;
template <>
struct Mm<float> {
  using type = float;
  static constexpr bool vnni = false;
};
template <>
struct Mm<uint16_t> {
  using type = at::BFloat16;
  static constexpr bool vnni = true;
};

// C [m, j] (+)= A [m, k] (rows ld_a apart) @ B [k, j] (packed by `pack_at`), float32 C.
template <typename T>
void gemm(int64_t m, int64_t j, int64_t k, const T* a, int64_t ld_a, const T* b, float* c, bool add) {
  using U = typename Mm<T>::type;
  cpublas::brgemm(m, j, k, ld_a, j, j, add, reinterpret_cast<const U*>(a), reinterpret_cast<const U*>(b), c,
                  Mm<T>::vnni);
}

// Index of element (k, j) of a right operand with j columns, in the layout brgemm takes for T.
template <typename T>
inline int64_t pack_at(int64_t k, int64_t j, int64_t cols) {
  if constexpr (Mm<T>::vnni)
    return ((k >> 1) * cols + j) * 2 + (k & 1);
  else
    return k * cols + j;
}

// The operands are written from float32 values: for bfloat16 on CPUs with AVX512-BF16 one
// instruction rounds 16 values (to nearest even, as `narrow`); elsewhere `narrow` does it in integer
// arithmetic. store_rows: out[r * ld_out + j] = in[r * ld_in + j], r < rows, j < cols.
template <typename T>
void store_rows(const float* in, int64_t ld_in, T* out, int64_t ld_out, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) narrow(in[r * ld_in + j], out + r * ld_out + j);
}

// The state [n, p] times `scale` as the readout's right operand (bfloat16, VNNI pairs of rows).
inline void pack_state(const float* state, float scale, uint16_t* out, int64_t n, int64_t p) {
  auto* words = reinterpret_cast<uint32_t*>(out);
  for (int64_t i = 0; i < n; i += 2)
    for (int64_t j = 0; j < p; ++j) {
      uint16_t lo, hi;
      narrow(state[i * p + j] * scale, &lo);
      narrow(state[(i + 1) * p + j] * scale, &hi);
      words[i / 2 * p + j] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
    }
}

// Rows s < q of x (rows ld apart; rows past `steps` read as zeros) times w1[s] and w2[s], as the right
// operands of two products (q even), in T's operand layout.
template <typename T>
void pack_inputs(const T* x, int64_t ld, int64_t steps, const float* w1, const float* w2, T* out1, T* out2,
                 int64_t q, int64_t p) {
  for (int64_t s = 0; s < q; ++s) {
    const T* row = x + std::min(s, steps - 1) * ld;
    const float keep = s < steps ? 1.f : 0.f;
    for (int64_t j = 0; j < p; ++j) {
      const float v = widen(row[j]) * keep;
      narrow(v * w1[s], out1 + pack_at<T>(s, j, p));
      narrow(v * w2[s], out2 + pack_at<T>(s, j, p));
    }
  }
}

#if defined(__x86_64__)

SPLAT_TARGET_AVX512_BF16 void store_rows_bf16(const float* in, int64_t ld_in, uint16_t* out, int64_t ld_out,
                                              int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = in + r * ld_in;
    uint16_t* dst = out + r * ld_out;
    int64_t j = 0;
    for (; j + 16 <= cols; j += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j),
                          reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(_mm512_loadu_ps(src + j))));
    for (; j < cols; ++j) narrow(src[j], dst + j);
  }
}

SPLAT_TARGET_AVX512_BF16 inline __m512i pair_words(__m512 lo, __m512 hi) {
  const __m512i low = _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(lo)));
  const __m512i high = _mm512_cvtepu16_epi32(reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(hi)));
  return _mm512_or_si512(low, _mm512_slli_epi32(high, 16));
}

SPLAT_TARGET_AVX512_BF16 inline __m512 widen16(const uint16_t* v) {
  const __m512i words = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(v)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(words, 16));
}

SPLAT_TARGET_AVX512_BF16 void pack_state_bf16(const float* state, float scale, uint16_t* out, int64_t n, int64_t p) {
  if (p % 16) return pack_state(state, scale, out, n, p);
  auto* words = reinterpret_cast<uint32_t*>(out);
  const __m512 k = _mm512_set1_ps(scale);
  for (int64_t i = 0; i < n; i += 2)
    for (int64_t j = 0; j < p; j += 16)
      _mm512_storeu_si512(words + i / 2 * p + j,
                          pair_words(_mm512_mul_ps(_mm512_loadu_ps(state + i * p + j), k),
                                     _mm512_mul_ps(_mm512_loadu_ps(state + (i + 1) * p + j), k)));
}

SPLAT_TARGET_AVX512_BF16 void pack_inputs_bf16(const uint16_t* x, int64_t ld, int64_t steps, const float* w1,
                                               const float* w2, uint16_t* out1, uint16_t* out2, int64_t q, int64_t p) {
  if (p % 16) return pack_inputs(x, ld, steps, w1, w2, out1, out2, q, p);
  auto *words1 = reinterpret_cast<uint32_t*>(out1), *words2 = reinterpret_cast<uint32_t*>(out2);
  for (int64_t s = 0; s < q; s += 2) {
    const uint16_t *r0 = x + std::min(s, steps - 1) * ld, *r1 = x + std::min(s + 1, steps - 1) * ld;
    const float k0 = s < steps ? 1.f : 0.f, k1 = s + 1 < steps ? 1.f : 0.f;
    const __m512 a0 = _mm512_set1_ps(w1[s] * k0), a1 = _mm512_set1_ps(w1[s + 1] * k1);
    const __m512 b0 = _mm512_set1_ps(w2[s] * k0), b1 = _mm512_set1_ps(w2[s + 1] * k1);
    for (int64_t j = 0; j < p; j += 16) {
      const __m512 v0 = widen16(r0 + j), v1 = widen16(r1 + j);
      _mm512_storeu_si512(words1 + s / 2 * p + j, pair_words(_mm512_mul_ps(v0, a0), _mm512_mul_ps(v1, a1)));
      _mm512_storeu_si512(words2 + s / 2 * p + j, pair_words(_mm512_mul_ps(v0, b0), _mm512_mul_ps(v1, b1)));
    }
  }
}
#else  // (never chosen off x86-64: splat::cpu_has_avx512_bf16() is false there)
void store_rows_bf16(const float* in, int64_t ld_in, uint16_t* out, int64_t ld_out, int64_t rows, int64_t cols) {
  store_rows(in, ld_in, out, ld_out, rows, cols);
}
void pack_state_bf16(const float* state, float scale, uint16_t* out, int64_t n, int64_t p) {
  pack_state(state, scale, out, n, p);
}
void pack_inputs_bf16(const uint16_t* x, int64_t ld, int64_t steps, const float* w1, const float* w2, uint16_t* out1,
                      uint16_t* out2, int64_t q, int64_t p) {
  pack_inputs(x, ld, steps, w1, w2, out1, out2, q, p);
}
#endif

// Decayed states and scores run into float32's subnormal range, where each operation takes a slow
// microcode path (the scan ran 1.7-2.5x slower): flushed to zero while the scan runs, far below
// anything its outputs resolve, as torch.set_flush_denormal(True) would do for the whole process.
struct FlushDenormals {
#if defined(__x86_64__)
  const unsigned csr = _mm_getcsr();
  FlushDenormals() { _mm_setcsr(csr | 0x8040); }  // flush-to-zero and denormals-are-zero
  ~FlushDenormals() { _mm_setcsr(csr); }
#endif
};

// Instruction sets the scan is compiled for: baseline (any CPU), AVX-512, AVX-512 with BF16 conversions.
enum class Isa { kBase, kAvx512, kAvx512Bf16 };

template <Isa kIsa, typename T>
__attribute__((always_inline)) inline void to_rows(const float* in, int64_t ld_in, T* out, int64_t ld_out,
                                                   int64_t rows, int64_t cols) {
  if constexpr (std::is_same_v<T, float>) {
    for (int64_t r = 0; r < rows; ++r) std::copy(in + r * ld_in, in + r * ld_in + cols, out + r * ld_out);
  } else if constexpr (kIsa == Isa::kAvx512Bf16) {
    store_rows_bf16(in, ld_in, out, ld_out, rows, cols);
  } else {
    store_rows(in, ld_in, out, ld_out, rows, cols);
  }
}

template <Isa kIsa>
__attribute__((always_inline)) inline void to_state_operand(const float* state, float scale, uint16_t* out, int64_t n,
                                                            int64_t p) {
  if constexpr (kIsa == Isa::kAvx512Bf16)
    pack_state_bf16(state, scale, out, n, p);
  else
    pack_state(state, scale, out, n, p);
}

template <Isa kIsa, typename T>
__attribute__((always_inline)) inline void to_input_operands(const T* x, int64_t ld, int64_t steps, const float* w1,
                                                             const float* w2, T* out1, T* out2, int64_t q, int64_t p) {
  if constexpr (kIsa == Isa::kAvx512Bf16 && Mm<T>::vnni)
    pack_inputs_bf16(x, ld, steps, w1, w2, out1, out2, q, p);
  else
    pack_inputs(x, ld, steps, w1, w2, out1, out2, q, p);
}

// Dims: b batch, l steps, h heads of p channels, g groups of n states, q steps per chunk, c chunks.
struct Dims {
  int64_t b, l, h, p, g, n, q, c;
};

struct Strides {
  int64_t x_batch, x_step, bc_batch, bc_step, y_batch, y_step;
};

// What one chunk gives every head of a group: its C rows (the readout's left operand; copied, padded
// with zeros, only for a final partial chunk), bt = B^T [n, q] (the state update's left operand) and
// C B^T [q, q] with zeros above the diagonal, in float32 (cb) and as a left operand (cb_operand).
template <typename T>
struct SharedChunk {
  Scratch<T> c_rows, bt, b_packed, cb_operand;
  Scratch<float> cb;
  const T* c = nullptr;
  int64_t ld = 0;

  explicit SharedChunk(const Dims& d)
      : c_rows(d.q * d.n), bt(d.n * d.q), b_packed(Mm<T>::vnni ? d.n * d.q : 0), cb_operand(d.q * d.q),
        cb(d.q * d.q) {}

  template <Isa kIsa>
  __attribute__((always_inline)) inline void prepare(const T* B, const T* C, int64_t step, int64_t steps,
                                                     const Dims& d) {
    if (steps < d.q) std::fill(bt.begin(), bt.end(), T(0));
    at::native::utils::transpose(steps, d.n, B, step, bt.data(), d.q);
    if constexpr (Mm<T>::vnni) {  // B^T as a right operand: rows i and i + 1 interleaved
      auto* words = reinterpret_cast<uint32_t*>(b_packed.data());
      for (int64_t i = 0; i < d.n; i += 2)
        for (int64_t s = 0; s < d.q; ++s)
          words[i / 2 * d.q + s] = static_cast<uint32_t>(bt[i * d.q + s]) |
                                   (static_cast<uint32_t>(bt[(i + 1) * d.q + s]) << 16);
    }
    c = C;
    ld = step;
    if (steps < d.q) {
      std::fill(c_rows.begin(), c_rows.end(), T(0));
      for (int64_t s = 0; s < steps; ++s) std::copy(C + s * step, C + s * step + d.n, c_rows.data() + s * d.n);
      c = c_rows.data();
      ld = d.n;
    }
    gemm<T>(d.q, d.q, d.n, c, ld, Mm<T>::vnni ? b_packed.data() : bt.data(), cb.data(), false);
    for (int64_t l = 0; l < d.q; ++l)
      for (int64_t s = l + 1; s < d.q; ++s) cb[l * d.q + s] = 0.f;
    to_rows<kIsa>(cb.data(), d.q, cb_operand.data(), d.q, d.q, d.q);
  }
};

// One head's working set for one chunk, reused from head to head.
template <typename T>
struct HeadScratch {
  Scratch<float> out, a, e, w_diag, w_end, scores_f;
  Scratch<T> state_packed, scores, x_diag, x_end;

  explicit HeadScratch(const Dims& d)
      : out(d.q * d.p), a(d.q), e(d.q), w_diag(d.q), w_end(d.q), scores_f(d.q * d.q),
        state_packed(Mm<T>::vnni ? d.n * d.p : 0), scores(d.q * d.q), x_diag(d.q * d.p), x_end(d.q * d.p) {}
};

// A head's state between chunks is scale * state: the decay across a chunk multiplies the scale,
// not the n p values, until the scale falls below kMinScale (then it is applied once and reset to 1).
// Inputs are divided by the scale, so kMinScale bounds them (by 1e20 times x dt).
constexpr float kMinScale = 1e-20f;

// Within a chunk, exp(a_l - a_s) = exp(a_l) exp(-a_s): the intra-chunk product then takes the chunk's
// shared C B^T as is, with exp(-a_s) folded into the inputs and exp(a_l) into the outputs, as long as
// exp(-a_s) stays far from float32's range (chunks whose log-decay reaches -kMaxLogDecay take the
// scores of this head, exp(a_l - a_s) C_l . B_s, instead).
constexpr float kMaxLogDecay = 60.f;

// Chunk k of head hh (batch b): reads the head's state entering the chunk, leaves the one leaving it.
template <typename T, Isa kIsa>
__attribute__((always_inline)) inline void scan_chunk(const T* x, const float* dt, float Ah, const float* Dh,
                                                      const SharedChunk<T>& sh, float* state, float& scale, T* y,
                                                      HeadScratch<T>& w, const Strides& st, const Dims& d,
                                                      int64_t b, int64_t hh, int64_t k) {
  constexpr bool kFma = kIsa != Isa::kBase;
  const int64_t t0 = k * d.q, steps = std::min(d.q, d.l - t0);
  // Log-decays since the chunk start; steps past the sequence's end have dt = 0 (they change nothing).
  float sum = 0.f;
  for (int64_t s = 0; s < d.q; ++s) {
    w.w_diag[s] = s < steps ? dt[(b * d.l + t0 + s) * d.h + hh] : 0.f;
    sum += w.w_diag[s] * Ah;
    w.a[s] = sum;
  }
  const float a_last = w.a[d.q - 1];
  const bool factored = a_last > -kMaxLogDecay;
  for (int64_t s = 0; s < d.q; ++s) w.e[s] = splat::exp_neg<kFma>(w.a[s]);
  // 1. What the entering state contributes: C_l S (times exp(a_l), now or with the chunk's own part).
  if (k > 0) {
    if constexpr (Mm<T>::vnni) {
      to_state_operand<kIsa>(state, scale, w.state_packed.data(), d.n, d.p);
      gemm<T>(d.q, d.p, d.n, sh.c, sh.ld, w.state_packed.data(), w.out.data(), false);
      if (!factored)
        for (int64_t s = 0; s < d.q; ++s)
          for (int64_t j = 0; j < d.p; ++j) w.out[s * d.p + j] *= w.e[s];
    } else {
      gemm<T>(d.q, d.p, d.n, sh.c, sh.ld, state, w.out.data(), false);
      for (int64_t s = 0; s < d.q; ++s)
        for (int64_t j = 0; j < d.p; ++j) w.out[s * d.p + j] *= factored ? scale : scale * w.e[s];
    }
  }
  // 2. The state's new scale, and the weights of the inputs in the two products that read them:
  //    x dt exp(-a) (or x dt with this head's scores), and x dt exp(a_last - a) / new scale.
  float next = scale * splat::exp_neg<kFma>(a_last);
  if (next < kMinScale) {
    if (k > 0)
      for (int64_t i = 0; i < d.n * d.p; ++i) state[i] *= next;
    next = 1.f;
  }
  const float inv_next = 1.f / next;
  for (int64_t s = 0; s < d.q; ++s) {
    w.w_end[s] = w.w_diag[s] * splat::exp_neg<kFma>(a_last - w.a[s]) * inv_next;
    if (factored) w.w_diag[s] /= w.e[s];
  }
  scale = next;
  const T* xh = x + b * st.x_batch + t0 * st.x_step + hh * d.p;
  to_input_operands<kIsa>(xh, st.x_step, steps, w.w_diag.data(), w.w_end.data(), w.x_diag.data(), w.x_end.data(),
                          d.q, d.p);
  // 3. The chunk's own contribution to its outputs, and to the state it leaves.
  const T* left = sh.cb_operand.data();
  if (!factored) {
    for (int64_t l = 0; l < d.q; ++l) {
      float* row = w.scores_f.data() + l * d.q;
      const float* cb_row = sh.cb.data() + l * d.q;
      for (int64_t s = 0; s <= l; ++s) row[s] = splat::exp_neg<kFma>(w.a[l] - w.a[s]) * cb_row[s];
      for (int64_t s = l + 1; s < d.q; ++s) row[s] = 0.f;
    }
    to_rows<kIsa>(w.scores_f.data(), d.q, w.scores.data(), d.q, d.q, d.q);
    left = w.scores.data();
  }
  gemm<T>(d.q, d.p, d.q, left, d.q, w.x_diag.data(), w.out.data(), k > 0);
  gemm<T>(d.n, d.p, d.q, sh.bt.data(), d.q, w.x_end.data(), state, k > 0);
  // 4. Outputs, with the skip.
  for (int64_t s = 0; s < steps; ++s) {
    const T* xs = xh + s * st.x_step;
    const float g = factored ? w.e[s] : 1.f;
    for (int64_t j = 0; j < d.p; ++j)
      w.out[s * d.p + j] = splat::mul_add<kFma>(Dh[j], widen(xs[j]), g * w.out[s * d.p + j]);
  }
  to_rows<kIsa>(w.out.data(), d.p, y + b * st.y_batch + t0 * st.y_step + hh * d.p, st.y_step, steps, d.p);
}

// The (batch, head) pairs [begin, end), chunk by chunk: the heads of a batch side by side, so that
// each chunk's shared operands are made once for all of them and the rows of x and y (a token's
// heads side by side) are read and written in one sweep of the sequence. Their states (n p floats
// each, 64 KB in the paper's model) stay in the core's cache.
template <typename T, Isa kIsa>
__attribute__((always_inline)) inline void scan_range(const T* x, const float* dt, const float* A, const T* B,
                                                      const T* C, const float* D, T* y, const Strides& st,
                                                      const Dims& d, int64_t begin, int64_t end) {
  const FlushDenormals flush;
  const int64_t hg = d.h / d.g, block = std::min(end - begin, d.h);
  Scratch<float> states(block * d.n * d.p), scales(block);
  std::vector<SharedChunk<T>> shared(d.g, SharedChunk<T>(d));
  HeadScratch<T> scratch(d);
  for (int64_t b = begin / d.h; b * d.h < end; ++b) {
    const int64_t first = std::max(begin - b * d.h, int64_t(0)), last = std::min(end - b * d.h, d.h);
    std::fill(scales.begin(), scales.end(), 1.f);
    for (int64_t k = 0; k < d.c; ++k) {
      const int64_t t0 = k * d.q, steps = std::min(d.q, d.l - t0);
      for (int64_t gg = first / hg; gg <= (last - 1) / hg; ++gg) {
        const int64_t offset = b * st.bc_batch + t0 * st.bc_step + gg * d.n;
        shared[gg].template prepare<kIsa>(B + offset, C + offset, st.bc_step, steps, d);
      }
      for (int64_t hh = first; hh < last; ++hh)
        scan_chunk<T, kIsa>(x, dt, A[hh], D + hh * d.p, shared[hh / hg], states.data() + (hh - first) * d.n * d.p,
                            scales[hh - first], y, scratch, st, d, b, hh, k);
    }
  }
  cpublas::brgemm_release(Mm<T>::vnni);
}

template <typename T>
SPLAT_TARGET_AVX512 void scan_range_avx512(const T* x, const float* dt, const float* A, const T* B, const T* C,
                                           const float* D, T* y, const Strides& st, const Dims& d, int64_t begin,
                                           int64_t end) {
  scan_range<T, Isa::kAvx512>(x, dt, A, B, C, D, y, st, d, begin, end);
}

template <typename T>
SPLAT_TARGET_AVX512_BF16 void scan_range_avx512_bf16(const T* x, const float* dt, const float* A, const T* B,
                                                     const T* C, const float* D, T* y, const Strides& st,
                                                     const Dims& d, int64_t begin, int64_t end) {
  scan_range<T, Isa::kAvx512Bf16>(x, dt, A, B, C, D, y, st, d, begin, end);
}

template <typename T>
void scan_typed(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B,
                const at::Tensor& C, const at::Tensor& D, const at::Tensor& y, const Dims& d) {
  const auto* xp = reinterpret_cast<const T*>(x.data_ptr());
  const auto* Bp = reinterpret_cast<const T*>(B.data_ptr());
  const auto* Cp = reinterpret_cast<const T*>(C.data_ptr());
  auto* yp = reinterpret_cast<T*>(y.data_ptr());
  const Strides st{x.stride(0), x.stride(1), B.stride(0), B.stride(1), y.stride(0), y.stride(1)};
  const float *dtp = dt.data_ptr<float>(), *Ap = A.data_ptr<float>(), *Dp = D.data_ptr<float>();
  const Isa isa = splat::cpu_has_avx512_bf16() ? Isa::kAvx512Bf16 : splat::cpu_has_avx512() ? Isa::kAvx512 : Isa::kBase;
  // One contiguous range of (batch, head) pairs per thread: the heads of a range share chunk operands.
  const int64_t items = d.b * d.h, grain = (items + at::get_num_threads() - 1) / at::get_num_threads();
  at::parallel_for(0, items, grain, [&](int64_t begin, int64_t end) {
    if (isa == Isa::kAvx512Bf16)
      scan_range_avx512_bf16<T>(xp, dtp, Ap, Bp, Cp, Dp, yp, st, d, begin, end);
    else if (isa == Isa::kAvx512)
      scan_range_avx512<T>(xp, dtp, Ap, Bp, Cp, Dp, yp, st, d, begin, end);
    else
      scan_range<T, Isa::kBase>(xp, dtp, Ap, Bp, Cp, Dp, yp, st, d, begin, end);
  });
}

}  // namespace

void ssd_scan(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
              const at::Tensor& D, int64_t groups, int64_t chunk, const at::Tensor& y) {
  TORCH_CHECK(x.dim() == 3 && B.dim() == 3 && C.sizes() == B.sizes() && y.sizes() == x.sizes(),
              "ssd_scan: x, y [b, l, h*p] and B, C [b, l, g*n] expected");
  TORCH_CHECK(x.stride(2) == 1 && B.stride(2) == 1 && C.strides() == B.strides() && y.stride(2) == 1,
              "ssd_scan: rows must be contiguous, B and C alike");
  TORCH_CHECK(B.scalar_type() == x.scalar_type() && C.scalar_type() == x.scalar_type() &&
                  y.scalar_type() == x.scalar_type(),
              "ssd_scan: x, B, C and y must share a dtype");
  const int64_t b = x.size(0), l = x.size(1), h = A.size(0);
  TORCH_CHECK(A.is_contiguous() && A.scalar_type() == at::kFloat, "ssd_scan: A must be float32 [h]");
  TORCH_CHECK(dt.is_contiguous() && dt.scalar_type() == at::kFloat && dt.sizes() == at::IntArrayRef({b, l, h}),
              "ssd_scan: dt must be contiguous float32 [b, l, h]");
  TORCH_CHECK(D.is_contiguous() && D.scalar_type() == at::kFloat && D.dim() == 2 && D.size(0) == h &&
                  D.size(1) * h == x.size(2),
              "ssd_scan: D must be contiguous float32 [h, p]");
  TORCH_CHECK(groups > 0 && h % groups == 0 && B.size(2) % groups == 0, "ssd_scan: groups must divide heads and B");
  const int64_t n = B.size(2) / groups;
  const bool bf16 = x.scalar_type() == at::kBFloat16;
  TORCH_CHECK(bf16 || x.scalar_type() == at::kFloat, "ssd_scan: float32 or bfloat16 tensors expected");
  TORCH_CHECK(chunk > 0 && (!bf16 || (chunk % 2 == 0 && n % 2 == 0)),
              "ssd_scan: bfloat16 products need an even chunk and d_state");
  if (l == 0) return;
  const Dims d{b, l, h, D.size(1), groups, n, chunk, (l + chunk - 1) / chunk};
  if (bf16)
    scan_typed<uint16_t>(x, dt, A, B, C, D, y, d);
  else
    scan_typed<float>(x, dt, A, B, C, D, y, d);
}

}  // namespace network
