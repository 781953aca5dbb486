// Tiny fixed-size linear algebra for the per-Gaussian projection (float, row-major, header-only).
#pragma once

#include <cmath>

namespace splat {

struct Vec3 {
  float x, y, z;
};

struct Quat {
  float w, x, y, z;
};

inline Vec3 load_vec3(const float* p) { return {p[0], p[1], p[2]}; }
inline Quat load_quat(const float* p) { return {p[0], p[1], p[2], p[3]}; }

struct Mat3 {
  float m[3][3];  // m[row][col]
};

inline Mat3 mat3_from_rows(const float* p) {  // p: 9 floats, row-major
  Mat3 r;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) r.m[i][j] = p[3 * i + j];
  return r;
}

inline Mat3 matmul(const Mat3& a, const Mat3& b) {
  Mat3 r;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)
      r.m[i][j] = a.m[i][0] * b.m[0][j] + a.m[i][1] * b.m[1][j] + a.m[i][2] * b.m[2][j];
  return r;
}

inline Mat3 transpose(const Mat3& a) {
  Mat3 r;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) r.m[i][j] = a.m[j][i];
  return r;
}

// a * b^T
inline Mat3 matmul_bt(const Mat3& a, const Mat3& b) { return matmul(a, transpose(b)); }

// a^T * b
inline Mat3 matmul_at(const Mat3& a, const Mat3& b) { return matmul(transpose(a), b); }

inline Vec3 matvec(const Mat3& a, const Vec3& v) {
  return {a.m[0][0] * v.x + a.m[0][1] * v.y + a.m[0][2] * v.z,
          a.m[1][0] * v.x + a.m[1][1] * v.y + a.m[1][2] * v.z,
          a.m[2][0] * v.x + a.m[2][1] * v.y + a.m[2][2] * v.z};
}

// a^T * v
inline Vec3 matvec_t(const Mat3& a, const Vec3& v) {
  return {a.m[0][0] * v.x + a.m[1][0] * v.y + a.m[2][0] * v.z,
          a.m[0][1] * v.x + a.m[1][1] * v.y + a.m[2][1] * v.z,
          a.m[0][2] * v.x + a.m[1][2] * v.y + a.m[2][2] * v.z};
}

// Rotation matrix of the unit quaternion (w, x, y, z) (callers normalise first).
inline Mat3 quat_to_rotmat(float w, float x, float y, float z) {
  Mat3 r;
  r.m[0][0] = 1.f - 2.f * (y * y + z * z);
  r.m[0][1] = 2.f * (x * y - w * z);
  r.m[0][2] = 2.f * (x * z + w * y);
  r.m[1][0] = 2.f * (x * y + w * z);
  r.m[1][1] = 1.f - 2.f * (x * x + z * z);
  r.m[1][2] = 2.f * (y * z - w * x);
  r.m[2][0] = 2.f * (x * z - w * y);
  r.m[2][1] = 2.f * (y * z + w * x);
  r.m[2][2] = 1.f - 2.f * (x * x + y * y);
  return r;
}

// Gradient of <v_R, quat_to_rotmat(q)> with respect to the unit quaternion q = (w, x, y, z).
inline void rotmat_vjp(float w, float x, float y, float z, const Mat3& v, float out[4]) {
  const auto& g = v.m;
  out[0] = 2.f * (-z * g[0][1] + y * g[0][2] + z * g[1][0] - x * g[1][2] - y * g[2][0] + x * g[2][1]);
  out[1] = 2.f * (y * g[0][1] + z * g[0][2] + y * g[1][0] - 2.f * x * g[1][1] - w * g[1][2] +
                  z * g[2][0] + w * g[2][1] - 2.f * x * g[2][2]);
  out[2] = 2.f * (-2.f * y * g[0][0] + x * g[0][1] + w * g[0][2] + x * g[1][0] + z * g[1][2] -
                  w * g[2][0] + z * g[2][1] - 2.f * y * g[2][2]);
  out[3] = 2.f * (-2.f * z * g[0][0] - w * g[0][1] + x * g[0][2] + w * g[1][0] - 2.f * z * g[1][1] +
                  y * g[1][2] + x * g[2][0] + y * g[2][1]);
}

}  // namespace splat
