//! Automatic mixed precision on GPU in bfloat16 (float32 master weights and
//! gradients, as torch.autocast(dtype=torch.bfloat16) does).

extern "C" {
    fn carto_autocast_bf16_cuda();
}

/// Runs `f` with CUDA autocast on, casting to bfloat16.
pub fn bf16<T>(f: impl FnOnce() -> T) -> T {
    // Per thread in libtorch, and the training thread may change: set each time.
    unsafe { carto_autocast_bf16_cuda() };
    tch::autocast(true, f)
}
