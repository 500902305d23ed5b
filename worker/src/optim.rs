//! Adam, written out so its state is ours to checkpoint and so the embedding
//! table of `bow` can be updated lazily: only the rows a batch touched (libtorch's
//! C++ Adam has no sparse mode, and a dense Adam over 2^20 × 64 parameters is
//! ~100× slower for bag-of-words text).
//!
//! Same arithmetic as `torch.optim.Adam` (single-tensor path): m ← β1·m + (1−β1)·g,
//! v ← β2·v + (1−β2)·g², p ← p − lr/(1−β1^t) · m / (√v/√(1−β2^t) + ε).
//! With `weight_decay` > 0 it is AdamW's decoupled decay: p ← p·(1 − lr·wd) first.
//!
//! Fine-tuning transformers adds what the paper's code (transformers' run_glue)
//! does: a per-parameter decay (none for biases and LayerNorm weights), a
//! learning rate set every step by [`linear_warmup`], and [`Adam::clip_grad_norm`].

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
fn adam_update(cfg: &AdamConfig, wd: f64, p: &mut Tensor, g: &Tensor, m: &mut Tensor, v: &mut Tensor, step: i64) {
    if wd > 0.0 {
        let _ = p.g_mul_scalar_(1.0 - cfg.lr * wd);
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
    /// Weight decay per parameter.
    decay: Vec<f64>,
}

impl Adam {
    pub fn new(cfg: AdamConfig, params: Vec<Tensor>) -> Self {
        let decay = vec![cfg.weight_decay; params.len()];
        Self::with_decay(cfg, params, decay)
    }

    /// `decay[i]` is parameter i's weight decay.
    pub fn with_decay(cfg: AdamConfig, params: Vec<Tensor>, decay: Vec<f64>) -> Self {
        assert_eq!(params.len(), decay.len(), "one decay per parameter");
        let state = params.iter().map(Moments::zeros_like).collect();
        Adam { cfg, params, state, decay }
    }

    /// The learning rate of the next steps (a schedule sets it every step).
    pub fn set_lr(&mut self, lr: f64) {
        self.cfg.lr = lr;
    }

    /// Scales the gradients so their global L2 norm is at most `max_norm`,
    /// like `torch.nn.utils.clip_grad_norm_` (which adds 1e-6 to the norm).
    /// Returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        tch::no_grad(|| {
            let grads: Vec<Tensor> = self.params.iter().map(Tensor::grad).filter(Tensor::defined).collect();
            if grads.is_empty() {
                return 0.0;
            }
            let norms: Vec<Tensor> = grads.iter().map(|g| g.norm()).collect();
            let total = Tensor::stack(&norms, 0).norm();
            let coef = (max_norm / (total.double_value(&[]) + 1e-6)).min(1.0);
            let scale = (max_norm / (&total + 1e-6)).clamp_max(1.0);
            if coef < 1.0 {
                for mut g in grads {
                    let _ = g.g_mul_(&scale);
                }
            }
            total.double_value(&[])
        })
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
            for ((p, st), &wd) in self.params.iter_mut().zip(self.state.iter_mut()).zip(&self.decay) {
                let g = p.grad();
                if !g.defined() {
                    continue;
                }
                st.step += 1;
                adam_update(&self.cfg, wd, p, &g, &mut st.m, &mut st.v, st.step);
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
            let wd = self.cfg.weight_decay;
            adam_update(&self.cfg, wd, &mut p, &grad.to_kind(Kind::Float), &mut m, &mut v, self.state.step);
            let _ = table.index_copy_(0, rows, &p);
            let _ = self.state.m.index_copy_(0, rows, &m);
            let _ = self.state.v.index_copy_(0, rows, &v);
        })
    }
}

/// transformers' `get_linear_schedule_with_warmup`: the learning rate's
/// factor at (0-based) step `t` of `total`, rising linearly over `warmup`
/// steps from 0, then falling linearly to 0 at `total`.
pub fn linear_warmup(t: u64, total: u64, warmup: u64) -> f64 {
    if t < warmup {
        t as f64 / warmup.max(1) as f64
    } else {
        (total.saturating_sub(t)) as f64 / (total.saturating_sub(warmup)).max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        let f: Vec<f64> = (0..6).map(|t| linear_warmup(t, 6, 2)).collect();
        assert_eq!(f, vec![0.0, 0.5, 1.0, 0.75, 0.5, 0.25]);
        assert_eq!(linear_warmup(0, 3, 0), 1.0);
        assert_eq!(linear_warmup(7, 6, 2), 0.0);
    }

    #[test]
    fn decay_applies_per_parameter_and_clipping_bounds_the_norm() {
        let a = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
        let mut opt = Adam::with_decay(AdamConfig::new(0.1), vec![a.shallow_clone(), b.shallow_clone()], vec![0.5, 0.0]);
        // Gradients (3, 4) and (0, 0): global norm 5.
        ((&a * Tensor::from_slice(&[3.0f32, 4.0])).sum(Kind::Float) + (&b * 0.0).sum(Kind::Float)).backward();
        let norm = opt.clip_grad_norm(1.0);
        assert!((norm - 5.0).abs() < 1e-6);
        let g: Vec<f32> = Vec::try_from(a.grad()).unwrap();
        assert!((g[0] - 0.6).abs() < 1e-5 && (g[1] - 0.8).abs() < 1e-5, "{g:?}");
        opt.step();
        // Adam's first step moves by lr·sign(g); decay multiplies by 1 − lr·wd first.
        let a1: Vec<f32> = Vec::try_from(a.detach()).unwrap();
        assert!((a1[0] - (1.0 * 0.95 - 0.1)).abs() < 1e-5 && (a1[1] - (2.0 * 0.95 - 0.1)).abs() < 1e-5, "{a1:?}");
        // b's gradient is zero and it has no decay: unchanged.
        assert_eq!(Vec::<f32>::try_from(b.detach()).unwrap(), vec![1.0, 2.0]);
    }
}
