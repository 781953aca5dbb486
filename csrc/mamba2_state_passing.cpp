// The state a chunked Mamba2 (SSD) scan carries across the chunks of one slab (model/ssd.py,
// `state_passing`):
//   s_0 = s_in,  s_{k+1} = a_k * s_k + u_k,  returns (s_0 .. s_{c-1} in u's dtype, s_c in float32).
// The running state stays float32 whatever u's dtype, since bfloat16 rounding would compound from
// chunk to chunk; only the stacked copies that the readout matmul takes are rounded. Each row of the
// state lives in a float32 buffer in cache while u and the stacked states stream through once,
// where the PyTorch twin makes three tensor-wide passes per chunk. The arithmetic is the twin's
// (torch.addcmul: one fused multiply-add where the CPU has FMA; bfloat16 rounded to nearest even,
// NaN kept NaN), so the two agree bit for bit.
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>

#include <cstring>
#include <vector>

#include "mamba2.h"
#include "simd.h"

namespace mamba2 {
namespace {

// Layout: u and states [B, C, G, N, H * P] (chunk c, group g, state row n, then the group's H heads
// of P channels side by side), decay [B, C, G, H], s_in and s_out [B, G, N, H * P].
struct Dims {
  int64_t B, C, G, N, H, P;
};

// Rows (b, g, n) in [begin, end): the whole chunk recurrence of one row before the next.
template <typename T, bool kFma>
void pass_rows(const T* u, const float* decay, const float* s_in, T* states, float* s_out, const Dims& d,
               int64_t begin, int64_t end) {
  const int64_t width = d.H * d.P;
  std::vector<float> s(width);
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / (d.G * d.N), g = (row / d.N) % d.G, n = row % d.N;
    std::memcpy(s.data(), s_in + row * width, width * sizeof(float));
    for (int64_t k = 0; k < d.C; ++k) {
      const int64_t offset = (((b * d.C + k) * d.G + g) * d.N + n) * width;
      const T* uk = u + offset;
      T* out = states + offset;
      const float* ak = decay + ((b * d.C + k) * d.G + g) * d.H;
      for (int64_t h = 0; h < d.H; ++h) {
        const float a = ak[h];
        float* sh = s.data() + h * d.P;
        for (int64_t p = 0; p < d.P; ++p) {
          narrow(sh[p], out + h * d.P + p);
          sh[p] = splat::mul_add<kFma>(a, sh[p], widen(uk[h * d.P + p]));
        }
      }
    }
    std::memcpy(s_out + row * width, s.data(), width * sizeof(float));
  }
}

template <typename T>
SPLAT_TARGET_AVX2 void pass_rows_avx2(const T* u, const float* decay, const float* s_in, T* states, float* s_out,
                                      const Dims& d, int64_t begin, int64_t end) {
  pass_rows<T, true>(u, decay, s_in, states, s_out, d, begin, end);
}

template <typename T>
void run(const T* u, const float* decay, const float* s_in, T* states, float* s_out, const Dims& d) {
  // One row per task at least: a row carries its state through all c chunks, about c * H * P values.
  at::parallel_for(0, d.B * d.G * d.N, 1, [&](int64_t begin, int64_t end) {
    if (splat::cpu_has_avx2())
      pass_rows_avx2(u, decay, s_in, states, s_out, d, begin, end);
    else
      pass_rows<T, false>(u, decay, s_in, states, s_out, d, begin, end);
  });
}

}  // namespace

// u [B, C, G, N, H, P] float32 or bfloat16, decay [B, C, G, H] float32, s_in [B, G, N, H, P] float32,
// all contiguous (the Python side guarantees it).
std::tuple<at::Tensor, at::Tensor> state_passing(const at::Tensor& u, const at::Tensor& decay, const at::Tensor& s_in) {
  const Dims d{u.size(0), u.size(1), u.size(2), u.size(3), u.size(4), u.size(5)};
  at::Tensor states = at::empty_like(u);
  at::Tensor s_out = at::empty_like(s_in);
  if (u.scalar_type() == at::kBFloat16)
    run(reinterpret_cast<const uint16_t*>(u.data_ptr()), decay.data_ptr<float>(), s_in.data_ptr<float>(),
        reinterpret_cast<uint16_t*>(states.data_ptr()), s_out.data_ptr<float>(), d);
  else
    run(u.data_ptr<float>(), decay.data_ptr<float>(), s_in.data_ptr<float>(), states.data_ptr<float>(),
        s_out.data_ptr<float>(), d);
  return {states, s_out};
}

}  // namespace mamba2
