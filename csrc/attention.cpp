// Full (non-causal) softmax attention forward on CPU, float32 or bfloat16, without gradients
// (model/transformer.py calls it for inference; `attention_ref` there is the oracle):
//   out[b, i, h] = sum_j softmax_j(q[b, i, h] . k[b, j, h] / sqrt(d)) v[b, j, h]
// Flash-attention's order: per query row a running maximum and sum over blocks of keys, the scores
// of one block computed, exponentiated, and multiplied into the output accumulator before the
// next, so the L x L scores never exist. The products run on oneDNN's batch-reduce GEMM
// micro-kernels (at::native::cpublas::brgemm: AMX tiles or AVX-512 for bfloat16, AVX2 / AVX-512
// FMA for float32); the softmax between them is AVX-512 code here.
//
// Where the time goes (bfloat16, head dim 64): the two products cost 4 d = 256 FLOP per score,
// about 0.25 ns on one AMX core, so the softmax per score (exp, sum, bfloat16 rounding) has to
// cost about as little. Hence:
// - each head's keys (transposed) and values are packed into the micro-kernel's layout once, for
//   all query blocks, rather than once per query block;
// - the scale 1/sqrt(d) and the change to base 2 are one fused multiply-add on the float32 score
//   (exp(s / sqrt(d) - m) = 2^(s c - m c), c = log2(e) / sqrt(d)), q is read in place unscaled;
// - 2^x as 2^floor(x + 1/2) p(x + 1/2 - floor(x + 1/2)) (exp2_half): a degree-4 polynomial (2.7e-6
//   relative) where the result is rounded to bfloat16 anyway (2^-8), degree 6 (1.1e-7, float32
//   rounding) in float32;
// - a row's running maximum is taken from its first key block and raised only when exponentials
//   would grow huge (kMaxSum), so no later block is scanned for its maximum, and the accumulator
//   and the sums are rescaled rarely; the sums are kept as 16 partial sums until the end.
// Profiled at 1 x 16384 keys x 1 head (perf, one thread), the key product, the value product and
// the softmax then take about equal shares of the time; oneDNN's kernels run the products at
// 1-1.8 TFLOP/s.
// As in torch's CPU flash kernel, the bfloat16 products take bfloat16 operands (the exponentials
// rounded to bfloat16 before the second product, their sum kept in float32) and accumulate in
// float32; the output is the float32 accumulator over the sum, rounded once.
#include <ATen/Parallel.h>
#include <ATen/native/CPUBlas.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "network.h"

namespace network {
namespace {

namespace cpublas = at::native::cpublas;

// Block sizes, measured at the paper's shapes in bfloat16 (bench/bench_attention.py; float32 is
// bound by its products at all of them): `rows` query rows per value product, against `keys` keys
// per block, in tasks of `tile` query rows (which share each packed key block while it is in
// cache); the scores of `score_rows` rows at a time (32 KB, which stay in L1 for the softmax).
struct Blocks {
  int64_t rows, keys, tile, score_rows;
};
constexpr Blocks kBlocks{256, 256, 512, 32};
constexpr int64_t kMaxHeadDim = 256;

#if defined(__x86_64__)

// 2^(y - 1/2) for y <= ~1/2 (16 lanes): 2^floor(y) p(y - floor(y)) (vreduceps, vscalefps), p a
// polynomial fitted to 2^(t - 1/2) on [0, 1] by minimising the relative error (near-minimax, on
// Chebyshev nodes): kDegree 4, 2.7e-6 at most, or kDegree 6, 1.1e-7 (float32 rounding). The half
// is folded into the caller's multiply-add; it centres the polynomial's interval on 2^0, where
// 2^round(x) p(x - round(x)) would need a rounding and a subtraction more. Very negative y gives 0.
template <int kDegree>
SPLAT_TARGET_AVX512_BF16 inline __m512 exp2_half(__m512 y) {
  const __m512 t = _mm512_reduce_ps(y, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
  __m512 p;
  if constexpr (kDegree == 4) {
    p = _mm512_fmadd_ps(_mm512_set1_ps(0.009570101276040077f), t, _mm512_set1_ps(0.03677765652537346f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.17072580754756927f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.49002769589424133f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.7071086168289185f));
  } else {
    p = _mm512_fmadd_ps(_mm512_set1_ps(0.0001534581242594868f), t, _mm512_set1_ps(0.0008796187466941774f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.006843973882496357f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.03923264890909195f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.16986814141273499f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.49012893438339233f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.7071067690849304f));
  }
  return _mm512_scalef_ps(p, y);  // p 2^floor(y)
}

inline __mmask16 tail_mask(int64_t count) { return static_cast<__mmask16>((1u << count) - 1u); }

// Scale n values of an accumulator row.
SPLAT_TARGET_AVX512_BF16 inline void scale_row(float* o, int64_t n, float alpha) {
  const __m512 a = _mm512_set1_ps(alpha);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(o + i, _mm512_mul_ps(_mm512_loadu_ps(o + i), a));
  if (i < n) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(o + i, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, o + i), a));
  }
}

