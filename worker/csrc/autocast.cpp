// Autocast on GPU in bfloat16: tch switches autocast on and off but cannot
// choose its dtype, whose CUDA default is float16 (which would need a loss
// scaler). The setting is per thread in libtorch.
#include <ATen/autocast_mode.h>

extern "C" void carto_autocast_bf16_cuda() {
  at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
}
