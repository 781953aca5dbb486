// The Gaussian head's activation (model/gaussian_head.py, GaussianHead.activate) in one pass:
// each pixel's raw channels [3 distance logits | 3K SH | 3 log-scales | 4 quaternion | 1 opacity]
// are read once, in the projection's token order, and every field is written in float32 straight
// into its place in the pixel-ordered outputs. PyTorch makes about twenty passes (a widening copy
// per field, the mean, sigmoid, products, clamp, the quaternion norm, then a copy into the output),
// which cost more than the head's matmul. Arithmetic is float32 in the twin's order; the sigmoid
// is network.h's (exp_neg, under one float ulp), so the results match the twin to float32 rounding.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>

#include "network.h"
#include "simd.h"

namespace network {
namespace {

struct Outputs {
  float *means, *log_scales, *quats, *opacity, *sh, *distance;
};

struct Constants {
  float max_dist, scale_bias, scale_max, opacity_bias;
};

// One pixel: q its raw channels, o and d its ray, n its index in the outputs.
template <typename T>
inline void pixel(const T* q, const float* o, const float* d, int64_t n, int64_t sh_count, const Constants& k,
                  const Outputs& out) {
  const float mean = (widen(q[0]) + widen(q[1]) + widen(q[2])) / 3.f;
  const float distance = sigmoid<false>(mean) * k.max_dist;
  out.distance[n] = distance;
  for (int c = 0; c < 3; ++c) out.means[3 * n + c] = o[c] + distance * d[c];
  const T* sh = q + 3;
  float* sh_out = out.sh + sh_count * n;
  for (int64_t c = 0; c < sh_count; ++c) sh_out[c] = widen(sh[c]);
  const T* rest = sh + sh_count;
  for (int c = 0; c < 3; ++c) out.log_scales[3 * n + c] = std::min(widen(rest[c]) + k.scale_bias, k.scale_max);
  float quat[4], squares = 0.f;
  for (int c = 0; c < 4; ++c) {
    quat[c] = widen(rest[3 + c]);
    squares += quat[c] * quat[c];
  }
  const float norm = std::max(std::sqrt(squares), 1e-12f);  // F.normalize's eps
  for (int c = 0; c < 4; ++c) out.quats[4 * n + c] = quat[c] / norm;
  out.opacity[n] = widen(rest[7]) + k.opacity_bias;
}

// Rays [v, H, W, 3] of any strides (origins are usually one per view, expanded from the cameras'
// centres, themselves a column of the camera-to-world matrices).
struct Rays {
  const float* data;
  int64_t view, row, column, channel;
  void at(int64_t v, int64_t y, int64_t x, float* out) const {
    const float* p = data + v * view + y * row + x * column;
    for (int c = 0; c < 3; ++c) out[c] = p[c * channel];
  }
};

template <typename T>
void run(const T* raw, const int64_t* size, const int64_t* stride, const Rays& origins, const Rays& dirs,
         int64_t sh_count, const Constants& k, const Outputs& out) {
  // raw [v, h, P, w, P, C]: pixel rows are (v, h, P), pixels along a row (w, P).
  const int64_t h = size[1], p = size[2], w = size[3], width = w * p;
  at::parallel_for(0, size[0] * h * p, 16, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t pi = row % p, i = row / p % h, view = row / (p * h), y = i * p + pi;
      const T* base = raw + view * stride[0] + i * stride[1] + pi * stride[2];
      for (int64_t j = 0; j < w; ++j)
        for (int64_t pj = 0; pj < p; ++pj) {
          const int64_t x = j * p + pj;
          float o[3], d[3];
          origins.at(view, y, x, o);
          dirs.at(view, y, x, d);
          pixel(base + j * stride[3] + pj * stride[4], o, d, row * width + x, sh_count, k, out);
        }
    }
  });
}

inline Rays rays(const at::Tensor& t) {
  return {t.data_ptr<float>(), t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

}  // namespace

// raw [v, h, P, w, P, C] (float32 or bfloat16, unit channel stride, any other strides) in token
// order; origins, dirs [v, h*P, w*P, 3] float32 of any strides; outputs float32
// contiguous in pixel order: means and log_scales [N, 3], quats [N, 4], opacity [N], sh [N, C - 11]
// (K coefficients x rgb), distance [N].
void gaussian_activate(const at::Tensor& raw, const at::Tensor& origins, const at::Tensor& dirs,
                       const at::Tensor& means, const at::Tensor& log_scales, const at::Tensor& quats,
                       const at::Tensor& opacity, const at::Tensor& sh, const at::Tensor& distance, double max_dist,
                       double scale_bias, double scale_max, double opacity_bias) {
  const Outputs out{means.data_ptr<float>(), log_scales.data_ptr<float>(), quats.data_ptr<float>(),
                    opacity.data_ptr<float>(), sh.data_ptr<float>(), distance.data_ptr<float>()};
  const Constants k{static_cast<float>(max_dist), static_cast<float>(scale_bias), static_cast<float>(scale_max),
                    static_cast<float>(opacity_bias)};
  const int64_t sh_count = raw.size(5) - 11;
  if (raw.scalar_type() == at::kBFloat16)
    run(reinterpret_cast<const uint16_t*>(raw.data_ptr()), raw.sizes().data(), raw.strides().data(), rays(origins),
        rays(dirs), sh_count, k, out);
  else
    run(raw.data_ptr<float>(), raw.sizes().data(), raw.strides().data(), rays(origins), rays(dirs), sh_count, k, out);
}

}  // namespace network
