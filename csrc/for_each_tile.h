// Dynamic scheduling of tiles over torch's intra-op threads.
#pragma once

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdint>

namespace splat {

// Runs fn(tile, worker_state) for tiles 0..n-1 on all threads. Tiles are handed out one at a time
// from a shared counter because their costs differ wildly (empty sky vs. dense foreground);
// make_state() builds each worker's scratch buffers once. Called inside another parallel region,
// at::parallel_for runs inline and the one worker takes every tile.
template <typename MakeState, typename Fn>
void for_each_tile(int64_t n, const MakeState& make_state, const Fn& fn) {
  std::atomic<int64_t> next{0};
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), n));
  at::parallel_for(0, workers, 1, [&](int64_t, int64_t) {
    auto state = make_state();
    for (int64_t t = next.fetch_add(1); t < n; t = next.fetch_add(1)) fn(t, state);
  });
}

}  // namespace splat
