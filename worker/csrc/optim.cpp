// The optimizer's hot path, through ATen calls tch does not expose:
// - `_fused_adamw_`: one multi-threaded kernel over every parameter (what
//   `torch.optim.AdamW(fused=True)` runs) instead of ~8 elementwise passes
//   with temporaries per tensor;
// - dropping gradients after a step (`zero_grad(set_to_none=True)`), so the
//   next backward writes fresh gradients instead of adding into zeroed ones.
#include <ATen/ATen.h>

#include <cstdio>
#include <string>
#include <vector>

#include "errors.h"

namespace {

std::vector<at::Tensor> tensors(void** ptrs, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) out.push_back(*static_cast<at::Tensor*>(ptrs[i]));
  return out;
}

}  // namespace

extern "C" {

// AdamW over n parameters sharing one weight decay. steps[i] is parameter
// i's step count *after* this step (1-based), as torch increments it before
// calling the kernel. Returns 0, or -1 with the message in err.
int carto_fused_adamw(void** params, void** grads, void** exp_avgs, void** exp_avg_sqs, const double* steps,
                      size_t n, double lr, double beta1, double beta2, double weight_decay, double eps, char* err,
                      size_t errlen) {
  return carto::guarded(err, errlen, [&] {
    if (n == 0) return;
    auto p = tensors(params, n);
    auto g = tensors(grads, n);
    auto m = tensors(exp_avgs, n);
    auto v = tensors(exp_avg_sqs, n);
    std::vector<at::Tensor> st;
    st.reserve(n);
    for (size_t i = 0; i < n; ++i) {
      st.push_back(at::scalar_tensor(steps[i], at::TensorOptions().dtype(at::kFloat).device(p[i].device())));
    }
    at::_fused_adamw_(p, g, m, v, {}, st, lr, beta1, beta2, weight_decay, eps, /*amsgrad=*/false,
                      /*maximize=*/false);
  });
}

// Drops the .grad of n parameters.
void carto_grads_to_none(void** params, size_t n) {
  for (size_t i = 0; i < n; ++i) static_cast<at::Tensor*>(params[i])->mutable_grad().reset();
}

}  // extern "C"
