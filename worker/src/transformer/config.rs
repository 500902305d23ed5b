//! `config.json` as transformers writes it for BERT and RoBERTa: the fields
//! the encoder needs, each checked, with errors naming the field.

use std::path::Path;

use serde_json::Value;

use super::PretrainedError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Bert,
    Roberta,
}

impl Arch {
    /// The `--model` name.
    pub fn from_model(model: &str) -> Option<Arch> {
        match model {
            "bert" => Some(Arch::Bert),
            "roberta" => Some(Arch::Roberta),
            _ => None,
        }
    }
    /// transformers' `model_type`, also the prefix of the encoder's tensors.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Bert => "bert",
            Arch::Roberta => "roberta",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// The exact (erf) GELU: transformers' "gelu".
    Gelu,
    /// The tanh approximation: "gelu_new", "gelu_pytorch_tanh", "gelu_fast".
    GeluTanh,
    Relu,
    Silu,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub arch: Arch,
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    pub intermediate_size: i64,
    pub hidden_act: Activation,
    pub hidden_dropout_prob: f64,
    pub attention_probs_dropout_prob: f64,
    /// The head's dropout; transformers falls back to `hidden_dropout_prob`.
    pub classifier_dropout: f64,
    pub max_position_embeddings: i64,
    pub type_vocab_size: i64,
    pub layer_norm_eps: f64,
    pub pad_token_id: i64,
    /// Standard deviation of a fresh head's weights.
    pub initializer_range: f64,
}

