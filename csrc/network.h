// Entry points of the network's native CPU kernels: the Mamba2 scan, conv and gated norm, attention,
// pre-norms and residual adds, the Gaussian head's activation (model/native_kernels.py loads them,
// the modules call them when no gradient is needed; their PyTorch twins handle the rest and are the
// tests' oracles). Floating tensors are float32, or bfloat16 where noted, and
// laid out as documented per function; the Python side guarantees it.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/impl/alloc_cpu.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

#include "simd.h"

namespace network {

// mamba2_scan.cpp
void ssd_scan(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
              const at::Tensor& D, int64_t groups, int64_t chunk, const at::Tensor& y);

// mamba2_gated_norm.cpp
at::Tensor gated_rms_norm(const at::Tensor& y, const at::Tensor& z, const at::Tensor& weight, int64_t groups,
                          double eps);
void gated_rms_norm_add_reversed(at::Tensor& out, const at::Tensor& y, const at::Tensor& z, const at::Tensor& weight,
                                 int64_t groups, double eps);

// mamba2_conv.cpp
std::vector<at::Tensor> causal_conv1d_silu(const at::Tensor& xbc, const at::Tensor& weight, const at::Tensor& bias,
                                           at::IntArrayRef splits, bool reverse);

// norms.cpp
at::Tensor pre_norm(const at::Tensor& x, const at::Tensor& weight, double eps, bool center, at::ScalarType dtype);
std::tuple<at::Tensor, at::Tensor> add_pre_norm(const at::Tensor& x, const at::Tensor& y, const at::Tensor& weight,
                                                double eps, bool center, at::ScalarType dtype);
at::Tensor residual_add(const at::Tensor& x, const at::Tensor& y);

// gaussian_head.cpp
void gaussian_activate(const at::Tensor& raw, const at::Tensor& origins, const at::Tensor& dirs,
                       const at::Tensor& means, const at::Tensor& log_scales, const at::Tensor& quats,
                       const at::Tensor& opacity, const at::Tensor& sh, const at::Tensor& distance, double max_dist,
                       double scale_bias, double scale_max, double opacity_bias);

// attention.cpp
at::Tensor attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);

// Scratch memory for the kernels' matrix products, from torch's CPU allocator, which aligns to 64
// bytes: every tile row the products load or store then lies in one cache line (malloc's 16-byte
// alignment split them, and ran the products at 0.6-0.85x). Values are left uninitialised.
template <typename T>
struct ScratchAllocator {
  using value_type = T;
  ScratchAllocator() = default;
  template <typename U>
  ScratchAllocator(const ScratchAllocator<U>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(c10::alloc_cpu(n * sizeof(T))); }
  void deallocate(T* p, std::size_t) { c10::free_cpu(p); }
  template <typename U>
  void construct(U*) {}  // (no zero-fill)
  bool operator==(const ScratchAllocator&) const { return true; }
};
template <typename T>
using Scratch = std::vector<T, ScratchAllocator<T>>;

// Storage of float32 / bfloat16 values as raw bits, so the loops over them vectorise.
inline float widen(float v) { return v; }
inline float widen(uint16_t v) { return std::bit_cast<float>(static_cast<uint32_t>(v) << 16); }

inline void narrow(float x, float* out) { *out = x; }
// Rounded to nearest even, NaN kept NaN (what torch's float -> bfloat16 conversion does).
inline void narrow(float x, uint16_t* out) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  const bool nan = (bits & 0x7fffffffu) > 0x7f800000u;
  *out = static_cast<uint16_t>(nan ? 0x7fc0u : rounded);
}

// sigmoid(z) from e = exp(-|z|) in (0, 1]: 1 / (1 + e) for z >= 0, e / (1 + e) below (no overflow).
// exp_neg is under one float ulp, so this and silu match torch to float32 rounding, not bit for bit.
template <bool kFma>
inline float sigmoid(float z) {
  const float e = splat::exp_neg<kFma>(-std::fabs(z));
  return splat::select(z >= 0.f, 1.f, e) / (1.f + e);
}

template <bool kFma>
inline float silu(float z) {
  return z * sigmoid<kFma>(z);
}

}  // namespace network