// Stores 16 (or `m` of them) float32 values as T; store2 32 values from two vectors.
SPLAT_TARGET_AVX512_BF16 inline void store(float* p, __m512 x, __mmask16 m = 0xffff) { _mm512_mask_storeu_ps(p, m, x); }
SPLAT_TARGET_AVX512_BF16 inline void store(at::BFloat16* p, __m512 x, __mmask16 m = 0xffff) {
  _mm256_mask_storeu_epi16(p, m, reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(x)));
}
SPLAT_TARGET_AVX512_BF16 inline void store2(float* p, __m512 lo, __m512 hi) {
  _mm512_storeu_ps(p, lo);
  _mm512_storeu_ps(p + 16, hi);
}
SPLAT_TARGET_AVX512_BF16 inline void store2(at::BFloat16* p, __m512 lo, __m512 hi) {
  _mm512_storeu_si512(p, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo)));
}

// One row of exponentials: p[i] = 2^(s[i] c - m c) as T for i < n, with vhalf = 1/2 - m c; returns
// their sum in 16 partial sums.
template <typename T, int kDegree>
SPLAT_TARGET_AVX512_BF16 inline __m512 exp_row(const float* s, T* p, int64_t n, __m512 vc, __m512 vhalf) {
  __m512 sum0 = _mm512_setzero_ps(), sum1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 ea = exp2_half<kDegree>(_mm512_fmadd_ps(_mm512_loadu_ps(s + i), vc, vhalf));
    const __m512 eb = exp2_half<kDegree>(_mm512_fmadd_ps(_mm512_loadu_ps(s + i + 16), vc, vhalf));
    sum0 = _mm512_add_ps(sum0, ea);
    sum1 = _mm512_add_ps(sum1, eb);
    store2(p + i, ea, eb);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask(std::min<int64_t>(16, n - i));
    const __m512 y = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, s + i), vc, vhalf);
    const __m512 ea = _mm512_maskz_mov_ps(m, exp2_half<kDegree>(y));
    sum0 = _mm512_add_ps(sum0, ea);
    store(p + i, ea, m);
  }
  return _mm512_add_ps(sum0, sum1);
}

SPLAT_TARGET_AVX512_BF16 inline float row_max(const float* s, int64_t n) {
  __m512 vmax = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(std::min<int64_t>(16, n - i));
    vmax = _mm512_mask_max_ps(vmax, m, vmax, _mm512_maskz_loadu_ps(m, s + i));
  }
  return _mm512_reduce_max_ps(vmax);
}

// A row's running maximum m is set by its first key block and raised only when a later block's
// exponentials, taken with it, sum to more than kMaxSum in some lane: below that they are no less
// exact in floating point than exponentials below 1 (the accumulator of up to 2^17 keys stays far
// from float32's 2^128), so the maximum of every block need not be found, nor the accumulator
// rescaled; above it (or at infinity) the row is redone with the block's maximum.
constexpr float kMaxSum = 0x1p64f;

// One block of scores for `rows` query rows: s [rows, n] (row stride `stride`) -> p (row stride
// `stride`, T), with the running maxima m (of the raw scores), sums l (16 partial sums per row)
// and accumulator rows o [rows, d] updated for it; `first` starts them.
template <typename T>
SPLAT_TARGET_AVX512_BF16 void softmax_block(const float* s, T* p, float* o, float* m, float* l, int64_t rows, int64_t n,
                               int64_t stride, int64_t d, float c, bool first) {
  constexpr int kDegree = std::is_same_v<T, float> ? 6 : 4;
  const __m512 vc = _mm512_set1_ps(c);
  for (int64_t r = 0; r < rows; ++r) {
    const float* sr = s + r * stride;
    T* pr = p + r * stride;
    if (first) m[r] = row_max(sr, n);
    __m512 sum = exp_row<T, kDegree>(sr, pr, n, vc, _mm512_set1_ps(0.5f - m[r] * c));
    if (!first) {
      if (_mm512_cmp_ps_mask(sum, _mm512_set1_ps(kMaxSum), _CMP_GT_OQ)) {  // rare: redo the row
        const float block_max = row_max(sr, n);
        const float alpha = exp2f((m[r] - block_max) * c);
        scale_row(o + r * d, d, alpha);
        scale_row(l + r * 16, 16, alpha);
        m[r] = block_max;
        sum = exp_row<T, kDegree>(sr, pr, n, vc, _mm512_set1_ps(0.5f - block_max * c));
      }
      sum = _mm512_add_ps(sum, _mm512_loadu_ps(l + r * 16));
    }
    _mm512_storeu_ps(l + r * 16, sum);
    if constexpr (!std::is_same_v<T, float>)
      if (n % 2) pr[n] = at::BFloat16(0.f);  // the pair partner of the last key (VNNI pairs keys)
  }
}

