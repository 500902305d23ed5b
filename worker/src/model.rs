//! The classifiers: `linear`, `mlp`, `bow` (fastText-like: hashed n-gram
//! embeddings, averaged, then a linear layer), and `bert` / `roberta`
//! fine-tuned from a pretrained checkpoint ([`crate::transformer`]).
//!
//! Every layer carto creates starts as PyTorch's would: `nn.Linear`'s
//! U(−1/√fan_in, 1/√fan_in) for weights and biases ([`torch_linear`]), the
//! `bow` table as fastText's U(−1/dim, 1/dim); a fresh transformer head as
//! Hugging Face transformers' (N(0, initializer_range), zero bias).
//!
//! Dense parameters live in a VarStore and are listed in name order, so every
//! rank flattens and reduces them identically. The `bow` embedding table lives
//! outside it: a training forward gathers only the rows its batch touches into a
//! small leaf tensor, and the step writes those rows back (lazy Adam).

use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use crate::data::Inputs;
use crate::optim::{AdamConfig, LazyAdam};
use crate::transformer::{self, FrozenCache, Pretrained, Transformer};
use crate::WorkerError;

pub struct ModelConfig<'a> {
    pub kind: &'a str,
    pub input_dim: usize,
    pub num_classes: usize,
    pub hidden: usize,
    pub embed_dim: usize,
    pub hash_buckets: usize,
    /// The checkpoint of `bert` / `roberta`.
    pub pretrained: Option<&'a Pretrained>,
    /// `bert` / `roberta`: fine-tune only the last N layers and the head.
    pub train_layers: Option<u32>,
}

enum Net {
    Linear(nn::Linear),
    Mlp(nn::Linear, nn::Linear),
    Bow(Bow),
    Transformer(Box<Transformer>),
}

struct Bow {
    table: Tensor,
    head: nn::Linear,
    optim: Option<LazyAdam>,
    /// Rows touched by the last training forward: (row ids, leaf holding their values).
    touched: Option<(Tensor, Tensor)>,
}

pub struct Model {
    pub vs: nn::VarStore,
    net: Net,
    device: Device,
    /// The frozen layers' outputs per text (`--train-layers`).
    frozen_cache: Option<FrozenCache>,
}

impl Model {
    /// Builds the model with parameters drawn from libtorch's generator
    /// (seed it first with `tch::manual_seed` so every rank starts alike).
    pub fn new(cfg: &ModelConfig, device: Device) -> Result<Model, WorkerError> {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let (d, c) = (cfg.input_dim as i64, cfg.num_classes as i64);
        let net = match cfg.kind {
            "linear" => Net::Linear(torch_linear(&root / "out", d, c)),
            "mlp" => Net::Mlp(
                torch_linear(&root / "hidden", d, cfg.hidden as i64),
                torch_linear(&root / "out", cfg.hidden as i64, c),
            ),
            "bow" => {
                let e = cfg.embed_dim as i64;
                // fastText's initialisation: U(−1/dim, 1/dim).
                let table = Tensor::empty([cfg.hash_buckets as i64, e], (Kind::Float, device))
                    .uniform_(-1.0 / e as f64, 1.0 / e as f64);
                Net::Bow(Bow {
                    table,
                    head: torch_linear(&root / "out", e, c),
                    optim: None,
                    touched: None,
                })
            }
            "bert" | "roberta" => {
                let p = cfg.pretrained.ok_or_else(|| {
                    WorkerError::Invalid(format!("model '{}' needs --pretrained DIR", cfg.kind))
                })?;
                let mut net = Transformer::new(&root, &p.config, c);
                let fresh = transformer::weights::load(&vs, &p.dir, &p.config)?;
                if !fresh.is_empty() {
                    tracing::info!(dir = %p.dir.display(), tensors = fresh.len(), "no classification head in the checkpoint: a fresh one");
                }
                if let Some(n) = cfg.train_layers {
                    net.set_train_layers(n).map_err(WorkerError::Invalid)?;
                    for (name, var) in vs.variables() {
                        if net.is_frozen(&name) {
                            let _ = var.set_requires_grad(false);
                        }
                    }
                }
                Net::Transformer(Box::new(net))
            }
            other => {
                return Err(WorkerError::Unsupported(format!(
                    "model '{other}' is not available in this worker (linear, mlp, bow, bert, roberta)"
                )))
            }
        };
        let frozen_cache = matches!(&net, Net::Transformer(t) if t.has_frozen_part()).then(FrozenCache::from_env);
        Ok(Model { vs, net, device, frozen_cache })
    }

    /// Whether this is a pretrained transformer (fine-tuned with warmup,
    /// weight decay and gradient clipping).
    pub fn is_transformer(&self) -> bool {
        matches!(self.net, Net::Transformer(_))
    }

    /// Dense trainable parameters, in name order (frozen layers excluded:
    /// they are neither stepped, reduced nor checkpointed, and every rank
    /// loads them from the same pretrained files).
    pub fn dense_params(&self) -> Vec<(String, Tensor)> {
        self.all_params().into_iter().filter(|(_, t)| t.requires_grad()).collect()
    }

