// The elementwise stages around the matmuls of one slab of the chunked Mamba2 (SSD) scan
// (model/ssd.py, `_slab_scan`), each one pass in float32 with outputs in the matmul dtype (float32 or
// bfloat16, rounded once), where PyTorch makes three to five tensor-wide passes:
//   chunk_inputs:  x_dt = x * dt                       (written head-major, as its matmul reads it)
//                  x_end = x * dt * exp(a_last - a)    (what each step leaves in the chunk-end state,
//                                                       written channel-major per head)
//   chunk_scores:  scores[h, l, s] = exp(a_l - a_s) * cb[l, s] for s <= l, else 0
//   chunk_outputs: y = y_diag + exp(a) * y_off + D * x (intra-chunk part, state readout read channel-major,
//                                                       skip), written into the scan's output
// a is the cumulative sum of dt * A inside each chunk (<= 0, non-increasing), so every exp argument
// is <= 0 and exp_neg applies. Their PyTorch twins in model/ssd.py are the tests' oracles.
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>

#include <cstdint>
#include <vector>

#include "mamba2.h"
#include "simd.h"

namespace mamba2 {
namespace {

// Dims of a slab: b batch, c chunks of q steps, h heads of p channels, g groups.
struct Slab {
  int64_t b, c, q, h, p;
};

// Each loop below handles one (batch, chunk, head) at a time: that head's log-decays and step sizes
// are first gathered into contiguous arrays (they are strided by the heads in a), the values it
// writes in another order than it reads go through a float32 buffer in cache, and the inner loops
// then run over contiguous data, so they vectorise.

template <typename T, bool kFma>
void inputs_chunks(const T* x, int64_t x_batch, int64_t x_step, const float* dt, const float* a, T* x_dt, T* x_end,
                   const Slab& s, int64_t begin, int64_t end) {
  std::vector<float> d(s.q), d_end(s.q), ends(s.p * s.q);  // ends: x_end of one head, [p, q]
  for (int64_t bch = begin; bch < end; ++bch) {  // (batch, chunk, head) triples
    const int64_t bc = bch / s.h, hh = bch % s.h;
    const int64_t b = bc / s.c, k = bc % s.c;
    const float* a_h = a + bc * s.q * s.h + hh;  // a of this head, s.h apart
    const float a_last = a_h[(s.q - 1) * s.h];
    for (int64_t l = 0; l < s.q; ++l) {
      d[l] = dt[(bc * s.q + l) * s.h + hh];
      d_end[l] = d[l] * splat::exp_neg<kFma>(a_last - a_h[l * s.h]);
    }
    T* o_dt = x_dt + bch * s.q * s.p;  // [q, p] of [b, c, h, q, p]
    for (int64_t l = 0; l < s.q; ++l) {
      const T* xh = x + b * x_batch + (k * s.q + l) * x_step + hh * s.p;
      for (int64_t i = 0; i < s.p; ++i) {
        const float v = widen(xh[i]);
        narrow(v * d[l], o_dt + l * s.p + i);
        ends[i * s.q + l] = v * d_end[l];
      }
    }
    T* o_end = x_end + bch * s.p * s.q;  // [p, q] of [b, c, h, p, q]
    for (int64_t i = 0; i < s.p * s.q; ++i) narrow(ends[i], o_end + i);
  }
}

template <typename T, bool kFma>
void scores_chunks(const float* a, const T* cb, T* scores, const Slab& s, int64_t g, int64_t begin, int64_t end) {
  const int64_t hg = s.h / g;
  std::vector<float> a_h(s.q);
  for (int64_t bch = begin; bch < end; ++bch) {  // (batch, chunk, head) triples
    const int64_t bc = bch / s.h, hh = bch % s.h;
    for (int64_t l = 0; l < s.q; ++l) a_h[l] = a[(bc * s.q + l) * s.h + hh];
    const T* cb_g = cb + (bc * g + hh / hg) * s.q * s.q;
    T* out = scores + bch * s.q * s.q;
    for (int64_t l = 0; l < s.q; ++l) {
      const float a_l = a_h[l];
      T* row = out + l * s.q;
      const T* cb_row = cb_g + l * s.q;
      for (int64_t j = 0; j <= l; ++j) narrow(splat::exp_neg<kFma>(a_l - a_h[j]) * widen(cb_row[j]), row + j);
      for (int64_t j = l + 1; j < s.q; ++j) narrow(0.f, row + j);
    }
  }
}

template <typename T, bool kFma>
void outputs_chunks(const T* y_diag, const T* y_off, const float* a, const T* x, int64_t x_batch, int64_t x_step,
                    const float* D, T* y, int64_t y_batch, int64_t y_step, const Slab& s, int64_t begin,
                    int64_t end) {
  std::vector<float> e(s.q), off(s.q * s.p);  // off: one head's readout, turned from [p, q] to [q, p]
  for (int64_t bch = begin; bch < end; ++bch) {  // (batch, chunk, head) triples
    const int64_t bc = bch / s.h, hh = bch % s.h;
    const int64_t b = bc / s.c, k = bc % s.c;
    for (int64_t l = 0; l < s.q; ++l) e[l] = a[(bc * s.q + l) * s.h + hh];
    for (int64_t l = 0; l < s.q; ++l) e[l] = splat::exp_neg<kFma>(e[l]);
    const T* yo = y_off + bch * s.p * s.q;
    for (int64_t i = 0; i < s.p; ++i)
      for (int64_t l = 0; l < s.q; ++l) off[l * s.p + i] = widen(yo[i * s.q + l]);
    const T* yd = y_diag + bch * s.q * s.p;
    const float* Dh = D + hh * s.p;
    for (int64_t l = 0; l < s.q; ++l) {
      const T* xr = x + b * x_batch + (k * s.q + l) * x_step + hh * s.p;
      T* out = y + b * y_batch + (k * s.q + l) * y_step + hh * s.p;
      for (int64_t i = 0; i < s.p; ++i) {
        const float v = splat::mul_add<kFma>(e[l], off[l * s.p + i], widen(yd[l * s.p + i]));
        narrow(splat::mul_add<kFma>(Dh[i], widen(xr[i]), v), out + i);
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
                                    const float* D, T* y, int64_t yb, int64_t ys, const Slab& s, int64_t begin,
                                    int64_t end) {
  outputs_chunks<T, true>(y_diag, y_off, a, x, xb, xs, D, y, yb, ys, s, begin, end);
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
// contiguous -> (x_dt [b, c, h, q, p], x_end [b, c, h, p, q]) in x's dtype.
std::tuple<at::Tensor, at::Tensor> chunk_inputs(const at::Tensor& x, const at::Tensor& dt, const at::Tensor& a) {
  const Slab s{a.size(0), a.size(1), a.size(2), a.size(3), x.size(2) / a.size(3)};
  at::Tensor x_dt = at::empty({s.b, s.c, s.h, s.q, s.p}, x.options());
  at::Tensor x_end = at::empty({s.b, s.c, s.h, s.p, s.q}, x.options());
  dispatch(x, [&](auto tag) {
    using T = decltype(tag);
    at::parallel_for(0, s.b * s.c * s.h, 1, [&](int64_t begin, int64_t end) {
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

// y_diag [b, c, h, q, p] and y_off [b, c, h, p, q] contiguous, a [b, c, q, h] float32, x as for
// chunk_inputs, D [h, p] float32; writes y [b, c*q, h*p] (channels contiguous, any batch and step
// strides: a view of the scan's whole output), all of x's dtype but a and D.
void chunk_outputs(const at::Tensor& y_diag, const at::Tensor& y_off, const at::Tensor& a, const at::Tensor& x,
                   const at::Tensor& D, const at::Tensor& y) {
  const Slab s{a.size(0), a.size(1), a.size(2), a.size(3), x.size(2) / a.size(3)};
  at::Tensor out = y;  // written in place
  dispatch(x, [&](auto tag) {
    using T = decltype(tag);
    at::parallel_for(0, s.b * s.c * s.h, 1, [&](int64_t begin, int64_t end) {
      if (splat::cpu_has_avx2())
        outputs_avx2(data<T>(y_diag), data<T>(y_off), a.data_ptr<float>(), data<T>(x), x.stride(0), x.stride(1),
                     D.data_ptr<float>(), data<T>(out), y.stride(0), y.stride(1), s, begin, end);
      else
        outputs_chunks<T, false>(data<T>(y_diag), data<T>(y_off), a.data_ptr<float>(), data<T>(x), x.stride(0),
                                 x.stride(1), D.data_ptr<float>(), data<T>(out), y.stride(0), y.stride(1), s, begin,
                                 end);
    });
  });
}

}  // namespace mamba2
