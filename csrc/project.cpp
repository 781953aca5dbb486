// EWA projection of 3D Gaussians into each camera, forward and backward.
//
// For Gaussian n seen by camera c of scene b:
//   p       = R m + t                                   camera-space mean (OpenCV axes)
//   Sigma   = (Rq S)(Rq S)^T                            world covariance from quaternion and scales
//   Sigma_c = R Sigma R^T
//   J       = d(pixel)/d(p) at p, with x/z and y/z clamped to 1.3x the half field of view so that
//             Gaussians far outside the image do not get absurdly stretched footprints
//   cov2d   = J Sigma_c J^T + eps2d I,  conic = cov2d^-1 stored as (a, b, c) = ([0,0], [0,1], [1,1])
// A Gaussian is culled (radius 0, all outputs 0) when its depth is outside [near, far], its 2D
// covariance is degenerate, its opacity is below 1/255, or its bounding box misses the image.
// The backward also differentiates the cameras (viewmat and K) on request, as the torch reference
// does through the same formulas.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros_like.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <vector>

#include "camera_sums.h"
#include "simd.h"
#include "small_math.h"
#include "splat.h"

namespace splat {
namespace {

struct Camera {
  Mat3 R;
  Vec3 t;
  float fx, fy, cx, cy;
  float lim_x_neg, lim_x_pos, lim_y_neg, lim_y_pos;  // clamp range of x/z and y/z
};

Camera load_camera(const float* viewmat, const float* K, int64_t width, int64_t height) {
  Camera cam;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) cam.R.m[i][j] = viewmat[4 * i + j];
  cam.t = {viewmat[3], viewmat[7], viewmat[11]};
  cam.fx = K[0];
  cam.fy = K[4];
  cam.cx = K[2];
  cam.cy = K[5];
  const float tan_x = 0.5f * width / cam.fx, tan_y = 0.5f * height / cam.fy;
  cam.lim_x_pos = (width - cam.cx) / cam.fx + 0.3f * tan_x;
  cam.lim_x_neg = cam.cx / cam.fx + 0.3f * tan_x;
  cam.lim_y_pos = (height - cam.cy) / cam.fy + 0.3f * tan_y;
  cam.lim_y_neg = cam.cy / cam.fy + 0.3f * tan_y;
  return cam;
}

inline Vec3 to_camera(const Camera& cam, Vec3 m) {
  Vec3 p = matvec(cam.R, m);
  return {p.x + cam.t.x, p.y + cam.t.y, p.z + cam.t.z};
}

// Everything the projection computes for one Gaussian and camera; the backward recomputes it.
struct Footprint {
  float qn[4];      // normalised quaternion (w, x, y, z)
  float inv_qnorm;  // 1 / |q|
  Mat3 rot;         // Rq
  Mat3 M;           // Rq S
  Mat3 cov_c;       // camera-space covariance
  float J[2][3];    // projection Jacobian (with clamped x/z, y/z)
  float tx, ty;     // z * clamped(x/z), z * clamped(y/z)
  bool x_inside, y_inside;  // whether the clamps were inactive
  float s00, s01, s11;      // 2D covariance including eps2d
};

// Quaternion and scales are passed by value: in the vectorised forward loop they live in registers.
__attribute__((always_inline)) inline Footprint footprint(const Camera& cam, Vec3 p, Quat quat,
                                                          Vec3 scale, float eps2d) {
  Footprint f;
  const float q[4] = {quat.w, quat.x, quat.y, quat.z}, s[3] = {scale.x, scale.y, scale.z};
  const float inv = 1.f / std::sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
  f.inv_qnorm = inv;
  for (int i = 0; i < 4; ++i) f.qn[i] = q[i] * inv;
  f.rot = quat_to_rotmat(f.qn[0], f.qn[1], f.qn[2], f.qn[3]);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) f.M.m[i][j] = f.rot.m[i][j] * s[j];
  const Mat3 cov = matmul_bt(f.M, f.M);
  f.cov_c = matmul_bt(matmul(cam.R, cov), cam.R);

  const float rz = 1.f / p.z;
  const float u = p.x * rz, v = p.y * rz;
  f.x_inside = u >= -cam.lim_x_neg && u <= cam.lim_x_pos;
  f.y_inside = v >= -cam.lim_y_neg && v <= cam.lim_y_pos;
  f.tx = p.z * std::min(cam.lim_x_pos, std::max(-cam.lim_x_neg, u));
  f.ty = p.z * std::min(cam.lim_y_pos, std::max(-cam.lim_y_neg, v));
  f.J[0][0] = cam.fx * rz;
  f.J[0][1] = 0.f;
  f.J[0][2] = -cam.fx * f.tx * rz * rz;
  f.J[1][0] = 0.f;
  f.J[1][1] = cam.fy * rz;
  f.J[1][2] = -cam.fy * f.ty * rz * rz;

