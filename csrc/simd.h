// Run-time choice between a baseline copy of a hot loop and one compiled for AVX2 + FMA, and the
// small branch-free helpers those loops share.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>

namespace splat {

#if defined(__x86_64__) || defined(__i386__)
#define SPLAT_TARGET_AVX2 __attribute__((target("avx2,fma")))
inline bool cpu_has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
// 512-bit vectors (GCC otherwise keeps to 256 bits even with AVX-512 enabled), for loops bound by
// arithmetic rather than memory: the same operations as the AVX2 + FMA copy, on twice the lanes.
#define SPLAT_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,prefer-vector-width=512")))
inline bool cpu_has_avx512() {
  static const bool yes = cpu_has_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl");
  return yes;
}
// AVX-512 with its bfloat16 conversions (vcvtne[2]ps2bf16) and DQ (vreduceps), for the intrinsics
// of the network's bfloat16 kernels (attention, the Mamba2 scan's operand packing).
#define SPLAT_TARGET_AVX512_BF16 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx2,fma,prefer-vector-width=512")))
inline bool cpu_has_avx512_bf16() {
  static const bool yes =
      cpu_has_avx512() && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bf16");
  return yes;
}
#else
#define SPLAT_TARGET_AVX2
#define SPLAT_TARGET_AVX512
#define SPLAT_TARGET_AVX512_BF16
inline bool cpu_has_avx2() { return false; }
inline bool cpu_has_avx512() { return false; }
inline bool cpu_has_avx512_bf16() { return false; }
#endif

// a * b + c, fused (one rounding) when kFma.
template <bool kFma>
inline float mul_add(float a, float b, float c) {
  if constexpr (kFma)
    return __builtin_fmaf(a, b, c);
  else
    return a * b + c;
}

// c ? a : b without a branch. Written as a plain ternary, GCC turns `x = c ? y : x` into a
// conditional store, which stops it from vectorising the whole loop.
inline float select(bool c, float a, float b) {
  const int32_t m = -static_cast<int32_t>(c);
  return std::bit_cast<float>((std::bit_cast<int32_t>(a) & m) | (std::bit_cast<int32_t>(b) & ~m));
}

inline int32_t select(bool c, int32_t a, int32_t b) {
  const int32_t m = -static_cast<int32_t>(c);
  return (a & m) | (b & ~m);
}

// exp(x) for x <= 0 in straight-line float arithmetic (Cephes' expf: range reduction by ln 2, a
// degree-5 polynomial, exponent bits), so that loops calling it vectorise. Relative error below
// 1e-7 (under one float ulp); inputs below -87 return ~1e-38 instead of denormals (far below any
// alpha threshold of the compositor, or any decay that matters to a scan).
template <bool kFma>
inline float exp_neg(float x) {
  x = std::max(x, -87.f);
  // Round to nearest by the 1.5 * 2^23 trick (no library call, so the loop stays vectorisable).
  const float n = mul_add<kFma>(x, 1.44269504088896341f, 12582912.f) - 12582912.f;
  const float r = mul_add<kFma>(n, 2.12194440e-4f, mul_add<kFma>(n, -0.693359375f, x));
  // The polynomial by Estrin's scheme: three independent pairs, then two levels, a chain of
  // about half Horner's length. The pixel loops are bound by this latency, not by throughput.
  const float r2 = r * r, r4 = r2 * r2;
  const float p54 = mul_add<kFma>(1.9875691500e-4f, r, 1.3981999507e-3f);
  const float p32 = mul_add<kFma>(8.3334519073e-3f, r, 4.1665795894e-2f);
  const float p10 = mul_add<kFma>(1.6666665459e-1f, r, 5.0000001201e-1f);
  const float y = mul_add<kFma>(p54, r4, mul_add<kFma>(p32, r2, p10));
  const float e = mul_add<kFma>(y, r2, r) + 1.f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  return e * std::bit_cast<float>(bits);
}

}  // namespace splat
