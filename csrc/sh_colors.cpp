// View-dependent colour from SH coefficients, forward and backward:
//   colour[b, c, n] = max(sum_j basis_j(dir) * coeffs[b, n, j] + 0.5, 0)
//   dir = normalise(means[b, n] - campos[b, c])
// (the +0.5 offset and the clamp follow gsplat / graphdeco). The backward also gives the camera
// centres' gradient on request.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros_like.h>

#include <algorithm>
#include <cmath>
#include <optional>

#include "camera_sums.h"
#include "simd.h"
#include "sh.h"
#include "splat.h"

namespace splat {
namespace {

// Unit direction of the offset (vx, vy, vz) = mean - camera centre, and the distance (0 when they
// coincide, in which case the direction is zero and carries no gradient). Branch-free, so the
// forward's loop calling it vectorises.
inline float unit_dir(float vx, float vy, float vz, float d[3]) {
  const float len = std::sqrt(vx * vx + vy * vy + vz * vz);
  const float inv = select(len > 0.f, 1.f / len, 0.f);
  d[0] = vx * inv;
  d[1] = vy * inv;
  d[2] = vz * inv;
  return len;
}

// Colours of Gaussians g0 .. g0 + count - 1 (coefficient rows of K) seen from the camera centre
// cam, into colour rows idx0 onwards. Blocks of kBlock Gaussians are copied into planar arrays,
// coloured by a loop GCC vectorises across Gaussians in the AVX2 copy, and copied out; each lane
// does the scalar formula's operations in the same order (the backward recomputes the pre-clamp
// colour and must round it identically).
constexpr int kBlock = 32;

template <int kDegree>
__attribute__((always_inline)) inline void sh_run(const float* cam, const float* means, const float* coeffs,
                                                 int64_t K, float* out, int64_t g0, int64_t idx0, int64_t count) {
  constexpr int kBasis = (kDegree + 1) * (kDegree + 1);
  const float cx = cam[0], cy = cam[1], cz = cam[2];
  float dir[3][kBlock], coef[3 * kBasis][kBlock], col[3][kBlock];
  for (int64_t start = 0; start < count; start += kBlock) {
    const int n = static_cast<int>(std::min<int64_t>(kBlock, count - start));
    for (int i = 0; i < kBlock; ++i) {
      const int64_t g = g0 + start + std::min(i, n - 1);  // the tail repeats the last Gaussian
      dir[0][i] = means[3 * g] - cx;
      dir[1][i] = means[3 * g + 1] - cy;
      dir[2][i] = means[3 * g + 2] - cz;
      for (int q = 0; q < 3 * kBasis; ++q) coef[q][i] = coeffs[g * K * 3 + q];
    }
    for (int i = 0; i < kBlock; ++i) {
      float d[3], basis[16];
      unit_dir(dir[0][i], dir[1][i], dir[2][i], d);
      sh_basis(kDegree, d[0], d[1], d[2], basis);
      for (int k = 0; k < 3; ++k) {
        float acc = 0.5f;
        for (int j = 0; j < kBasis; ++j) acc += basis[j] * coef[3 * j + k][i];
        col[k][i] = select(acc > 0.f, acc, 0.f);
      }
    }
    for (int i = 0; i < n; ++i)
      for (int k = 0; k < 3; ++k) out[3 * (idx0 + start + i) + k] = col[k][i];
  }
}

template <int kDegree>
SPLAT_TARGET_AVX2 void sh_run_avx2(const float* cam, const float* means, const float* coeffs, int64_t K,
                                   float* out, int64_t g0, int64_t idx0, int64_t count) {
  sh_run<kDegree>(cam, means, coeffs, K, out, g0, idx0, count);
}

template <int kDegree>
void sh_run_any(const float* cam, const float* means, const float* coeffs, int64_t K, float* out,
                int64_t g0, int64_t idx0, int64_t count) {
  if (cpu_has_avx2())
    sh_run_avx2<kDegree>(cam, means, coeffs, K, out, g0, idx0, count);
  else
    sh_run<kDegree>(cam, means, coeffs, K, out, g0, idx0, count);
}

}  // namespace

at::Tensor sh_forward(int64_t degree, const at::Tensor& means, const at::Tensor& campos,
                      const at::Tensor& coeffs) {
  const int64_t B = means.size(0), N = means.size(1), C = campos.size(1), K = coeffs.size(2);
  at::Tensor colors = at::empty({B, C, N, 3}, means.options());
  const float* m_ptr = means.data_ptr<float>();
  const float* cam_ptr = campos.data_ptr<float>();
  const float* sh_ptr = coeffs.data_ptr<float>();
  float* out = colors.data_ptr<float>();
  auto run = degree == 0 ? sh_run_any<0> : degree == 1 ? sh_run_any<1> : degree == 2 ? sh_run_any<2> : sh_run_any<3>;

  at::parallel_for(0, B * C * N, 2048, [&](int64_t begin, int64_t end) {
    // The range may span cameras: one run per camera it touches.
    for (int64_t idx = begin; idx < end;) {
      const int64_t bc = idx / N, n = idx % N, count = std::min(end - idx, N - n);
      run(cam_ptr + 3 * bc, m_ptr, sh_ptr, K, out, (bc / C) * N + n, idx, count);
      idx += count;
    }
  });
  return colors;
}

std::tuple<at::Tensor, at::Tensor, std::optional<at::Tensor>> sh_backward(
    int64_t degree, const at::Tensor& means, const at::Tensor& campos, const at::Tensor& coeffs,
    const at::Tensor& v_colors, bool campos_grad) {
  const int64_t B = means.size(0), N = means.size(1), C = campos.size(1), K = coeffs.size(2);
  const int deg = static_cast<int>(degree), n_basis = (deg + 1) * (deg + 1);
  at::Tensor v_means = at::zeros_like(means);
  at::Tensor v_coeffs = at::zeros_like(coeffs);
  const float* m_ptr = means.data_ptr<float>();
  const float* cam_ptr = campos.data_ptr<float>();
  const float* sh_ptr = coeffs.data_ptr<float>();
  const float* vc_ptr = v_colors.data_ptr<float>();
  float* gm_ptr = v_means.data_ptr<float>();
  float* gsh_ptr = v_coeffs.data_ptr<float>();
  std::optional<CameraSums> cam_sums;
  if (campos_grad) cam_sums.emplace(B, C, N, 3);

  // One task per chunk of Gaussians, each looping over the cameras, so each Gaussian's gradient
  // rows have a single writer.
  for_each_chunk(B, N, [&](int64_t task, int64_t b, int64_t n_begin, int64_t n_end) {
    float basis[16], w[16], d[3], grad_d[3];
    for (int64_t n = n_begin; n < n_end; ++n) {
      const int64_t g = b * N + n;
      const float* sh = sh_ptr + g * K * 3;
      float* gsh = gsh_ptr + g * K * 3;
      for (int64_t c = 0; c < C; ++c) {
        const int64_t idx = (b * C + c) * N + n;
        const float* vcol = vc_ptr + 3 * idx;
        if (vcol[0] == 0.f && vcol[1] == 0.f && vcol[2] == 0.f) continue;
        const float* mean = m_ptr + 3 * g;
        const float* cam = cam_ptr + 3 * (b * C + c);
        const float len = unit_dir(mean[0] - cam[0], mean[1] - cam[1], mean[2] - cam[2], d);
        sh_basis(deg, d[0], d[1], d[2], basis);
        float v[3];  // gradient of the pre-clamp colour
        for (int k = 0; k < 3; ++k) {
          float acc = 0.5f;
          for (int j = 0; j < n_basis; ++j) acc += basis[j] * sh[3 * j + k];
          v[k] = acc >= 0.f ? vcol[k] : 0.f;
        }
        for (int j = 0; j < n_basis; ++j) {
          gsh[3 * j] += basis[j] * v[0];
          gsh[3 * j + 1] += basis[j] * v[1];
          gsh[3 * j + 2] += basis[j] * v[2];
          w[j] = sh[3 * j] * v[0] + sh[3 * j + 1] * v[1] + sh[3 * j + 2] * v[2];
        }
        if (deg < 1 || len <= 0.f) continue;
        sh_basis_vjp(deg, d[0], d[1], d[2], w, grad_d);
        // Through the normalisation: (I - d d^T) / |v|. The direction is means - campos, so the
        // camera centre gets the opposite.
        const float radial = grad_d[0] * d[0] + grad_d[1] * d[1] + grad_d[2] * d[2];
        float* v_cam = campos_grad ? cam_sums->row(task, c) : nullptr;
        for (int i = 0; i < 3; ++i) {
          const float v_dir = (grad_d[i] - radial * d[i]) / len;
          gm_ptr[3 * g + i] += v_dir;
          if (v_cam) v_cam[i] -= v_dir;
        }
      }
    }
  });

  std::optional<at::Tensor> v_campos;
  if (campos_grad) {
    v_campos = at::empty_like(campos);
    float* gc_ptr = v_campos->data_ptr<float>();
    cam_sums->reduce([&](int64_t bc, const float* total) {
      for (int i = 0; i < 3; ++i) gc_ptr[3 * bc + i] = total[i];
    });
  }
  return {v_means, v_coeffs, v_campos};
}

}  // namespace splat