// out row = o row / l (16 partial sums), as T.
template <typename T>
SPLAT_TARGET_AVX512_BF16 void finish_row(const float* o, const float* l, T* out, int64_t d) {
  const __m512 inv = _mm512_set1_ps(1.f / _mm512_reduce_add_ps(_mm512_loadu_ps(l)));
  int64_t i = 0;
  for (; i + 16 <= d; i += 16) store(out + i, _mm512_mul_ps(_mm512_loadu_ps(o + i), inv));
  if (i < d) {
    const __mmask16 m = tail_mask(d - i);
    store(out + i, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, o + i), inv), m);
  }
}
#endif

// q, k, v [B, L, H, d] (channels contiguous, rows `*_row` elements apart) as raw pointers and strides.
struct Operand {
  const void* data;
  int64_t batch, row, head;
  template <typename T>
  const T* at(int64_t b, int64_t i, int64_t h) const {
    return static_cast<const T*>(data) + b * batch + i * row + h * head;
  }
  static Operand of(const at::Tensor& t) { return {t.data_ptr(), t.stride(0), t.stride(1), t.stride(2)}; }
};

// Packs each (batch, head, key block) of k and v for the products, contiguous (in place, rows
// 3 H d apart fall into a few cache sets): in bfloat16 k transposed in VNNI pairs of channels,
// [d / 2][keys][2], and v in VNNI pairs of keys, [keys / 2][d][2] (keys past L zero, so an odd
// last block pairs with zeros); in float32 k transposed, [d][keys], and v as it is, [keys][d].
// One block of both, 2 keys d values, is at `packed + index * 2 keys d`.
template <typename T>
void pack(const Operand& k, const Operand& v, T* packed, int64_t B, int64_t L, int64_t H, int64_t d, int64_t keys,
          int64_t blocks) {
  at::parallel_for(0, B * H * blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t index = begin; index < end; ++index) {
      const int64_t b = index / (H * blocks), h = index / blocks % H, j0 = index % blocks * keys;
      const int64_t n = std::min(keys, L - j0);
      T* kp = packed + index * 2 * keys * d;
      T* vp = kp + d * keys;
      if constexpr (std::is_same_v<T, float>) {
        for (int64_t j = 0; j < n; ++j) {
          const float* kr = k.at<float>(b, j0 + j, h);
          for (int64_t ch = 0; ch < d; ++ch) kp[ch * keys + j] = kr[ch];
          std::memcpy(vp + j * d, v.at<float>(b, j0 + j, h), sizeof(float) * d);
        }
      } else {
        // Channel pairs of k as 32-bit words: a transpose of [n][d / 2] words.
        auto* kw = reinterpret_cast<uint32_t*>(kp);
        for (int64_t j = 0; j < n; ++j) {
          const T* kr = k.at<T>(b, j0 + j, h);
          for (int64_t pair = 0; pair < d / 2; ++pair) std::memcpy(kw + pair * keys + j, kr + 2 * pair, 4);
        }
        std::memset(static_cast<void*>(vp), 0, sizeof(T) * keys * d);
        for (int64_t j = 0; j < n; ++j) {
          const T* vr = v.at<T>(b, j0 + j, h);
          T* dst = vp + (j / 2) * 2 * d + j % 2;
          for (int64_t ch = 0; ch < d; ++ch) dst[2 * ch] = vr[ch];
        }
      }
    }
  });
}

