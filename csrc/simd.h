// Run-time choice between a baseline copy of a hot loop and one compiled for AVX2 + FMA, and the
// small branch-free helpers those loops share.
#pragma once

#include <bit>
#include <cstdint>

namespace splat {

#if defined(__x86_64__) || defined(__i386__)
#define SPLAT_TARGET_AVX2 __attribute__((target("avx2,fma")))
inline bool cpu_has_avx2() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}
#else
#define SPLAT_TARGET_AVX2
inline bool cpu_has_avx2() { return false; }
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

}  // namespace splat