    /// Every dense parameter, frozen ones included, in name order.
    pub fn all_params(&self) -> Vec<(String, Tensor)> {
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// Bytes held by the frozen-layer cache (`--train-layers`).
    pub fn frozen_cache_bytes(&self) -> usize {
        self.frozen_cache.as_ref().map_or(0, FrozenCache::used_bytes)
    }

    /// Enables the lazy optimizer of sparse parameters (bow's table).
    pub fn init_sparse_optimizer(&mut self, cfg: AdamConfig) {
        if let Net::Bow(b) = &mut self.net {
            b.optim = Some(LazyAdam::new(cfg, &b.table));
        }
    }

    /// Logits `[samples.len(), classes]`. With `train`, the graph is kept for
    /// backward; without, call it inside `tch::no_grad`.
    pub fn forward(&mut self, inputs: &Inputs, samples: &[i64], train: bool) -> Tensor {
        let device = self.device;
        match (&mut self.net, inputs) {
            (Net::Linear(l), Inputs::Dense(x)) => l.forward(&gather_rows(x, samples, device)),
            (Net::Mlp(h, o), Inputs::Dense(x)) => o.forward(&h.forward(&gather_rows(x, samples, device)).relu()),
            (Net::Bow(b), Inputs::Text(text)) => {
                // Gather the batch's n-grams, deduplicate them, and index the
                // touched rows through a compact remapping.
                let mut flat: Vec<i64> = Vec::new();
                let mut offsets: Vec<i64> = Vec::with_capacity(samples.len());
                for &s in samples {
                    offsets.push(flat.len() as i64);
                    flat.extend_from_slice(text.row(s as usize));
                }
                let mut uniq = flat.clone();
                uniq.sort_unstable();
                uniq.dedup();
                let local: Vec<i64> =
                    flat.iter().map(|id| uniq.binary_search(id).expect("id is in uniq") as i64).collect();
                let uniq_t = Tensor::from_slice(&uniq).to_device(device);
                let rows = b.table.index_select(0, &uniq_t).detach();
                let rows = if train { rows.set_requires_grad(true) } else { rows };
                let (bag, _, _, _) = Tensor::embedding_bag::<Tensor>(
                    &rows,
                    &Tensor::from_slice(&local).to_device(device),
                    &Tensor::from_slice(&offsets).to_device(device),
                    false,
                    1, // mean
                    false,
                    None,
                    false,
                );
                let logits = b.head.forward(&bag);
                b.touched = train.then_some((uniq_t, rows));
                logits
            }
            (Net::Transformer(t), Inputs::Tokens(tokens)) if self.frozen_cache.is_some() => {
                let cache = self.frozen_cache.as_mut().expect("checked by the guard");
                let (x, mask) = cache.batch(t, tokens, samples, device);
                if device.is_cuda() {
                    crate::autocast::bf16(|| t.forward_trainable(&x, &mask, train))
                } else {
                    t.forward_trainable(&x, &mask, train)
                }
            }
            (Net::Transformer(t), Inputs::Tokens(tokens)) => {
                let (ids, mask) = tokens.batch(samples, device);
                // bfloat16 autocast on GPU (no loss scaling needed); float32 on CPU.
                if device.is_cuda() {
                    crate::autocast::bf16(|| t.forward(&ids, &mask, train))
                } else {
                    t.forward(&ids, &mask, train)
                }
            }
            _ => panic!("model and inputs disagree (text model on dense features or vice versa)"),
        }
    }

    /// Gradient of the rows touched by the last training forward, if any:
    /// (row ids, gradient rows). For reducing across ranks before the step.
    pub fn sparse_grad(&self) -> Option<(Tensor, Tensor)> {
        match &self.net {
            Net::Bow(b) => b.touched.as_ref().map(|(ids, rows)| (ids.shallow_clone(), rows.grad())),
            _ => None,
        }
    }

    /// Applies the lazy optimizer to the touched rows with gradient `grad`.
    pub fn sparse_step(&mut self, ids: &Tensor, grad: &Tensor) {
        if let Net::Bow(b) = &mut self.net {
            if let Some(opt) = &mut b.optim {
                if grad.defined() && ids.numel() > 0 {
                    opt.step(&mut b.table, ids, grad);
                }
            }
            b.touched = None;
        }
    }

    /// bow's table and its lazy optimizer, for checkpoints.
    pub fn sparse_parts(&mut self) -> Option<(&mut Tensor, &mut LazyAdam)> {
        match &mut self.net {
            Net::Bow(b) => b.optim.as_mut().map(|o| (&mut b.table, o)),
            _ => None,
        }
    }

    /// The non-VarStore parameters (bow's table), for broadcasting and saving.
    pub fn extra_params(&mut self) -> Vec<(String, &mut Tensor)> {
        match &mut self.net {
            Net::Bow(b) => vec![("embedding.table".to_string(), &mut b.table)],
            _ => vec![],
        }
    }
}

/// A linear layer initialised as PyTorch's `nn.Linear(fan_in, out)`: the
/// weight from `kaiming_uniform_(a=√5)`, which is U(−1/√fan_in, 1/√fan_in),
/// then the bias from U(−1/√fan_in, 1/√fan_in). (tch's default draws the
/// weight from Kaiming-uniform for ReLU, U(±√6/√fan_in), 2.45× wider, and the
/// bias first.) The bounds are computed as PyTorch computes them and drawn in
/// its order, so on CPU the same seed gives PyTorch's very parameters.
pub fn torch_linear(p: nn::Path, fan_in: i64, out: i64) -> nn::Linear {
    let a = 5f64.sqrt();
    let gain = (2.0 / (1.0 + a * a)).sqrt();
    let w = 3f64.sqrt() * (gain / (fan_in as f64).sqrt());
    let b = if fan_in > 0 { 1.0 / (fan_in as f64).sqrt() } else { 0.0 };
    let ws = p.var("weight", &[out, fan_in], nn::Init::Uniform { lo: -w, up: w });
    let bs = p.var("bias", &[out], nn::Init::Uniform { lo: -b, up: b });
    nn::Linear { ws, bs: Some(bs) }
}

fn gather_rows(x: &Tensor, samples: &[i64], device: Device) -> Tensor {
    x.index_select(0, &Tensor::from_slice(samples).to_device(device))
}