#if defined(__x86_64__)
template <typename T>
void run(const Operand& q, const Operand& k, const Operand& v, T* out, int64_t B, int64_t L, int64_t H, int64_t d) {
  constexpr bool kVnni = !std::is_same_v<T, float>;
  const Blocks bs = kBlocks;
  const int64_t keys = bs.keys, blocks = (L + keys - 1) / keys;
  const int64_t block_elems = 2 * keys * d;
  Scratch<T> packed_keys_values(B * H * blocks * block_elems);
  T* packed = packed_keys_values.data();
  pack(k, v, packed, B, L, H, d, keys, blocks);
  const int64_t tiles = (L + bs.tile - 1) / bs.tile;
  const float c = static_cast<float>(M_LOG2E / std::sqrt(static_cast<double>(d)));
  at::parallel_for(0, B * H * tiles, 1, [&](int64_t begin, int64_t end) {
    Scratch<float> scores(bs.score_rows * keys), outs(bs.tile * d), maxima(bs.tile), sums(bs.tile * 16);
    Scratch<T> probabilities(bs.rows * keys), queries(bs.tile * d);
    float *s = scores.data(), *o = outs.data(), *m = maxima.data(), *l = sums.data();
    T *p = probabilities.data(), *qt = queries.data();
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (H * tiles), h = task / tiles % H, i0 = task % tiles * bs.tile;
      const int64_t rows = std::min(bs.tile, L - i0);
      // The task's query rows, contiguous: in place, rows 3 H d apart, they fall into a few cache
      // sets (at H = 16 in bfloat16, 6 KB apart, all in two of L1's 64).
      for (int64_t r = 0; r < rows; ++r) std::memcpy(qt + r * d, q.at<T>(b, i0 + r, h), sizeof(T) * d);
      for (int64_t block = 0; block < blocks; ++block) {
        const int64_t n = std::min(keys, L - block * keys);
        const T* kp = packed + ((b * H + h) * blocks + block) * block_elems;
        for (int64_t r0 = 0; r0 < rows; r0 += bs.rows) {
          const int64_t mr = std::min(bs.rows, rows - r0);
          // The scores of a few rows at a time, exponentiated while they are in L1.
          for (int64_t r1 = r0; r1 < r0 + mr; r1 += bs.score_rows) {
            const int64_t sr = std::min(bs.score_rows, r0 + mr - r1);
            cpublas::brgemm(sr, n, d, d, keys, keys, false, qt + r1 * d, kp, s, kVnni);
            softmax_block(s, p + (r1 - r0) * keys, o + r1 * d, m + r1,
                          l + r1 * 16, sr, n, keys, d, c, block == 0);
          }
          // (VNNI pairs keys: an odd count takes the zero pair partners)
          cpublas::brgemm(mr, d, kVnni ? n + n % 2 : n, keys, d, d, block > 0, p, kp + d * keys, o + r0 * d, kVnni);
        }
      }
      for (int64_t r = 0; r < rows; ++r)
        finish_row(o + r * d, l + r * 16, out + ((b * L + i0 + r) * H + h) * d, d);
    }
    cpublas::brgemm_release(kVnni);
  });
}
#endif

}  // namespace

// q, k, v [B, L, H, d], one dtype (float32 or bfloat16), channels contiguous, any other strides;
// d even, at most 256. Returns out [B, L, H, d] contiguous.
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.dim() == 4 && q.sizes() == k.sizes() && q.sizes() == v.sizes(),
              "attention: q, k, v must be [B, L, H, d]");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(), "attention: mixed dtypes");
  TORCH_CHECK(q.stride(3) == 1 && k.stride(3) == 1 && v.stride(3) == 1, "attention: channels must be contiguous");
  const int64_t B = q.size(0), L = q.size(1), H = q.size(2), d = q.size(3);
  TORCH_CHECK(q.scalar_type() == at::kFloat || q.scalar_type() == at::kBFloat16, "attention: float32 or bfloat16 only");
  TORCH_CHECK(d > 0 && d % 2 == 0 && d <= kMaxHeadDim, "attention: head dim must be even and at most ", kMaxHeadDim);
#if defined(__x86_64__)
  // model/transformer.py's native_attention_blocker decides; these only keep a direct call from
  // running instructions the CPU lacks.
  TORCH_CHECK(splat::cpu_has_avx512() && __builtin_cpu_supports("avx512dq") &&
                  (q.scalar_type() == at::kFloat || splat::cpu_has_avx512_bf16()),
              "attention: this CPU lacks the AVX-512 instructions the kernel needs");
#else
  TORCH_CHECK(false, "attention: the kernel is for x86-64 CPUs");
#endif
  at::Tensor out = at::empty(q.sizes(), q.options());
#if defined(__x86_64__)
  if (B * L * H > 0) {
    if (q.scalar_type() == at::kBFloat16)
      run(Operand::of(q), Operand::of(k), Operand::of(v), out.data_ptr<at::BFloat16>(), B, L, H, d);
    else
      run(Operand::of(q), Operand::of(k), Operand::of(v), out.data_ptr<float>(), B, L, H, d);
  }
#endif
  return out;
}

}  // namespace network
