// The elementwise stages around the matmuls of one slab of the chunked Mamba2 (SSD) scan
// (model/ssd.py, `_slab_scan`), each one pass in float32 with outputs in the matmul dtype (float32 or
// bfloat16, rounded once), where PyTorch makes three to five tensor-wide passes:
//   chunk_inputs:  x_dt = x * dt                       (written head-major, as its matmul reads it)
//                  x_end = x * dt * exp(a_last - a)    (what each step leaves in the chunk-end state)
//   chunk_scores:  scores[h, l, s] = exp(a_l - a_s) * cb[l, s] for s <= l, else 0
//   chunk_outputs: y = y_diag + exp(a) * y_off + D * x (intra-chunk part, state readout, skip)
// a is the cumulative sum of dt * A inside each chunk (<= 0, non-increasing), so every exp argument
// is <= 0 and exp_neg applies. Their PyTorch twins in model/ssd.py are the tests' oracles.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <cstdint>

#include "mamba2.h"
#include "simd.h"

namespace mamba2 {
namespace {

// Dims of a slab: b batch, c chunks of q steps, h heads of p channels, g groups.
struct Slab {
  int64_t b, c, q, h, p;
};

template <typename T, bool kFma>
void inputs_chunks(const T* x, int64_t x_batch, int64_t x_step, const float* dt, const float* a, T* x_dt, T* x_end,
                   const Slab& s, int64_t begin, int64_t end) {
  for (int64_t bc = begin; bc < end; ++bc) {  // (batch, chunk) pairs
    const int64_t b = bc / s.c, k = bc % s.c;
    const float* a_chunk = a + bc * s.q * s.h;
    const float* a_last = a_chunk + (s.q - 1) * s.h;
    for (int64_t l = 0; l < s.q; ++l) {
      const T* xr = x + b * x_batch + (k * s.q + l) * x_step;
      const float* dt_r = dt + (bc * s.q + l) * s.h;
      for (int64_t hh = 0; hh < s.h; ++hh) {
        const float d = dt_r[hh];
        const float d_end = d * splat::exp_neg<kFma>(a_last[hh] - a_chunk[l * s.h + hh]);
        T* o_dt = x_dt + ((bc * s.h + hh) * s.q + l) * s.p;  // [b, c, h, q, p]
        T* o_end = x_end + ((bc * s.q + l) * s.h + hh) * s.p;  // [b, c, q, h, p]
        const T* xh = xr + hh * s.p;
        for (int64_t i = 0; i < s.p; ++i) {
          const float v = widen(xh[i]);
          narrow(v * d, o_dt + i);
          narrow(v * d_end, o_end + i);
        }
      }
    }
  }
}

template <typename T, bool kFma>
void scores_chunks(const float* a, const T* cb, T* scores, const Slab& s, int64_t g, int64_t begin, int64_t end) {
  const int64_t hg = s.h / g;
  for (int64_t bch = begin; bch < end; ++bch) {  // (batch, chunk, head) triples
    const int64_t bc = bch / s.h, hh = bch % s.h;
    const float* a_chunk = a + bc * s.q * s.h;
    const T* cb_g = cb + (bc * g + hh / hg) * s.q * s.q;
    T* out = scores + bch * s.q * s.q;
    for (int64_t l = 0; l < s.q; ++l) {
      const float a_l = a_chunk[l * s.h + hh];
      T* row = out + l * s.q;
      for (int64_t j = 0; j <= l; ++j)
        narrow(splat::exp_neg<kFma>(a_l - a_chunk[j * s.h + hh]) * widen(cb_g[l * s.q + j]), row + j);
      for (int64_t j = l + 1; j < s.q; ++j) narrow(0.f, row + j);
    }
  }
}

template <typename T, bool kFma>
void outputs_chunks(const T* y_diag, const T* y_off, const float* a, const T* x, int64_t x_batch, int64_t x_step,
                    const float* D, T* y, const Slab& s, int64_t begin, int64_t end) {
  for (int64_t bc = begin; bc < end; ++bc) {
    const int64_t b = bc / s.c, k = bc % s.c;
    for (int64_t l = 0; l < s.q; ++l) {
      const T* xr = x + b * x_batch + (k * s.q + l) * x_step;
      for (int64_t hh = 0; hh < s.h; ++hh) {
        const float e = splat::exp_neg<kFma>(a[(bc * s.q + l) * s.h + hh]);
        const T* yd = y_diag + ((bc * s.h + hh) * s.q + l) * s.p;
        const int64_t row = ((bc * s.q + l) * s.h + hh) * s.p;
        const float* Dh = D + hh * s.p;
        for (int64_t i = 0; i < s.p; ++i) {
          const float v = splat::mul_add<kFma>(e, widen(y_off[row + i]), widen(yd[i]));
          narrow(splat::mul_add<kFma>(Dh[i], widen(xr[hh * s.p + i]), v), y + row + i);
        }
      }
    }
  }
}

// Each stage: a baseline copy and an AVX2 + FMA copy of the same loop, chosen at run time.
template <typename T>
SPLAT_TARGET_AVX2 void inputs_avx2(const T* x, int64_t xb, int64_t xs, const float* dt, const float* a, T* x_dt,
                                   T* x_end, const Slab& s, int64_t begin, int64_t end) {
  inputs_chunks<T, true>(x, xb, xs, dt, a, x_dt, x_end, s, begin, end);
}

template <typename T>
SPLAT_TARGET_AVX2 void scores_avx2(const float* a, const T* cb, T* scores, const Slab& s, int64_t g, int64_t begin,
                                   int64_t end) {
  scores_chunks<T, true>(a, cb, scores, s, g, begin, end);
}

template <typename T>
SPLAT_TARGET_AVX2 void outputs_avx2(const T* y_diag, const T* y_off, const float* a, const T* x, int64_t xb, int64_t xs,
                                    const float* D, T* y, const Slab& s, int64_t begin, int64_t end) {
  outputs_chunks<T, true>(y_diag, y_off, a, x, xb, xs, D, y, s, begin, end);
}

template <typename T>
const T* data(const at::Tensor& t) {
  return reinterpret_cast<const T*>(t.data_ptr());
}

template <typename T>
T* data(at::Tensor& t) {
  return reinterpret_cast<T*>(t.data_ptr());
}

// Calls fn<T>() with T = uint16_t (bfloat16 bits) or float, after the tensor's dtype.
template <typename Fn>
void dispatch(const at::Tensor& t, Fn&& fn) {
  if (t.scalar_type() == at::kBFloat16)
    fn(uint16_t{});
  else
    fn(float{});
}

}  // namespace

// x [b, c*q, h*p] (channels contiguous, any batch and step strides), dt and a [b, c, q, h] float32
// contiguous -> (x_dt [b, c, h, q, p], x_end [b, c, q, h, p]) in x's dtype.
std::tuple<at::Tensor, at::Tensor> chunk_inputs(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& a) {
  const Slab s{a.size(0), a.size(1), a.size(2), a.size(3), x.size(2) / a.size(3)};
  at::Tensor x_dt = at::empty({s.b, s.c, s.h, s.q, s.p}, x.options());
  at::Tensor x_end = at::empty({s.b, s.c, s.q, s.h, s.p}, x.options());
  dispatch(x, [&](auto tag) {
    using T = decltype(tag);
    at::parallel_for(0, s.b * s.c, 1, [&](int64_t begin, int64_t end) {
      if (splat::cpu_has_avx2())
        inputs_avx2(data<T>(x), x.stride(0), x.stride(1), dt.data_ptr<float>(), a.data_ptr<float>(), data<T>(x_dt),
                    data<T>(x_end), s, begin, end);
      else
        inputs_chunks<T, false>(data<T>(x), x.stride(0), x.stride(1), dt.data_ptr<float>(), a.data_ptr<float>(),
                                data<T>(x_dt), data<T>(x_end), s, begin, end);
    });
  });
  return {x_dt, x_end};
}

// a [b, c, q, h] float32, cb [b, c, g, q, q] (C . B, unmasked) both contiguous -> scores [b, c, h, q, q]
// in cb's dtype.
at::Tensor chunk_scores(const at::Tensor& a, const at::Tensor& cb) {
  const Slab s{a.size(0), a.size(1), a.size(2), a.size(3), 0};
  const int64_t g = cb.size(2);
  at::Tensor scores = at::empty({s.b, s.c, s.h, s.q, s.q}, cb.options());
  dispatch(cb, [&](auto tag) {
    using T = decltype(tag);
    at::parallel_for(0, s.b * s.c * s.h, 1, [&](int64_t begin, int64_t end) {
      if (splat::cpu_has_avx2())
        scores_avx2(a.data_ptr<float>(), data<T>(cb), data<T>(scores), s, g, begin, end);
      else
        scores_chunks<T, false>(a.data_ptr<float>(), data<T>(cb), data<T>(scores), s, g, begin, end);
    });
  });
  return scores;
}

// y_diag [b, c, h, q, p] and y_off [b, c, q, h, p] contiguous, a [b, c, q, h] float32, x as for
// chunk_inputs, D [h, p] float32 -> y [b, c, q, h, p], all of x's dtype but a and D.
at::Tensor chunk_outputs(const at::Tensor& y_diag, const at::Tensor& y_off, const at::Tensor& a, const at::Tensor& x,
                         const at::Tensor& D) {
  const Slab s{a.size(0), a.size(1), a.size(2), a.size(3), x.size(2) / a.size(3)};
  at::Tensor y = at::empty({s.b, s.c, s.q, s.h, s.p}, x.options());
  dispatch(x, [&](auto tag) {
    using T = decltype(tag);
    at::parallel_for(0, s.b * s.c, 1, [&](int64_t begin, int64_t end) {
      if (splat::cpu_has_avx2())
        outputs_avx2(data<T>(y_diag), data<T>(y_off), a.data_ptr<float>(), data<T>(x), x.stride(0), x.stride(1),
                     D.data_ptr<float>(), data<T>(y), s, begin, end);
      else
        outputs_chunks<T, false>(data<T>(y_diag), data<T>(y_off), a.data_ptr<float>(), data<T>(x), x.stride(0),
                                 x.stride(1), D.data_ptr<float>(), data<T>(y), s, begin, end);
    });
  });
  return y;
}

}  // namespace mamba2
