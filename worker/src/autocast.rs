//! Automatic mixed precision in bfloat16 (float32 master weights and
//! gradients, as torch.autocast(dtype=torch.bfloat16) does): on GPU, where
//! the transformer models train under it, and on CPU, where libtorch runs
//! matmuls and linear layers in bfloat16 too (fast only on CPUs with bf16
//! instructions, so carto's CPU training stays in float32 unless asked).

extern "C" {
    fn carto_autocast_bf16_cuda();
    fn carto_autocast_cpu_enter() -> std::ffi::c_int;
    fn carto_autocast_cpu_exit(was_enabled: std::ffi::c_int);
}

/// Runs `f` with CUDA autocast on, casting to bfloat16.
pub fn bf16<T>(f: impl FnOnce() -> T) -> T {
    // Per thread in libtorch, and the training thread may change: set each time.
    unsafe { carto_autocast_bf16_cuda() };
    tch::autocast(true, f)
}

/// Runs `f` with CPU autocast on, casting to bfloat16: eligible ops (linear,
/// matmul, …) compute in bfloat16, the rest (softmax, layer norm, losses)
/// in float32.
pub fn bf16_cpu<T>(f: impl FnOnce() -> T) -> T {
    /// Restores the previous state even if `f` panics.
    struct Exit(std::ffi::c_int);
    impl Drop for Exit {
        fn drop(&mut self) {
            unsafe { carto_autocast_cpu_exit(self.0) }
        }
    }
    let _exit = Exit(unsafe { carto_autocast_cpu_enter() });
    f()
}
