//! The BERT / RoBERTa encoder and sequence-classification head, following
//! transformers' `BertForSequenceClassification` and
//! `RobertaForSequenceClassification` (post-LayerNorm blocks, absolute
//! positions, the first token's state classified). Variables are named like
//! transformers' parameters so checkpoints load by name.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::config::{Activation, Arch, Config};
use crate::dropout::Dropout;

struct Layer {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    attn_out: nn::Linear,
    attn_norm: nn::LayerNorm,
    intermediate: nn::Linear,
    output: nn::Linear,
    out_norm: nn::LayerNorm,
}

enum Head {
    /// tanh(pooler(h[CLS])) → dropout → classifier.
    Bert { pooler: nn::Linear, classifier: nn::Linear },
    /// h[<s>] → dropout → dense → tanh → dropout → out_proj.
    Roberta { dense: nn::Linear, out_proj: nn::Linear },
}

pub struct Transformer {
    cfg: Config,
    /// The first layer fine-tuned (`--train-layers N`: layers − N); the
    /// embeddings and the layers before it are frozen. 0 when all train.
    trainable_from: usize,
    /// Whether anything is frozen (`--train-layers` given).
    frozen: bool,
    word: nn::Embedding,
    position: nn::Embedding,
    token_type: nn::Embedding,
    emb_norm: nn::LayerNorm,
    layers: Vec<Layer>,
    head: Head,
}

fn linear(p: nn::Path, i: i64, o: i64, std: f64) -> nn::Linear {
    // transformers' initialisation: N(0, initializer_range), zero bias.
    nn::linear(p, i, o, nn::LinearConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: std }, bs_init: Some(nn::Init::Const(0.0)), bias: true })
}

fn norm(p: nn::Path, dim: i64, eps: f64) -> nn::LayerNorm {
    nn::layer_norm(p, vec![dim], nn::LayerNormConfig { eps, ..Default::default() })
}

fn embedding(p: nn::Path, n: i64, dim: i64, std: f64, padding_idx: i64) -> nn::Embedding {
    nn::embedding(p, n, dim, nn::EmbeddingConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: std }, padding_idx, ..Default::default() })
}

