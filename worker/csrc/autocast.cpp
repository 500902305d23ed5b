// Autocast in bfloat16: tch switches CUDA autocast on and off but cannot
// choose its dtype, whose CUDA default is float16 (which would need a loss
// scaler), and has no switch for CPU autocast at all. The settings are per
// thread in libtorch.
#include <ATen/autocast_mode.h>

extern "C" void carto_autocast_bf16_cuda() {
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
}

// Turns CPU autocast on in bfloat16, as torch.autocast("cpu", torch.bfloat16)
// does on entry; returns whether it was on before, for carto_autocast_cpu_exit.
extern "C" int carto_autocast_cpu_enter() {
  bool was = at::autocast::is_autocast_enabled(at::kCPU);
  at::autocast::set_autocast_dtype(at::kCPU, at::kBFloat16);
  at::autocast::set_autocast_enabled(at::kCPU, true);
  at::autocast::increment_nesting();
  return was ? 1 : 0;
}

// Leaves the region: the outermost exit drops the cached bf16 copies of the
// weights, as torch.autocast's __exit__ does.
extern "C" void carto_autocast_cpu_exit(int was_enabled) {
  if (at::autocast::decrement_nesting() == 0) {
    at::autocast::clear_cache();
  }
  at::autocast::set_autocast_enabled(at::kCPU, was_enabled != 0);
}
