// The pre-norms of the residual blocks (model/norms.py): LayerNorm without bias or RMSNorm of the
// float32 residual stream, handed to the branch in its weights' dtype, and the residual add back.
//   layer:  out = (x - mean(x)) / sqrt(var(x) + eps) * weight
//   rms:    out = x / sqrt(mean(x^2) + eps) * weight
// One pass per row where PyTorch makes the norm's passes and then a separate dtype conversion:
// the row stays in cache between its statistics and its output. Statistics are float32 (two passes
// over the cached row for the variance, as the mean is subtracted before squaring) and summed in a
// fixed order; a bfloat16 output is the float32 one rounded once. `add_pre_norm` first forms the
// residual sum x + y (y in the branch's dtype, widened exactly), writes it, and normalises it, so the
// sum is read once for both.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <cmath>
#include <tuple>

#include "network.h"
#include "simd.h"

namespace network {
namespace {

constexpr int kLanes = 16;

// sum of f(s[i]) over [0, D), accumulated in kLanes interleaved partial sums that are then added
// pairwise in a fixed order. A plain `omp simd` reduction leaves the order to the vectoriser, which
// may pick a different one in each instantiation: a bfloat16 output would then not be exactly the
// float32 output rounded (as autocast computes it).
template <typename F>
inline float lane_sum(const float* s, int64_t D, F f) {
  float part[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= D; i += kLanes)
    for (int j = 0; j < kLanes; ++j) part[j] += f(s[i + j]);
  for (int j = 0; i < D; ++i, ++j) part[j] += f(s[i]);
  for (int width = kLanes / 2; width > 0; width /= 2)
    for (int j = 0; j < width; ++j) part[j] += part[j + width];
  return part[0];
}

// Normalises one row s[0, D) into out.
template <typename T>
inline void norm_row(const float* s, const float* weight, T* out, int64_t D, bool center, float eps) {
  const float mean = center ? lane_sum(s, D, [](float v) { return v; }) / static_cast<float>(D) : 0.f;
  const float squares = lane_sum(s, D, [mean](float v) { return (v - mean) * (v - mean); });
  const float rstd = 1.f / std::sqrt(squares / static_cast<float>(D) + eps);
  for (int64_t i = 0; i < D; ++i) narrow((s[i] - mean) * rstd * weight[i], out + i);
}

// Rows [begin, end): out = norm(x) or, with y, sum = x + y and out = norm(sum).
template <typename T, typename Y>
void rows(const float* x, const Y* y, const float* weight, float* sum, T* out, int64_t D, bool center, float eps,
          int64_t begin, int64_t end) {
  for (int64_t r = begin; r < end; ++r) {
    const float* xr = x + r * D;
    if (y != nullptr) {
      const Y* yr = y + r * D;
      float* sr = sum + r * D;
      for (int64_t i = 0; i < D; ++i) sr[i] = xr[i] + widen(yr[i]);
      norm_row(sr, weight, out + r * D, D, center, eps);
    } else {
      norm_row(xr, weight, out + r * D, D, center, eps);
    }
  }
}

template <typename T, typename Y>
SPLAT_TARGET_AVX2 void rows_avx2(const float* x, const Y* y, const float* weight, float* sum, T* out, int64_t D,
                                 bool center, float eps, int64_t begin, int64_t end) {
  rows<T, Y>(x, y, weight, sum, out, D, center, eps, begin, end);
}

template <typename T, typename Y>
void run(const float* x, const Y* y, const float* weight, float* sum, T* out, int64_t R, int64_t D, bool center,
         float eps) {
  at::parallel_for(0, R, std::max<int64_t>(1, 16384 / D), [&](int64_t begin, int64_t end) {
    if (splat::cpu_has_avx2())
      rows_avx2<T, Y>(x, y, weight, sum, out, D, center, eps, begin, end);
    else
      rows<T, Y>(x, y, weight, sum, out, D, center, eps, begin, end);
  });
}

template <typename Y>
void dispatch_out(const at::Tensor& x, const Y* y, const at::Tensor& weight, float* sum, at::Tensor& out, bool center,
                  double eps) {
  const int64_t R = x.size(0), D = x.size(1);
  if (out.scalar_type() == at::kBFloat16)
    run(x.data_ptr<float>(), y, weight.data_ptr<float>(), sum, reinterpret_cast<uint16_t*>(out.data_ptr()), R, D,
        center, static_cast<float>(eps));
  else
    run(x.data_ptr<float>(), y, weight.data_ptr<float>(), sum, out.data_ptr<float>(), R, D, center,
        static_cast<float>(eps));
}

// out = x + y, y widened to float32.
template <typename Y>
void add_rows(const float* x, const Y* y, float* out, int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) out[i] = x[i] + widen(y[i]);
}

template <typename Y>
SPLAT_TARGET_AVX2 void add_rows_avx2(const float* x, const Y* y, float* out, int64_t begin, int64_t end) {
  add_rows(x, y, out, begin, end);
}

template <typename Y>
void add(const float* x, const Y* y, float* out, int64_t n) {
  at::parallel_for(0, n, 1 << 16, [&](int64_t begin, int64_t end) {
    if (splat::cpu_has_avx2())
      add_rows_avx2(x, y, out, begin, end);
    else
      add_rows(x, y, out, begin, end);
  });
}

}  // namespace

// x [R, D] float32 contiguous, weight [D] float32 contiguous. Returns norm(x) [R, D] in `dtype`
// (float32 or bfloat16).
at::Tensor pre_norm(const at::Tensor& x, const at::Tensor& weight, double eps, bool center, at::ScalarType dtype) {
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(dtype));
  dispatch_out<float>(x, nullptr, weight, nullptr, out, center, eps);
  return out;
}

// x [R, D] float32 and y [R, D] float32 or bfloat16, both contiguous. Returns (x + y in float32,
// norm(x + y) in `dtype`).
std::tuple<at::Tensor, at::Tensor> add_pre_norm(const at::Tensor& x, const at::Tensor& y, const at::Tensor& weight,
                                                double eps, bool center, at::ScalarType dtype) {
  at::Tensor sum = at::empty(x.sizes(), x.options());
  at::Tensor out = at::empty(x.sizes(), x.options().dtype(dtype));
  if (y.scalar_type() == at::kBFloat16)
    dispatch_out(x, reinterpret_cast<const uint16_t*>(y.data_ptr()), weight, sum.data_ptr<float>(), out, center, eps);
  else
    dispatch_out(x, y.data_ptr<float>(), weight, sum.data_ptr<float>(), out, center, eps);
  return {sum, out};
}

// x float32 and y float32 or bfloat16 of one shape, both contiguous. Returns x + y in float32.
at::Tensor residual_add(const at::Tensor& x, const at::Tensor& y) {
  at::Tensor out = at::empty(x.sizes(), x.options());
  if (y.scalar_type() == at::kBFloat16)
    add(x.data_ptr<float>(), reinterpret_cast<const uint16_t*>(y.data_ptr()), out.data_ptr<float>(), x.numel());
  else
    add(x.data_ptr<float>(), y.data_ptr<float>(), out.data_ptr<float>(), x.numel());
  return out;
}

}  // namespace network
