//! Adam, written out so its state is ours to checkpoint and so the embedding
//! table of `bow` can be updated lazily: only the rows a batch touched (libtorch's
//! C++ Adam has no sparse mode, and a dense Adam over 2^20 × 64 parameters is
//! ~100× slower for bag-of-words text).
//!
//! Same arithmetic as `torch.optim.Adam` (single-tensor path): m ← β1·m + (1−β1)·g,
//! v ← β2·v + (1−β2)·g², p ← p − lr/(1−β1^t) · m / (√v/√(1−β2^t) + ε).
//! With `weight_decay` > 0 it is AdamW's decoupled decay: p ← p·(1 − lr·wd) first.

use tch::{Kind, Tensor};

#[derive(Debug, Clone, Copy)]
pub struct AdamConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl AdamConfig {
    pub fn new(lr: f64) -> Self {
        AdamConfig { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// Moments of one parameter tensor (or of one embedding table).
pub struct Moments {
    pub m: Tensor,
    pub v: Tensor,
    pub step: i64,
}

impl Moments {
    fn zeros_like(p: &Tensor) -> Self {
        Moments { m: p.zeros_like(), v: p.zeros_like(), step: 0 }
    }
}

/// Computes the Adam update of `p` (in place) from gradient `g` and moments `m`,
/// `v` (in place) at step `step` (1-based).
fn adam_update(cfg: &AdamConfig, p: &mut Tensor, g: &Tensor, m: &mut Tensor, v: &mut Tensor, step: i64) {
    if cfg.weight_decay > 0.0 {
        let _ = p.g_mul_scalar_(1.0 - cfg.lr * cfg.weight_decay);
    }
    let _ = m.lerp_(g, 1.0 - cfg.beta1);
    let _ = v.g_mul_scalar_(cfg.beta2);
    let _ = v.addcmul_(&(g * (1.0 - cfg.beta2)), g);
    let bc1 = 1.0 - cfg.beta1.powi(step as i32);
    let bc2 = 1.0 - cfg.beta2.powi(step as i32);
    let denom = (v.sqrt() / bc2.sqrt()).g_add_scalar(cfg.eps);
    let update = (&*m / denom) * (cfg.lr / bc1);
    let _ = p.g_sub_(&update);
}

/// Dense Adam over a fixed, ordered list of parameters.
pub struct Adam {
    pub cfg: AdamConfig,
    params: Vec<Tensor>,
    state: Vec<Moments>,
}

impl Adam {
    pub fn new(cfg: AdamConfig, params: Vec<Tensor>) -> Self {
        let state = params.iter().map(Moments::zeros_like).collect();
        Adam { cfg, params, state }
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.detach_();
                let _ = g.zero_();
            }
        }
    }

    /// Per-parameter state, in the order the parameters were given (for checkpoints).
    pub fn state(&self) -> &[Moments] {
        &self.state
    }

    pub fn state_mut(&mut self) -> &mut [Moments] {
        &mut self.state
    }

    pub fn step(&mut self) {
        tch::no_grad(|| {
            for (p, st) in self.params.iter_mut().zip(self.state.iter_mut()) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                st.step += 1;
                adam_update(&self.cfg, p, &g, &mut st.m, &mut st.v, st.step);
            }
        })
    }
}

/// Lazy Adam for an embedding table: moments live beside the table, and a step
/// reads, updates and writes back only the rows in `rows` (like
/// `torch.optim.SparseAdam`, whose step count is per table).
pub struct LazyAdam {
    pub cfg: AdamConfig,
    state: Moments,
}

impl LazyAdam {
    pub fn new(cfg: AdamConfig, table: &Tensor) -> Self {
        LazyAdam { cfg, state: Moments::zeros_like(table) }
    }

    pub fn state(&self) -> &Moments {
        &self.state
    }

    pub fn state_mut(&mut self) -> &mut Moments {
        &mut self.state
    }

    /// `rows`: distinct row ids (i64, on the table's device); `grad`: their gradient.
    pub fn step(&mut self, table: &mut Tensor, rows: &Tensor, grad: &Tensor) {
        tch::no_grad(|| {
            self.state.step += 1;
            let mut p = table.index_select(0, rows);
            let mut m = self.state.m.index_select(0, rows);
            let mut v = self.state.v.index_select(0, rows);
            adam_update(&self.cfg, &mut p, &grad.to_kind(Kind::Float), &mut m, &mut v, self.state.step);
            let _ = table.index_copy_(0, rows, &p);
            let _ = self.state.m.index_copy_(0, rows, &m);
            let _ = self.state.v.index_copy_(0, rows, &v);
        })
    }
}
