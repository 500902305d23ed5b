//! The BERT / RoBERTa encoder and sequence-classification head, following
//! transformers' `BertForSequenceClassification` and
//! `RobertaForSequenceClassification` (post-LayerNorm blocks, absolute
//! positions, the first token's state classified). Variables are named like
//! transformers' parameters so checkpoints load by name.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::config::{Activation, Arch, Config};

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

    /// Logits `[batch, classes]` (float32) of `ids` `[batch, len]` with
    /// attention `mask` (1 = token, 0 = padding). `train` switches dropout on.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor, train: bool) -> Tensor {
        let cfg = &self.cfg;
        let (b, len) = ids.size2().expect("ids are [batch, len]");
        let positions = match cfg.arch {
            Arch::Bert => Tensor::arange(len, (Kind::Int64, ids.device())).unsqueeze(0).expand([b, len], false),
            // Counted over real tokens from pad_token_id + 1; padding sits at
            // pad_token_id (transformers' create_position_ids_from_input_ids).
            Arch::Roberta => mask.cumsum(1, Kind::Int64) * mask + cfg.pad_token_id,
        };
        let x = self.word.forward(ids) + self.position.forward(&positions) + self.token_type.forward(&ids.zeros_like());
        let mut x = self.emb_norm.forward(&x).dropout(cfg.hidden_dropout_prob, train);
        // [b, 1, 1, len]: every query attends to the real tokens only.
        let keep = mask.view([b, 1, 1, len]).gt(0);
        let (heads, hd) = (cfg.num_attention_heads, cfg.head_dim());
        let split = |t: Tensor| t.view([b, len, heads, hd]).transpose(1, 2);
        let attn_p = if train { cfg.attention_probs_dropout_prob } else { 0.0 };
        for l in &self.layers {
            let q = split(l.query.forward(&x));
            let k = split(l.key.forward(&x));
            let v = split(l.value.forward(&x));
            let ctx = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(&keep), attn_p, false, None, false);
            let ctx = ctx.transpose(1, 2).contiguous().view([b, len, cfg.hidden_size]);
            let a = l.attn_norm.forward(&(l.attn_out.forward(&ctx).dropout(cfg.hidden_dropout_prob, train) + &x));
            let i = self.act(&l.intermediate.forward(&a));
            x = l.out_norm.forward(&(l.output.forward(&i).dropout(cfg.hidden_dropout_prob, train) + &a));
        }
        let first = x.select(1, 0);
        let p = cfg.classifier_dropout;
        let logits = match &self.head {
            Head::Bert { pooler, classifier } => classifier.forward(&pooler.forward(&first).tanh().dropout(p, train)),
            Head::Roberta { dense, out_proj } => {
                out_proj.forward(&dense.forward(&first.dropout(p, train)).tanh().dropout(p, train))
            }
        };
        logits.to_kind(Kind::Float)
    }
}