  float JS[2][3];  // J Sigma_c
  for (int r = 0; r < 2; ++r)
    for (int j = 0; j < 3; ++j)
      JS[r][j] = f.J[r][0] * f.cov_c.m[0][j] + f.J[r][1] * f.cov_c.m[1][j] + f.J[r][2] * f.cov_c.m[2][j];
  auto dot3 = [](const float* a, const float* b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; };
  f.s00 = dot3(JS[0], f.J[0]) + eps2d;
  f.s01 = dot3(JS[0], f.J[1]);
  f.s11 = dot3(JS[1], f.J[1]) + eps2d;
  return f;
}

}  // namespace

namespace {

struct ForwardArgs {
  const float *means, *quats, *scales, *extend;  // extend: box half-size in sigmas, < 0 culls
  int32_t* radii;
  float *means2d, *depths, *conics;
  float eps2d, near_plane, far_plane, width, height;
};

// Projects Gaussians g0 .. g0 + count - 1 into one camera, writing output slots idx0 onwards.
// Blocks of kBlock Gaussians are copied into planar arrays, projected by a branch-free loop (a
// culled Gaussian computes like the others and is zeroed by its mask) that GCC vectorises
// across Gaussians in the AVX2 copy, and copied out. Each lane does the same IEEE operations as a
// scalar run (no FMA here), so both copies give identical results.
constexpr int kBlock = 64;

__attribute__((always_inline)) inline void project_run(const Camera& camera, const ForwardArgs& args,
                                                      int64_t g0, int64_t idx0, int64_t count) {
  // Local copies: the output stores could alias the referenced floats as far as GCC knows.
  const Camera cam = camera;
  const ForwardArgs a = args;
  float in[11][kBlock];  // mean xyz, quaternion wxyz, scale xyz, extend
  float out[5][kBlock];    // radius x, y (as floats), mean2d x, y, depth
  float conic[3][kBlock];  // a, b, c
  for (int64_t start = 0; start < count; start += kBlock) {
    const int n = static_cast<int>(std::min<int64_t>(kBlock, count - start));
    for (int i = 0; i < kBlock; ++i) {
      const int64_t g = g0 + start + std::min(i, n - 1);  // the tail repeats the last Gaussian
      for (int k = 0; k < 3; ++k) in[k][i] = a.means[3 * g + k];
      for (int k = 0; k < 4; ++k) in[3 + k][i] = a.quats[4 * g + k];
      for (int k = 0; k < 3; ++k) in[7 + k][i] = a.scales[3 * g + k];
      in[10][i] = a.extend[g];
    }
    for (int i = 0; i < kBlock; ++i) {
      const Vec3 p = to_camera(cam, {in[0][i], in[1][i], in[2][i]});
      const Footprint f =
          footprint(cam, p, {in[3][i], in[4][i], in[5][i], in[6][i]}, {in[7][i], in[8][i], in[9][i]}, a.eps2d);
      const float det = f.s00 * f.s11 - f.s01 * f.s01;
      const float extend = in[10][i];
      // The cap keeps the int conversion defined; no image is 2^30 pixels across.
      const float rx = std::min(std::ceil(extend * std::sqrt(f.s00)), 1073741824.f);
      const float ry = std::min(std::ceil(extend * std::sqrt(f.s11)), 1073741824.f);
      const float rz = 1.f / p.z;
      const float mx = cam.fx * p.x * rz + cam.cx, my = cam.fy * p.y * rz + cam.cy;
      const bool keep = (p.z >= a.near_plane) & (p.z <= a.far_plane) & (det > 0.f) & (extend >= 0.f) &
                        (rx + ry > 0.f) /* both >= 0 */ & (mx + rx > 0.f) & (mx - rx < a.width) &
                        (my + ry > 0.f) & (my - ry < a.height);
      out[0][i] = select(keep, rx, 0.f);
      out[1][i] = select(keep, ry, 0.f);
      out[2][i] = select(keep, mx, 0.f);
      out[3][i] = select(keep, my, 0.f);
      out[4][i] = select(keep, p.z, 0.f);
      conic[0][i] = select(keep, f.s11 / det, 0.f);
      conic[1][i] = select(keep, -f.s01 / det, 0.f);
      conic[2][i] = select(keep, f.s00 / det, 0.f);
    }
    for (int i = 0; i < n; ++i) {
      const int64_t idx = idx0 + start + i;
      a.radii[2 * idx] = static_cast<int32_t>(out[0][i]);
      a.radii[2 * idx + 1] = static_cast<int32_t>(out[1][i]);
      a.means2d[2 * idx] = out[2][i];
      a.means2d[2 * idx + 1] = out[3][i];
      a.depths[idx] = out[4][i];
      for (int k = 0; k < 3; ++k) a.conics[3 * idx + k] = conic[k][i];
    }
  }
}

SPLAT_TARGET_AVX2 void project_run_avx2(const Camera& cam, const ForwardArgs& a, int64_t g0, int64_t idx0,
                                        int64_t count) {
  project_run(cam, a, g0, idx0, count);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> project_forward(
    const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
    const at::Tensor& opacities, const at::Tensor& viewmats, const at::Tensor& Ks, int64_t width,
    int64_t height, double eps2d, double near_plane, double far_plane) {
  const int64_t B = means.size(0), N = means.size(1), C = viewmats.size(1);
  auto opt = means.options();
  at::Tensor radii = at::empty({B, C, N, 2}, opt.dtype(at::kInt));
  at::Tensor means2d = at::empty({B, C, N, 2}, opt);
  at::Tensor depths = at::empty({B, C, N}, opt);
  at::Tensor conics = at::empty({B, C, N, 3}, opt);

  // Opacity-aware box: beyond sqrt(2 ln(o / alpha_min)) sigmas alpha is below 1/255. Once per
  // Gaussian, not per camera, and outside the vector loop (there is no vector log).
  std::vector<float> extend(static_cast<size_t>(B * N));
  const float* o_ptr = opacities.data_ptr<float>();
  at::parallel_for(0, B * N, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t g = begin; g < end; ++g)
      extend[g] = o_ptr[g] >= kAlphaMin ? std::min(kExtendMax, std::sqrt(2.f * std::log(o_ptr[g] / kAlphaMin))) : -1.f;
  });

