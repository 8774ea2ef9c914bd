// libtorch's CPU autocast, which tch does not expose (its `autocast` switches CUDA's).
// Called from models/src/autocast.rs; thread-local state, like libtorch's own.
#include <ATen/autocast_mode.h>

extern "C" {

// Enables (non-zero) or disables CPU autocast to bf16 on this thread; returns the previous state.
int ocular_cpu_autocast(int enabled) {
  bool previous = at::autocast::is_autocast_enabled(at::kCPU);
  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCPU, enabled != 0);
  return previous ? 1 : 0;
}

// Drops the bf16 copies of weights that autocast cached.
void ocular_autocast_clear_cache() { at::autocast::clear_cache(); }

}
