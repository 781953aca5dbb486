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

#include "network.h"
#include "simd.h"

namespace network {
namespace {

// The operands of one call: rows of y and z of D channels, y's rows y_stride elements apart, z's
// (sequences of l rows) z_batch and z_step; out [R, D] contiguous.
template <typename T>
struct Rows {
  const T* y;
  int64_t y_stride;
  const T* z;
  int64_t z_batch, z_step;
  const float* weight;
  T* out;
  int64_t l, D, groups;
  float eps;
};

// One row: y and z into o, or added to o's values with kAdd.
template <typename T, bool kFma, bool kAdd>
__attribute__((always_inline)) inline void norm_row(const T* yr, const T* zr, T* o, float* h, const Rows<T>& a) {
  const int64_t width = a.D / a.groups;
  for (int64_t i = 0; i < a.D; ++i) h[i] = widen(yr[i]) * silu<kFma>(widen(zr[i]));
  for (int64_t g = 0; g < a.groups; ++g) {
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = g * width; i < (g + 1) * width; ++i) sum += h[i] * h[i];
    const float scale = 1.f / std::sqrt(sum / static_cast<float>(width) + a.eps);
    for (int64_t i = g * width; i < (g + 1) * width; ++i) {
      const float v = h[i] * scale * a.weight[i];
      narrow(kAdd ? widen(o[i]) + v : v, o + i);
    }
  }
}

// Rows [begin, end) of y. Plain: z row and out row r with y row r. kReversed: y holds each
// sequence in reversed order (the backward direction's scan order), z and out in the sequence's
// order; y row r goes with the z row of the same token and is added to that token's out row.
template <typename T, bool kFma, bool kReversed>
__attribute__((always_inline)) inline void norm_rows(const Rows<T>& a, int64_t begin, int64_t end) {
  std::vector<float> h(a.D);
  for (int64_t r = begin; r < end; ++r) {
    const int64_t b = r / a.l, t = kReversed ? a.l - 1 - r % a.l : r % a.l;  // the token of row r
    norm_row<T, kFma, kReversed>(a.y + r * a.y_stride, a.z + b * a.z_batch + t * a.z_step, a.out + (b * a.l + t) * a.D,
                                 h.data(), a);
  }
}

// Copies for AVX2 + FMA and for AVX-512 (the SiLU's exp and division bound the loop: wider vectors
// pay), chosen at run time.
template <typename T, bool kReversed>
SPLAT_TARGET_AVX2 void norm_rows_avx2(const Rows<T>& a, int64_t begin, int64_t end) {
  norm_rows<T, true, kReversed>(a, begin, end);
}

template <typename T, bool kReversed>
SPLAT_TARGET_AVX512 void norm_rows_avx512(const Rows<T>& a, int64_t begin, int64_t end) {
  norm_rows<T, true, kReversed>(a, begin, end);
}

template <bool kReversed = false, typename T>
void run(const Rows<T>& a, int64_t rows) {
  at::parallel_for(0, rows, std::max<int64_t>(1, 16384 / a.D), [&](int64_t begin, int64_t end) {
    if (splat::cpu_has_avx512())
      norm_rows_avx512<T, kReversed>(a, begin, end);
    else if (splat::cpu_has_avx2())
      norm_rows_avx2<T, kReversed>(a, begin, end);
    else
      norm_rows<T, false, kReversed>(a, begin, end);
  });
}

// The operands of a call on tensors of element type T (uint16_t: bfloat16 bits).
template <typename T>
Rows<T> rows_of(const at::Tensor& y, int64_t y_stride, const at::Tensor& z, int64_t z_batch, int64_t z_step,
                const at::Tensor& weight, at::Tensor& out, int64_t l, int64_t groups, double eps) {
  return {reinterpret_cast<const T*>(y.data_ptr()), y_stride, reinterpret_cast<const T*>(z.data_ptr()), z_batch, z_step,
          weight.data_ptr<float>(), reinterpret_cast<T*>(out.data_ptr()), l, out.size(-1), groups,
          static_cast<float>(eps)};
}

}  // namespace

// y, z [R, D] of one dtype (float32 or bfloat16) with unit channel stride (rows may be further apart,
// as z is a slice of the input projection), weight [D] float32 contiguous. Returns [R, D] contiguous.
at::Tensor gated_rms_norm(const at::Tensor& y, const at::Tensor& z, const at::Tensor& weight, int64_t groups,
                          double eps) {
  const int64_t R = y.size(0);
  at::Tensor out = at::empty({R, y.size(1)}, y.options());
  if (y.scalar_type() == at::kBFloat16)
    run(rows_of<uint16_t>(y, y.stride(0), z, 0, z.stride(0), weight, out, R, groups, eps), R);
  else
    run(rows_of<float>(y, y.stride(0), z, 0, z.stride(0), weight, out, R, groups, eps), R);
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
  if (y.scalar_type() == at::kBFloat16)
    run</*kReversed=*/true>(rows_of<uint16_t>(y, D, z, z.stride(0), z.stride(1), weight, out, l, groups, eps), rows);
  else
    run</*kReversed=*/true>(rows_of<float>(y, D, z, z.stride(0), z.stride(1), weight, out, l, groups, eps), rows);
}

}  // namespace network