impl Transformer {
    /// Builds the network under `root` with freshly initialised variables
    /// (the checkpoint's values are copied in by [`super::weights::load`]).
    pub fn new(root: &nn::Path, cfg: &Config, classes: i64) -> Transformer {
        let (h, std, eps) = (cfg.hidden_size, cfg.initializer_range, cfg.layer_norm_eps);
        let enc = root / cfg.arch.name();
        let emb = &enc / "embeddings";
        // RoBERTa's position table has a padding row too; BERT's has none.
        let pos_pad = if cfg.arch == Arch::Roberta { cfg.pad_token_id } else { -1 };
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let l = &enc / "encoder" / "layer" / i;
                Layer {
                    query: linear(&l / "attention" / "self" / "query", h, h, std),
                    key: linear(&l / "attention" / "self" / "key", h, h, std),
                    value: linear(&l / "attention" / "self" / "value", h, h, std),
                    attn_out: linear(&l / "attention" / "output" / "dense", h, h, std),
                    attn_norm: norm(&l / "attention" / "output" / "LayerNorm", h, eps),
                    intermediate: linear(&l / "intermediate" / "dense", h, cfg.intermediate_size, std),
                    output: linear(&l / "output" / "dense", cfg.intermediate_size, h, std),
                    out_norm: norm(&l / "output" / "LayerNorm", h, eps),
                }
            })
            .collect();
        let head = match cfg.arch {
            Arch::Bert => Head::Bert {
                pooler: linear(&enc / "pooler" / "dense", h, h, std),
                classifier: linear(root / "classifier", h, classes, std),
            },
            Arch::Roberta => Head::Roberta {
                dense: linear(root / "classifier" / "dense", h, h, std),
                out_proj: linear(root / "classifier" / "out_proj", h, classes, std),
            },
        };
        Transformer {
            cfg: cfg.clone(),
            trainable_from: 0,
            frozen: false,
            word: embedding(&emb / "word_embeddings", cfg.vocab_size, h, std, cfg.pad_token_id),
            position: embedding(&emb / "position_embeddings", cfg.max_position_embeddings, h, std, pos_pad),
            token_type: embedding(&emb / "token_type_embeddings", cfg.type_vocab_size, h, std, -1),
            emb_norm: norm(&emb / "LayerNorm", h, eps),
            layers,
            head,
        }
    }

    /// Whether a variable belongs to the classification head (BERT's pooler
    /// included), which a checkpoint of the bare encoder lacks.
    pub fn is_head(arch: Arch, name: &str) -> bool {
        name.starts_with("classifier.") || (arch == Arch::Bert && name.starts_with("bert.pooler."))
    }

    fn act(&self, x: &Tensor) -> Tensor {
        match self.cfg.hidden_act {
            Activation::Gelu => x.gelu("none"),
            Activation::GeluTanh => x.gelu("tanh"),
            Activation::Relu => x.relu(),
            Activation::Silu => x.silu(),
        }
    }

    /// `--train-layers N`: fine-tune only the last `n` encoder layers and the
    /// head (0 = the head only). The embeddings and the earlier layers are
    /// frozen and run without dropout, so their output for a text never
    /// changes and can be cached ([`Transformer::frozen_states`]).
    pub fn set_train_layers(&mut self, n: u32) -> Result<(), String> {
        let layers = self.layers.len();
        if n as usize > layers {
            return Err(format!("--train-layers {n}: the checkpoint has {layers} encoder layers"));
        }
        self.trainable_from = layers - n as usize;
        self.frozen = true;
        Ok(())
    }

    /// Whether a variable is frozen by [`Transformer::set_train_layers`].
    pub fn is_frozen(&self, name: &str) -> bool {
        if !self.frozen {
            return false;
        }
        let enc = self.cfg.arch.name();
        if name.starts_with(&format!("{enc}.embeddings.")) {
            return true;
        }
        let Some(rest) = name.strip_prefix(&format!("{enc}.encoder.layer.")) else { return false };
        rest.split('.').next().and_then(|i| i.parse::<usize>().ok()).is_some_and(|i| i < self.trainable_from)
    }

    pub fn hidden_size(&self) -> i64 {
        self.cfg.hidden_size
    }

    /// Whether some layers are frozen (their outputs may be cached).
    pub fn has_frozen_part(&self) -> bool {
        self.frozen
    }

    /// Whether the trainable part reads only the first token's state (no
    /// encoder layer trains): then the frozen output cached per text is one
    /// vector, not one per token.
    pub fn head_only(&self) -> bool {
        self.frozen && self.trainable_from == self.layers.len()
    }

    /// Logits `[batch, classes]` (float32) of `ids` `[batch, len]` with
    /// attention `mask` (1 = token, 0 = padding). `train` switches dropout on.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        if self.frozen {
            let x = tch::no_grad(|| self.frozen_states(ids, mask));
            let mask = if self.head_only() { mask.narrow(1, 0, 1) } else { mask.shallow_clone() };
            return self.forward_trainable(&x, &mask, train);
        }
        let drop = Dropout::new(train, ids.device());
        let x = self.embed(ids, mask, &drop);
        let x = self.encode(x, mask, 0..self.layers.len(), &drop, train);
        self.classify(&x, &drop)
    }

    /// The frozen part's output, in evaluation mode: `[batch, len, hidden]`,
    /// or `[batch, 1, hidden]` (the first token) when only the head trains.
    pub fn frozen_states(&self, ids: &Tensor, mask: &Tensor) -> Tensor {
        let drop = Dropout::new(false, ids.device());
        let x = self.embed(ids, mask, &drop);
        let x = self.encode(x, mask, 0..self.trainable_from, &drop, false);
        let x = if self.head_only() { x.narrow(1, 0, 1) } else { x };
        x.to_kind(Kind::Float)
    }

    /// Logits from the frozen part's output `x` (see [`Transformer::frozen_states`]).
    pub fn forward_trainable(&self, x: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        let drop = Dropout::new(train, x.device());
        let x = self.encode(x.shallow_clone(), mask, self.trainable_from..self.layers.len(), &drop, train);
        self.classify(&x, &drop)
    }

    fn embed(&self, ids: &Tensor, mask: &Tensor, drop: &Dropout) -> Tensor {
        let cfg = &self.cfg;
        let (b, len) = ids.size2().expect("ids are [batch, len]");
        let positions = match cfg.arch {
            Arch::Bert => Tensor::arange(len, (Kind::Int64, ids.device())).unsqueeze(0).expand([b, len], false),
            // Counted over real tokens from pad_token_id + 1; padding sits at
            // pad_token_id (transformers' create_position_ids_from_input_ids).
            Arch::Roberta => mask.cumsum(1, Kind::Int64) * mask + cfg.pad_token_id,
        };
        let x = self.word.forward(ids) + self.position.forward(&positions) + self.token_type.forward(&ids.zeros_like());
        drop.apply(&self.emb_norm.forward(&x), cfg.hidden_dropout_prob)
    }

    /// Runs `layers` over `x` `[b, len, hidden]` (padded, with `mask`).
    /// Returns `[b, 1, hidden]` (the first token's state) when the range
    /// ends with the model's last layer, else `[b, len, hidden]`.
    ///
    /// Tokens travel packed: every linear layer, LayerNorm and activation
    /// runs on the batch's real tokens only (`[tokens, hidden]`), and only
    /// attention sees the padded `[b, heads, len, head_dim]` layout. Padding
    /// never influences a real token, so the results are those of the padded
    /// computation, at the cost of the real tokens (on reviews padded to
    /// their batch's longest, about half the matrix products).
    fn encode(
        &self,
        x: Tensor,
        mask: &Tensor,
        layers: std::ops::Range<usize>,
        drop: &Dropout,
        train: bool,
    ) -> Tensor {
        let cfg = &self.cfg;
        let (b, len, h) = x.size3().expect("states are [batch, len, hidden]");
        let device = x.device();
        // Where the real tokens sit in the flattened [b·len] layout, and the
        // packed row of each text's first token.
        let idx = mask.reshape([b * len]).nonzero().view([-1]);
        let lens = mask.sum_dim_intlist([1i64].as_slice(), false, Kind::Int64);
        let first = lens.cumsum(0, Kind::Int64) - &lens;
        let pad = |t: &Tensor| Tensor::zeros([b * len, h], (t.kind(), device)).index_copy(0, &idx, t);
        let mut x = x.reshape([b * len, h]).index_select(0, &idx);
        // [b, 1, 1, len]: every query attends to the real tokens only.
        let keep = mask.view([b, 1, 1, len]).gt(0);
        let (heads, hd) = (cfg.num_attention_heads, cfg.head_dim());
        let split = |t: Tensor, rows: i64| t.view([b, rows, heads, hd]).transpose(1, 2);
        let attn_p = if train { cfg.attention_probs_dropout_prob } else { 0.0 };
        // With attention dropout, scaled_dot_product_attention computes the
        // same softmax(q·kᵀ/√d)·v without its fused kernel anyway (that one
        // has no dropout); written out here, the probabilities' mask comes
        // from carto's fast dropout. On GPU or without dropout: the fused call.
        let unfused = attn_p > 0.0 && !device.is_cuda();
        let masked = keep.logical_not();
        let last = self.layers.len() - 1;
        let ends_model = layers.end == self.layers.len() && !layers.is_empty();
        for i in layers {
            let l = &self.layers[i];
            // The head reads only the first token's state, so the last layer
            // computes only that row (keys and values still come from every
            // token).
            let (queries, rows) = if i == last { (x.index_select(0, &first), 1) } else { (x.shallow_clone(), len) };
            let q = if i == last {
                split(l.query.forward(&queries), 1)
            } else {
                split(pad(&l.query.forward(&x)), len)
            };
            let k = split(pad(&l.key.forward(&x)), len);
            let v = split(pad(&l.value.forward(&x)), len);
            let ctx = if unfused {
                let scores = (q.matmul(&k.transpose(-2, -1)) * (1.0 / (hd as f64).sqrt()))
                    .masked_fill(&masked, f64::NEG_INFINITY);
                drop.apply(&scores.softmax(-1, scores.kind()), attn_p).matmul(&v)
            } else {
                Tensor::scaled_dot_product_attention(&q, &k, &v, Some(&keep), attn_p, false, None, false)
            };
            let ctx = ctx.transpose(1, 2).contiguous().view([b * rows, h]);
            let ctx = if i == last { ctx } else { ctx.index_select(0, &idx) };
            let a = l.attn_norm.forward(&(drop.apply(&l.attn_out.forward(&ctx), cfg.hidden_dropout_prob) + &queries));
            let inner = self.act(&l.intermediate.forward(&a));
            x = l.out_norm.forward(&(drop.apply(&l.output.forward(&inner), cfg.hidden_dropout_prob) + &a));
        }
        if ends_model {
            x.view([b, 1, h])
        } else {
            pad(&x).view([b, len, h])
        }
    }

    /// Logits of the first token's state of `x` `[b, len, hidden]`.
    fn classify(&self, x: &Tensor, drop: &Dropout) -> Tensor {
        let first = x.select(1, 0);
        let p = self.cfg.classifier_dropout;
        let logits = match &self.head {
            Head::Bert { pooler, classifier } => classifier.forward(&drop.apply(&pooler.forward(&first).tanh(), p)),
            Head::Roberta { dense, out_proj } => {
                out_proj.forward(&drop.apply(&dense.forward(&drop.apply(&first, p)).tanh(), p))
            }
        };
        logits.to_kind(Kind::Float)
    }
}