impl Config {
    pub fn read(path: &Path, arch: Arch) -> Result<Config, PretrainedError> {
        let text = std::fs::read_to_string(path).map_err(|e| PretrainedError::file(path, e.to_string()))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| PretrainedError::file(path, format!("not JSON: {e}")))?;
        Config::from_json(&v, path, arch)
    }

    pub fn from_json(v: &Value, path: &Path, arch: Arch) -> Result<Config, PretrainedError> {
        let field = |name: &str| v.get(name).filter(|x| !x.is_null());
        let int = |name: &str, default: Option<i64>| -> Result<i64, PretrainedError> {
            match field(name) {
                Some(x) => x
                    .as_i64()
                    .filter(|&n| n >= 0)
                    .ok_or_else(|| PretrainedError::field(path, name, format!("expected a non-negative integer, got {x}"))),
                None => default.ok_or_else(|| PretrainedError::field(path, name, "is missing")),
            }
        };
        let float = |name: &str, default: f64| -> Result<f64, PretrainedError> {
            match field(name) {
                Some(x) => x
                    .as_f64()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .ok_or_else(|| PretrainedError::field(path, name, format!("expected a non-negative number, got {x}"))),
                None => Ok(default),
            }
        };
        let model_type = field("model_type")
            .and_then(Value::as_str)
            .ok_or_else(|| PretrainedError::field(path, "model_type", "is missing"))?;
        if model_type != arch.name() {
            return Err(PretrainedError::field(
                path,
                "model_type",
                format!("the checkpoint is '{model_type}', but --model {} needs '{}'", arch.name(), arch.name()),
            ));
        }
        if let Some(p) = field("position_embedding_type").and_then(Value::as_str) {
            if p != "absolute" {
                return Err(PretrainedError::field(path, "position_embedding_type", format!("'{p}' is not supported (absolute only)")));
            }
        }
        if field("is_decoder").and_then(Value::as_bool) == Some(true) {
            return Err(PretrainedError::field(path, "is_decoder", "a decoder cannot classify sequences here"));
        }
        let act = match field("hidden_act").map(|x| x.as_str().unwrap_or("")).unwrap_or("gelu") {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            other => {
                return Err(PretrainedError::field(path, "hidden_act", format!("'{other}' is not supported (gelu, gelu_new, relu, silu)")))
            }
        };
        let hidden_dropout_prob = float("hidden_dropout_prob", 0.1)?;
        let cfg = Config {
            arch,
            vocab_size: int("vocab_size", None)?,
            hidden_size: int("hidden_size", None)?,
            num_hidden_layers: int("num_hidden_layers", None)?,
            num_attention_heads: int("num_attention_heads", None)?,
            intermediate_size: int("intermediate_size", None)?,
            hidden_act: act,
            hidden_dropout_prob,
            attention_probs_dropout_prob: float("attention_probs_dropout_prob", 0.1)?,
            classifier_dropout: float("classifier_dropout", hidden_dropout_prob)?,
            max_position_embeddings: int("max_position_embeddings", None)?,
            type_vocab_size: int("type_vocab_size", Some(2))?,
            layer_norm_eps: float("layer_norm_eps", 1e-12)?,
            pad_token_id: int("pad_token_id", Some(if arch == Arch::Roberta { 1 } else { 0 }))?,
            initializer_range: float("initializer_range", 0.02)?,
        };
        for (name, n) in [
            ("vocab_size", cfg.vocab_size),
            ("hidden_size", cfg.hidden_size),
            ("num_attention_heads", cfg.num_attention_heads),
            ("intermediate_size", cfg.intermediate_size),
            ("max_position_embeddings", cfg.max_position_embeddings),
            ("type_vocab_size", cfg.type_vocab_size),
        ] {
            if n == 0 {
                return Err(PretrainedError::field(path, name, "must be at least 1"));
            }
        }
        if cfg.hidden_size % cfg.num_attention_heads != 0 {
            return Err(PretrainedError::field(
                path,
                "num_attention_heads",
                format!("{} does not divide hidden_size {}", cfg.num_attention_heads, cfg.hidden_size),
            ));
        }
        for (name, p) in [
            ("hidden_dropout_prob", cfg.hidden_dropout_prob),
            ("attention_probs_dropout_prob", cfg.attention_probs_dropout_prob),
            ("classifier_dropout", cfg.classifier_dropout),
        ] {
            if p >= 1.0 {
                return Err(PretrainedError::field(path, name, format!("a dropout probability must be below 1, got {p}")));
            }
        }
        if cfg.pad_token_id >= cfg.vocab_size {
            return Err(PretrainedError::field(path, "pad_token_id", format!("{} is not below vocab_size {}", cfg.pad_token_id, cfg.vocab_size)));
        }
        if cfg.max_tokens() == 0 {
            return Err(PretrainedError::field(path, "max_position_embeddings", "leaves no room for a token"));
        }
        Ok(cfg)
    }

    /// The longest input the position table covers. RoBERTa numbers
    /// positions from `pad_token_id + 1`, so its first rows are unused.
    pub fn max_tokens(&self) -> usize {
        match self.arch {
            Arch::Bert => self.max_position_embeddings as usize,
            Arch::Roberta => (self.max_position_embeddings - self.pad_token_id - 1).max(0) as usize,
        }
    }

    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({"model_type": "roberta", "vocab_size": 100, "hidden_size": 8, "num_hidden_layers": 1,
               "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 18,
               "pad_token_id": 1, "classifier_dropout": null})
    }

    #[test]
    fn reads_roberta_with_defaults() {
        let c = Config::from_json(&base(), Path::new("c.json"), Arch::Roberta).unwrap();
        assert_eq!(c.max_tokens(), 16);
        assert_eq!(c.classifier_dropout, 0.1, "null classifier_dropout falls back to hidden_dropout_prob");
        assert_eq!(c.hidden_act, Activation::Gelu);
    }

    #[test]
    fn errors_name_the_field() {
        let bad = |patch: Value, arch| {
            let mut v = base();
            v.as_object_mut().unwrap().extend(patch.as_object().unwrap().clone());
            Config::from_json(&v, Path::new("d/config.json"), arch).unwrap_err().to_string()
        };
        let e = bad(json!({}), Arch::Bert);
        assert!(e.contains("d/config.json") && e.contains("model_type") && e.contains("'roberta'"), "{e}");
        let e = bad(json!({"num_attention_heads": 3}), Arch::Roberta);
        assert!(e.contains("num_attention_heads") && e.contains("hidden_size 8"), "{e}");
        let e = bad(json!({"hidden_act": "quick_gelu"}), Arch::Roberta);
        assert!(e.contains("hidden_act"), "{e}");
        let e = bad(json!({"hidden_size": "eight"}), Arch::Roberta);
        assert!(e.contains("hidden_size") && e.contains("integer"), "{e}");
        let mut v = base();
        v.as_object_mut().unwrap().remove("vocab_size");
        let e = Config::from_json(&v, Path::new("c.json"), Arch::Roberta).unwrap_err().to_string();
        assert!(e.contains("'vocab_size': is missing"), "{e}");
    }
}
