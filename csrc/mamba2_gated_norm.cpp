// The gated RMSNorm closing each Mamba2 scan direction (model/mamba2.py, GatedRMSNorm):
//   h = y * silu(z),  out = h / sqrt(mean(h^2 over the channels of its group) + eps) * weight.
// One pass per row: h is formed in float32 in a cache-resident buffer while its sum of squares
// accumulates, then scaled into the output (in y's dtype), where the PyTorch twin makes about ten
// tensor-wide passes. Statistics and products are float32 whatever y's dtype; bfloat16 inputs and
// outputs are rounded once. silu uses exp_neg (under one float ulp), so the result matches the twin
// to float32 rounding, not bit for bit.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <cmath>
#include <vector>

#include "mamba2.h"
#include "simd.h"

namespace mamba2 {
namespace {

// z * sigmoid(z), with sigmoid from e = exp(-|z|) in (0, 1]: 1 / (1 + e) for z >= 0, e / (1 + e) below.
template <bool kFma>
inline float silu(float z) {
  const float e = splat::exp_neg<kFma>(-std::fabs(z));
  return z * splat::select(z >= 0.f, 1.f, e) / (1.f + e);
}

// Rows [begin, end) of y and z (D channels each, rows y_stride and z_stride elements apart) into out.
template <typename T, bool kFma>
void norm_rows(const T* y, int64_t y_stride, const T* z, int64_t z_stride, const float* weight, T* out, int64_t D,
               int64_t groups, float eps, int64_t begin, int64_t end) {
  const int64_t width = D / groups;
  std::vector<float> h(D);
  for (int64_t r = begin; r < end; ++r) {
    const T* yr = y + r * y_stride;
    const T* zr = z + r * z_stride;
    T* o = out + r * D;
    for (int64_t i = 0; i < D; ++i) h[i] = widen(yr[i]) * silu<kFma>(widen(zr[i]));
    for (int64_t g = 0; g < groups; ++g) {
      float sum = 0.f;
#pragma omp simd reduction(+ : sum)
      for (int64_t i = g * width; i < (g + 1) * width; ++i) sum += h[i] * h[i];
      const float scale = 1.f / std::sqrt(sum / static_cast<float>(width) + eps);
      for (int64_t i = g * width; i < (g + 1) * width; ++i) narrow(h[i] * scale * weight[i], o + i);
    }
  }
}

template <typename T>
SPLAT_TARGET_AVX2 void norm_rows_avx2(const T* y, int64_t y_stride, const T* z, int64_t z_stride, const float* weight,
                                      T* out, int64_t D, int64_t groups, float eps, int64_t begin, int64_t end) {
  norm_rows<T, true>(y, y_stride, z, z_stride, weight, out, D, groups, eps, begin, end);
}

template <typename T>
void run(const T* y, int64_t y_stride, const T* z, int64_t z_stride, const float* weight, T* out, int64_t rows,
         int64_t D, int64_t groups, float eps) {
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / D), [&](int64_t begin, int64_t end) {
    if (splat::cpu_has_avx2())
      norm_rows_avx2(y, y_stride, z, z_stride, weight, out, D, groups, eps, begin, end);
    else
      norm_rows<T, false>(y, y_stride, z, z_stride, weight, out, D, groups, eps, begin, end);
  });
}

}  // namespace

// y, z [R, D] of one dtype (float32 or bfloat16) with unit channel stride (rows may be further apart,
// as z is a slice of the input projection), weight [D] float32 contiguous. Returns [R, D] contiguous.
at::Tensor gated_rms_norm(const at::Tensor& y, const at::Tensor& z, const at::Tensor& weight, int64_t groups,
                          double eps) {
  const int64_t R = y.size(0), D = y.size(1);
  at::Tensor out = at::empty({R, D}, y.options());
  const float e = static_cast<float>(eps);
  if (y.scalar_type() == at::kBFloat16)
    run(reinterpret_cast<const uint16_t*>(y.data_ptr()), y.stride(0), reinterpret_cast<const uint16_t*>(z.data_ptr()),
        z.stride(0), weight.data_ptr<float>(), reinterpret_cast<uint16_t*>(out.data_ptr()), R, D, groups, e);
  else
    run(y.data_ptr<float>(), y.stride(0), z.data_ptr<float>(), z.stride(0), weight.data_ptr<float>(),
        out.data_ptr<float>(), R, D, groups, e);
  return out;
}

}  // namespace mamba2
