// Real spherical-harmonics basis up to degree 3 (16 functions) at a unit direction, and its
// gradient. Ordering and signs follow the graphdeco / gsplat convention:
//   l=1: -y, z, -x;  l=2: xy, yz, 3z^2-1, xz, x^2-y^2;  l=3: ... (see sh_basis)
// The polynomials are only meaningful on the unit sphere; callers project the gradient onto the
// sphere's tangent plane, which removes any dependence on how they extend off it.
#pragma once

namespace splat {

constexpr float kSH0 = 0.28209479177387814f;
constexpr float kSH1 = 0.4886025119029199f;
constexpr float kSH2[5] = {1.0925484305920792f, -1.0925484305920792f, 0.31539156525252005f,
                           -1.0925484305920792f, 0.5462742152960396f};
constexpr float kSH3[7] = {-0.5900435899266435f, 2.890611442640554f, -0.4570457994644658f,
                           0.3731763325901154f,  -0.4570457994644658f, 1.445305721320277f,
                           -0.5900435899266435f};

// basis[0 .. (degree+1)^2 - 1] at the unit direction (x, y, z).
inline void sh_basis(int degree, float x, float y, float z, float* basis) {
  basis[0] = kSH0;
  if (degree < 1) return;
  basis[1] = -kSH1 * y;
  basis[2] = kSH1 * z;
  basis[3] = -kSH1 * x;
  if (degree < 2) return;
  const float xx = x * x, yy = y * y, zz = z * z;
  basis[4] = kSH2[0] * x * y;
  basis[5] = kSH2[1] * y * z;
  basis[6] = kSH2[2] * (2.f * zz - xx - yy);
  basis[7] = kSH2[3] * x * z;
  basis[8] = kSH2[4] * (xx - yy);
  if (degree < 3) return;
  basis[9] = kSH3[0] * y * (3.f * xx - yy);
  basis[10] = kSH3[1] * x * y * z;
  basis[11] = kSH3[2] * y * (4.f * zz - xx - yy);
  basis[12] = kSH3[3] * z * (2.f * zz - 3.f * xx - 3.f * yy);
  basis[13] = kSH3[4] * x * (4.f * zz - xx - yy);
  basis[14] = kSH3[5] * z * (xx - yy);
  basis[15] = kSH3[6] * x * (xx - 3.f * yy);
}

// Gradient of sum_j w[j] * basis[j] with respect to (x, y, z), as a polynomial in x, y, z.
inline void sh_basis_vjp(int degree, float x, float y, float z, const float* w, float out[3]) {
  float gx = 0.f, gy = 0.f, gz = 0.f;
  if (degree >= 1) {
    gx += -kSH1 * w[3];
    gy += -kSH1 * w[1];
    gz += kSH1 * w[2];
  }
  if (degree >= 2) {
    gx += kSH2[0] * y * w[4] + kSH2[2] * (-2.f * x) * w[6] + kSH2[3] * z * w[7] + kSH2[4] * 2.f * x * w[8];
    gy += kSH2[0] * x * w[4] + kSH2[1] * z * w[5] + kSH2[2] * (-2.f * y) * w[6] - kSH2[4] * 2.f * y * w[8];
    gz += kSH2[1] * y * w[5] + kSH2[2] * 4.f * z * w[6] + kSH2[3] * x * w[7];
  }
  if (degree >= 3) {
    const float xx = x * x, yy = y * y, zz = z * z;
    gx += kSH3[0] * 6.f * x * y * w[9] + kSH3[1] * y * z * w[10] + kSH3[2] * (-2.f * x * y) * w[11] +
          kSH3[3] * (-6.f * x * z) * w[12] + kSH3[4] * (4.f * zz - 3.f * xx - yy) * w[13] +
          kSH3[5] * 2.f * x * z * w[14] + kSH3[6] * (3.f * xx - 3.f * yy) * w[15];
    gy += kSH3[0] * (3.f * xx - 3.f * yy) * w[9] + kSH3[1] * x * z * w[10] +
          kSH3[2] * (4.f * zz - xx - 3.f * yy) * w[11] + kSH3[3] * (-6.f * y * z) * w[12] +
          kSH3[4] * (-2.f * x * y) * w[13] + kSH3[5] * (-2.f * y * z) * w[14] +
          kSH3[6] * (-6.f * x * y) * w[15];
    gz += kSH3[1] * x * y * w[10] + kSH3[2] * 8.f * y * z * w[11] +
          kSH3[3] * (6.f * zz - 3.f * xx - 3.f * yy) * w[12] + kSH3[4] * 8.f * x * z * w[13] +
          kSH3[5] * (xx - yy) * w[14];
  }
  out[0] = gx;
  out[1] = gy;
  out[2] = gz;
}

}  // namespace splat