  const ForwardArgs args{means.data_ptr<float>(), quats.data_ptr<float>(), scales.data_ptr<float>(),
                         extend.data(), radii.data_ptr<int32_t>(), means2d.data_ptr<float>(),
                         depths.data_ptr<float>(), conics.data_ptr<float>(), static_cast<float>(eps2d),
                         static_cast<float>(near_plane), static_cast<float>(far_plane),
                         static_cast<float>(width), static_cast<float>(height)};
  const float* vm_ptr = viewmats.data_ptr<float>();
  const float* k_ptr = Ks.data_ptr<float>();
  at::parallel_for(0, B * C * N, 1024, [&](int64_t begin, int64_t end) {
    // The range may span cameras: one run per camera it touches.
    for (int64_t idx = begin; idx < end;) {
      const int64_t bc = idx / N, n = idx % N, count = std::min(end - idx, N - n);
      const Camera cam = load_camera(vm_ptr + bc * 16, k_ptr + bc * 9, width, height);
      const int64_t g0 = (bc / C) * N + n;
      if (cpu_has_avx2())
        project_run_avx2(cam, args, g0, idx, count);
      else
        project_run(cam, args, g0, idx, count);
      idx += count;
    }
  });
  return {radii, means2d, depths, conics};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, std::optional<at::Tensor>, std::optional<at::Tensor>>
project_backward(const at::Tensor& means, const at::Tensor& quats, const at::Tensor& scales,
                 const at::Tensor& viewmats, const at::Tensor& Ks, const at::Tensor& radii,
                 const at::Tensor& conics, const at::Tensor& v_means2d, const at::Tensor& v_depths,
                 const at::Tensor& v_conics, int64_t width, int64_t height, bool camera_grads) {
  const int64_t B = means.size(0), N = means.size(1), C = viewmats.size(1);
  at::Tensor v_means = at::zeros_like(means);
  at::Tensor v_quats = at::zeros_like(quats);
  at::Tensor v_scales = at::zeros_like(scales);

  const float* m_ptr = means.data_ptr<float>();
  const float* q_ptr = quats.data_ptr<float>();
  const float* s_ptr = scales.data_ptr<float>();
  const float* vm_ptr = viewmats.data_ptr<float>();
  const float* k_ptr = Ks.data_ptr<float>();
  const int32_t* radii_ptr = radii.data_ptr<int32_t>();
  const float* con_ptr = conics.data_ptr<float>();
  const float* vm2_ptr = v_means2d.data_ptr<float>();
  const float* vd_ptr = v_depths.data_ptr<float>();
  const float* vcon_ptr = v_conics.data_ptr<float>();
  float* gm_ptr = v_means.data_ptr<float>();
  float* gq_ptr = v_quats.data_ptr<float>();
  float* gs_ptr = v_scales.data_ptr<float>();
  // Per camera: the top 3x4 of the viewmat (row-major), then fx, fy, cx, cy.
  constexpr int kCamWidth = 16;
  std::optional<CameraSums> cam_sums;
  if (camera_grads) cam_sums.emplace(B, C, N, kCamWidth);

  // One task per chunk of Gaussians, each looping over the cameras, so each Gaussian's gradient
  // rows have a single writer.
  for_each_chunk(B, N, [&](int64_t task, int64_t b, int64_t n_begin, int64_t n_end) {
    for (int64_t n = n_begin; n < n_end; ++n) {
      const int64_t g = b * N + n;
      for (int64_t c = 0; c < C; ++c) {
        const int64_t idx = (b * C + c) * N + n;
        if (radii_ptr[2 * idx] <= 0 && radii_ptr[2 * idx + 1] <= 0) continue;
        const Camera cam =
            load_camera(vm_ptr + (b * C + c) * 16, k_ptr + (b * C + c) * 9, width, height);
        const float* m = m_ptr + 3 * g;
        const Vec3 p = to_camera(cam, load_vec3(m));
        // eps2d only shifts the diagonal, which the backward does not need.
        const Footprint f = footprint(cam, p, load_quat(q_ptr + 4 * g), load_vec3(s_ptr + 3 * g), 0.f);

        // conic = cov2d^-1: dL/dcov2d = -P V P with V the symmetric gradient of (a, b, c).
        const float a = con_ptr[3 * idx], bb = con_ptr[3 * idx + 1], cc = con_ptr[3 * idx + 2];
        const float va = vcon_ptr[3 * idx], vb = 0.5f * vcon_ptr[3 * idx + 1], vc = vcon_ptr[3 * idx + 2];
        const float PV00 = a * va + bb * vb, PV01 = a * vb + bb * vc;
        const float PV10 = bb * va + cc * vb, PV11 = bb * vb + cc * vc;
        float G[2][2];
        G[0][0] = -(PV00 * a + PV01 * bb);
        G[0][1] = -(PV00 * bb + PV01 * cc);
        G[1][0] = -(PV10 * a + PV11 * bb);
        G[1][1] = -(PV10 * bb + PV11 * cc);

        // cov2d = J Sigma_c J^T
        float GJ[2][3];
        for (int r = 0; r < 2; ++r)
          for (int j = 0; j < 3; ++j) GJ[r][j] = G[r][0] * f.J[0][j] + G[r][1] * f.J[1][j];
        Mat3 v_cov_c;  // symmetric: each off-diagonal pair shares its gradient equally
        for (int i = 0; i < 3; ++i)
          for (int j = 0; j < 3; ++j) v_cov_c.m[i][j] = f.J[0][i] * GJ[0][j] + f.J[1][i] * GJ[1][j];
        float v_J[2][3];
        for (int r = 0; r < 2; ++r)
          for (int j = 0; j < 3; ++j)
            v_J[r][j] = 2.f * (GJ[r][0] * f.cov_c.m[0][j] + GJ[r][1] * f.cov_c.m[1][j] +
                               GJ[r][2] * f.cov_c.m[2][j]);

        // Sigma_c = R Sigma R^T, Sigma = M M^T, M = Rq S
        const Mat3 v_cov = matmul(matmul_at(cam.R, v_cov_c), cam.R);
        const Mat3 v_M2 = matmul(v_cov, f.M);  // half of dL/dM (v_cov is symmetric)
        const float* s = s_ptr + 3 * g;
        Mat3 v_rot;
        for (int j = 0; j < 3; ++j) {
          float vs = 0.f;
          for (int i = 0; i < 3; ++i) {
            vs += 2.f * v_M2.m[i][j] * f.rot.m[i][j];
            v_rot.m[i][j] = 2.f * v_M2.m[i][j] * s[j];
          }
          gs_ptr[3 * g + j] += vs;
        }
        float v_qn[4];
        rotmat_vjp(f.qn[0], f.qn[1], f.qn[2], f.qn[3], v_rot, v_qn);
        const float dot = v_qn[0] * f.qn[0] + v_qn[1] * f.qn[1] + v_qn[2] * f.qn[2] + v_qn[3] * f.qn[3];
        for (int i = 0; i < 4; ++i) gq_ptr[4 * g + i] += (v_qn[i] - dot * f.qn[i]) * f.inv_qnorm;

        // Camera-space mean: through the pixel position, the depth and the Jacobian.
        const float rz = 1.f / p.z, rz2 = rz * rz, rz3 = rz2 * rz;
        const float vmx = vm2_ptr[2 * idx], vmy = vm2_ptr[2 * idx + 1];
        Vec3 v_p = {cam.fx * rz * vmx, cam.fy * rz * vmy,
                    -(cam.fx * p.x * vmx + cam.fy * p.y * vmy) * rz2 + vd_ptr[idx]};
        v_p.z += -cam.fx * rz2 * v_J[0][0] - cam.fy * rz2 * v_J[1][1];
        if (f.x_inside) {
          v_p.x += -cam.fx * rz2 * v_J[0][2];
          v_p.z += 2.f * cam.fx * p.x * rz3 * v_J[0][2];
        } else {
          v_p.z += cam.fx * f.tx * rz3 * v_J[0][2];
        }
        if (f.y_inside) {
          v_p.y += -cam.fy * rz2 * v_J[1][2];
          v_p.z += 2.f * cam.fy * p.y * rz3 * v_J[1][2];
        } else {
          v_p.z += cam.fy * f.ty * rz3 * v_J[1][2];
        }
        const Vec3 v_m = matvec_t(cam.R, v_p);
        gm_ptr[3 * g] += v_m.x;
        gm_ptr[3 * g + 1] += v_m.y;
        gm_ptr[3 * g + 2] += v_m.z;

        if (!camera_grads) continue;
        float* v_cam = cam_sums->row(task, c);
        // p = R m + t and Sigma_c = R Sigma R^T: dL/dR = v_p m^T + 2 v_cov_c R Sigma (v_cov_c
        // symmetric), dL/dt = v_p.
        const Mat3 v_R = matmul(v_cov_c, matmul(cam.R, matmul_bt(f.M, f.M)));
        const float vp[3] = {v_p.x, v_p.y, v_p.z};
        for (int i = 0; i < 3; ++i) {
          for (int j = 0; j < 3; ++j) v_cam[4 * i + j] += vp[i] * m[j] + 2.f * v_R.m[i][j];
          v_cam[4 * i + 3] += vp[i];
        }
        // Intrinsics: mx = fx x/z + cx, J00 = fx/z, J02 = -fx tx/z^2 with tx = x inside the clamp.
        // At the clamp fx tx/z is fx lim_x_pos = 1.15 W - cx (or -fx lim_x_neg = -(cx + 0.15 W)),
        // so J02 no longer depends on fx but moves with cx by 1/z. Likewise for y.
        v_cam[12] += vmx * p.x * rz + v_J[0][0] * rz + (f.x_inside ? -f.tx * rz2 * v_J[0][2] : 0.f);
        v_cam[13] += vmy * p.y * rz + v_J[1][1] * rz + (f.y_inside ? -f.ty * rz2 * v_J[1][2] : 0.f);
        v_cam[14] += vmx + (f.x_inside ? 0.f : rz * v_J[0][2]);
        v_cam[15] += vmy + (f.y_inside ? 0.f : rz * v_J[1][2]);
      }
    }
  });

  std::optional<at::Tensor> v_viewmats, v_Ks;
  if (camera_grads) {
    v_viewmats = at::zeros_like(viewmats);  // the bottom row [0 0 0 1] is not used
    v_Ks = at::zeros_like(Ks);              // nor are the skew and the bottom row of K
    float* gv_ptr = v_viewmats->data_ptr<float>();
    float* gk_ptr = v_Ks->data_ptr<float>();
    cam_sums->reduce([&](int64_t bc, const float* total) {
      for (int j = 0; j < 12; ++j) gv_ptr[16 * bc + j] = total[j];
      gk_ptr[9 * bc + 0] = total[12];
      gk_ptr[9 * bc + 4] = total[13];
      gk_ptr[9 * bc + 2] = total[14];
      gk_ptr[9 * bc + 5] = total[15];
    });
  }
  return {v_means, v_quats, v_scales, v_viewmats, v_Ks};
}

}  // namespace splat
