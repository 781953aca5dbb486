// The gated RMSNorm closing each Mamba2 scan direction (model/mamba2.py, GatedRMSNorm):
//   h = y * silu(z),  out = h / sqrt(mean(h^2 over the channels of its group) + eps) * weight.
// One pass per row: h is formed in float32 in a cache-resident buffer while its sum of squares
// accumulates, then scaled into the output (in y's dtype), where the PyTorch twin makes about ten
// tensor-wide passes. Statistics and products are float32 whatever y's dtype; bfloat16 inputs and
// outputs are rounded once. silu uses exp_neg (under one float ulp), so the result matches the twin
// to float32 rounding, not bit for bit. The backward scan direction's variant reads its rows in the
// reversed sequence's order and adds them to the forward direction's output, so that neither a
// flip nor the sum of the two directions is a pass of its own.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <cmath>
#include <vector>

#include "mamba2.h"
#include "simd.h"

namespace mamba2 {
namespace {

// One row: y and z (D channels each) into o, or added to o's values with kAdd.
template <typename T, bool kFma, bool kAdd>
void norm_row(const T* yr, const T* zr, const float* weight, T* o, float* h, int64_t D, int64_t groups, float eps) {
  const int64_t width = D / groups;
  for (int64_t i = 0; i < D; ++i) h[i] = widen(yr[i]) * silu<kFma>(widen(zr[i]));
  for (int64_t g = 0; g < groups; ++g) {
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = g * width; i < (g + 1) * width; ++i) sum += h[i] * h[i];
    const float scale = 1.f / std::sqrt(sum / static_cast<float>(width) + eps);
    for (int64_t i = g * width; i < (g + 1) * width; ++i) {
      const float v = h[i] * scale * weight[i];
      narrow(kAdd ? widen(o[i]) + v : v, o + i);
    }
  }
}

// Rows [begin, end) of y and z (rows y_stride and z_stride elements apart) into out.
template <typename T, bool kFma>
void norm_rows(const T* y, int64_t y_stride, const T* z, int64_t z_stride, const float* weight, T* out, int64_t D,
               int64_t groups, float eps, int64_t begin, int64_t end) {
  std::vector<float> h(D);
  for (int64_t r = begin; r < end; ++r)
    norm_row<T, kFma, false>(y + r * y_stride, z + r * z_stride, weight, out + r * D, h.data(), D, groups, eps);
}

// Rows [begin, end) of y [b, l, D] contiguous, in reversed-sequence order, with the z rows of the
// same tokens (z in sequence order: batch and step strides), added to the same tokens' rows of out
// [b, l, D] contiguous.
template <typename T, bool kFma>
void norm_rows_add_reversed(const T* y, const T* z, int64_t z_batch, int64_t z_step, const float* weight, T* out,
                            int64_t l, int64_t D, int64_t groups, float eps, int64_t begin, int64_t end) {
  std::vector<float> h(D);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t b = r / l, t = l - 1 - r % l;  // the token scan row r belongs to
    norm_row<T, kFma, true>(y + r * D, z + b * z_batch + t * z_step, weight, out + (b * l + t) * D, h.data(), D,
                            groups, eps);
  }
}

template <typename T>
SPLAT_TARGET_AVX2 void norm_rows_avx2(const T* y, int64_t y_stride, const T* z, int64_t z_stride, const float* weight,
                                      T* out, int64_t D, int64_t groups, float eps, int64_t begin, int64_t end) {
  norm_rows<T, true>(y, y_stride, z, z_stride, weight, out, D, groups, eps, begin, end);
}

template <typename T>
SPLAT_TARGET_AVX2 void norm_rows_add_reversed_avx2(const T* y, const T* z, int64_t z_batch, int64_t z_step,
                                                   const float* weight, T* out, int64_t l, int64_t D, int64_t groups,
                                                   float eps, int64_t begin, int64_t end) {
  norm_rows_add_reversed<T, true>(y, z, z_batch, z_step, weight, out, l, D, groups, eps, begin, end);
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

template <typename T>
void run_add_reversed(const T* y, const T* z, int64_t z_batch, int64_t z_step, const float* weight, T* out,
                      int64_t rows, int64_t l, int64_t D, int64_t groups, float eps) {
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / D), [&](int64_t begin, int64_t end) {
    if (splat::cpu_has_avx2())
      norm_rows_add_reversed_avx2(y, z, z_batch, z_step, weight, out, l, D, groups, eps, begin, end);
    else
      norm_rows_add_reversed<T, false>(y, z, z_batch, z_step, weight, out, l, D, groups, eps, begin, end);
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

// The backward scan direction's norm without flipping anything: y [b, l, D] contiguous in the
// reversed sequence's order (the scan's), z [b, l, D] with unit channel stride in the sequence's
// order (a slice of the input projection), out [b, l, D] contiguous in the sequence's order (the
// forward direction's normed output, of y's dtype). Adds each token's normed row to its row of out,
// rounding the sum once.
void gated_rms_norm_add_reversed(at::Tensor& out, const at::Tensor& y, const at::Tensor& z, const at::Tensor& weight,
                                 int64_t groups, double eps) {
  const int64_t l = y.size(1), D = y.size(2), rows = y.size(0) * l;
  const float e = static_cast<float>(eps);
  if (y.scalar_type() == at::kBFloat16)
    run_add_reversed(reinterpret_cast<const uint16_t*>(y.data_ptr()), reinterpret_cast<const uint16_t*>(z.data_ptr()),
                     z.stride(0), z.stride(1), weight.data_ptr<float>(), reinterpret_cast<uint16_t*>(out.data_ptr()),
                     rows, l, D, groups, e);
  else
    run_add_reversed(y.data_ptr<float>(), z.data_ptr<float>(), z.stride(0), z.stride(1), weight.data_ptr<float>(),
                     out.data_ptr<float>(), rows, l, D, groups, e);
}

}  // namespace mamba2
