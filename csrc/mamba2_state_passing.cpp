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

// Layout: u and states [B, C, G, H, P * N] (chunk c, group g, the group's head h, then its P x N
// state), decay [B, C, G, H], s_in and s_out [B, G, H, P * N].
struct Dims {
  int64_t B, C, G, H, W;  // W = P * N, the values of one head's state
};

// Heads (b, g, h) in [begin, end): the whole chunk recurrence of one head's state before the next.
template <typename T, bool kFma>
void pass_rows(const T* u, const float* decay, const float* s_in, T* states, float* s_out, const Dims& d,
               int64_t begin, int64_t end) {
  std::vector<float> s(d.W);
  for (int64_t row = begin; row < end; ++row) {
    const int64_t b = row / (d.G * d.H), gh = row % (d.G * d.H);
    std::memcpy(s.data(), s_in + row * d.W, d.W * sizeof(float));
    for (int64_t k = 0; k < d.C; ++k) {
      const int64_t chunk_row = (b * d.C + k) * d.G * d.H + gh;
      const T* uk = u + chunk_row * d.W;
      T* out = states + chunk_row * d.W;
      const float a = decay[chunk_row];
      for (int64_t i = 0; i < d.W; ++i) {
        narrow(s[i], out + i);
        s[i] = splat::mul_add<kFma>(a, s[i], widen(uk[i]));
      }
    }
    std::memcpy(s_out + row * d.W, s.data(), d.W * sizeof(float));
  }
}

template <typename T>
SPLAT_TARGET_AVX2 void pass_rows_avx2(const T* u, const float* decay, const float* s_in, T* states, float* s_out,
                                      const Dims& d, int64_t begin, int64_t end) {
  pass_rows<T, true>(u, decay, s_in, states, s_out, d, begin, end);
}

template <typename T>
void run(const T* u, const float* decay, const float* s_in, T* states, float* s_out, const Dims& d) {
  // One head per task at least: it carries its state through all c chunks, c * P * N values.
  at::parallel_for(0, d.B * d.G * d.H, 1, [&](int64_t begin, int64_t end) {
    if (splat::cpu_has_avx2())
      pass_rows_avx2(u, decay, s_in, states, s_out, d, begin, end);
    else
      pass_rows<T, false>(u, decay, s_in, states, s_out, d, begin, end);
  });
}

}  // namespace

// u [B, C, G, H, P, N] float32 or bfloat16, decay [B, C, G, H] float32, s_in [B, G, H, P, N] float32,
// all contiguous (the Python side guarantees it).
std::tuple<at::Tensor, at::Tensor> state_passing(const at::Tensor& u, const at::Tensor& decay, const at::Tensor& s_in) {
  const Dims d{u.size(0), u.size(1), u.size(2), u.size(3), u.size(4) * u.size(5)};
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
