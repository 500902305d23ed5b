//! Fresh parameters start as PyTorch's: `nn.Linear`'s U(−1/√fan_in, 1/√fan_in)
//! for the weights and biases of `linear`, `mlp` and the `bow` head,
//! fastText's U(−1/dim, 1/dim) for the `bow` table, and transformers'
//! N(0, initializer_range) with zero bias for a fresh BERT / RoBERTa head.

use std::collections::HashMap;
use std::path::Path;

use carto_worker::model::{Model, ModelConfig};
use carto_worker::transformer::{Arch, Config, Transformer};
use tch::{nn, Device, Kind, Tensor};

/// libtorch's random generator is process-wide: tests that seed it take turns.
static TORCH_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn model(
    kind: &str,
    input_dim: usize,
    hidden: usize,
    embed_dim: usize,
    buckets: usize,
    classes: usize,
    seed: i64,
) -> Model {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|p| p.into_inner());
    tch::manual_seed(seed);
    Model::new(
        &ModelConfig {
            kind,
            input_dim,
            num_classes: classes,
            hidden,
            embed_dim,
            hash_buckets: buckets,
            pretrained: None,
            train_layers: None,
        },
        Device::Cpu,
    )
    .unwrap()
}

fn params(m: &Model) -> HashMap<String, Tensor> {
    m.all_params().into_iter().collect()
}

fn max_abs(t: &Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

fn std(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).std(false).double_value(&[])
}

fn mean(t: &Tensor) -> f64 {
    t.to_kind(Kind::Double).mean(Kind::Double).double_value(&[])
}

/// `t` looks drawn from U(−bound, bound): inside it, reaching (nearly) its
/// edge, centred, with the uniform's standard deviation bound/√3.
fn assert_uniform(name: &str, t: &Tensor, bound: f64) {
    let n = t.numel() as f64;
    let m = max_abs(t);
    assert!(m <= bound * (1.0 + 1e-6), "{name}: max |x| {m} exceeds the bound {bound}");
    // P(max |x| < (1 − q)·bound) = (1 − q)^n: keep it below 1e-6.
    let q = (1.0 - (1e-6f64).powf(1.0 / n)).max(1e-5);
    assert!(m >= bound * (1.0 - q), "{name}: max |x| {m} is far below the bound {bound} ({n} draws)");
    if n >= 1000.0 {
        let (s, want) = (std(t), bound / 3f64.sqrt());
        assert!((s / want - 1.0).abs() < 0.05, "{name}: std {s}, U(±{bound}) has {want}");
        assert!(mean(t).abs() < 5.0 * want / n.sqrt(), "{name}: mean {} is not near 0", mean(t));
    }
    let zeros = t.eq(0.0).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(zeros, 0, "{name}: {zeros} exact zeros (a constant initialisation?)");
}

#[test]
fn linear_mlp_and_bow_start_from_pytorchs_nn_linear_bounds() {
    let bound = |fan_in: f64| 1.0 / fan_in.sqrt();

    let p = params(&model("linear", 784, 0, 0, 0, 10, 1));
    assert_eq!(p.len(), 2);
    assert_eq!(p["out.weight"].size(), [10, 784]);
    assert_uniform("linear out.weight", &p["out.weight"], bound(784.0));
    assert_uniform("linear out.bias", &p["out.bias"], bound(784.0));

    // The mlp's two layers each have their own fan_in.
    let p = params(&model("mlp", 784, 256, 0, 0, 10, 2));
    assert_eq!(p.len(), 4);
    assert_eq!(p["hidden.weight"].size(), [256, 784]);
    assert_eq!(p["out.weight"].size(), [10, 256]);
    assert_uniform("mlp hidden.weight", &p["hidden.weight"], bound(784.0));
    assert_uniform("mlp hidden.bias", &p["hidden.bias"], bound(784.0));
    assert_uniform("mlp out.weight", &p["out.weight"], bound(256.0));
    assert_uniform("mlp out.bias", &p["out.bias"], bound(256.0));

    let mut m = model("bow", 0, 0, 64, 1 << 12, 10, 3);
    let p = params(&m);
    assert_eq!(p.len(), 2, "the table lives outside the VarStore");
    assert_eq!(p["out.weight"].size(), [10, 64]);
    assert_uniform("bow out.weight", &p["out.weight"], bound(64.0));
    assert_uniform("bow out.bias", &p["out.bias"], bound(64.0));
    let extra = m.extra_params();
    assert_eq!(extra.len(), 1);
    assert_eq!(extra[0].1.size(), [1 << 12, 64]);
    assert_uniform("bow embedding.table", extra[0].1, 1.0 / 64.0);
}

fn assert_values(name: &str, t: &Tensor, want: &[f32]) {
    let got: Vec<f32> = Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
    assert_eq!(got.len(), want.len(), "{name}: size");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "{name}[{i}]: {g}, PyTorch draws {w}");
    }
}

/// PyTorch 2.13 on CPU, `torch.manual_seed(7)` then the module of
/// bench/python/torch_reference.py (or `nn.Linear(5, 3)`): the same draws in
/// the same order, bit for bit, so carto and the plain-PyTorch reference
/// start from the same parameters for the same seed.
#[test]
fn the_same_seed_gives_pytorchs_very_parameters_on_cpu() {
    let linear_w = [
        0.031235669, -0.26939863, 0.14240327, 0.14032692, -0.23902532, -0.067027114, -0.26199022, 0.11603973,
        -0.12046489, 0.31418395, 0.31747082, 0.045557834, -0.19065699, -0.2626759, -0.04911284,
    ];
    let p = params(&model("linear", 5, 0, 0, 0, 3, 7));
    assert_values("linear out.weight", &p["out.weight"], &linear_w);
    assert_values("linear out.bias", &p["out.bias"], &[-0.12585847, 0.19711424, -0.38187397]);

    let p = params(&model("mlp", 5, 4, 0, 0, 3, 7));
    let mut hidden_w = linear_w.to_vec();
    hidden_w.extend([-0.12585847, 0.19711424, -0.38187397, 0.4203089, -0.3508064]);
    assert_values("mlp hidden.weight", &p["hidden.weight"], &hidden_w);
    assert_values("mlp hidden.bias", &p["hidden.bias"], &[0.34245613, -0.07766068, 0.23004171, 0.17427692]);
    assert_values(
        "mlp out.weight",
        &p["out.weight"],
        &[
            0.020930052, 0.0932312, 0.37970418, 0.1285891, 0.2652737, -0.38677943, 0.3559429, 0.17208457,
            0.12665057, 0.069072664, 0.24373275, 0.4592166,
        ],
    );
    assert_values("mlp out.bias", &p["out.bias"], &[-0.11125803, -0.27855355, -0.12579793]);

    let mut m = model("bow", 0, 0, 4, 16, 3, 7);
    let p = params(&m);
    assert_values(
        "bow out.weight",
        &p["out.weight"],
        &[
            -0.16951966, 0.019576788, -0.2853046, -0.21836716, 0.16793883, 0.28776413, 0.0070058703, -0.19449234,
            0.27376157, -0.27408558, -0.117361605, 0.47168517,
        ],
    );
    assert_values("bow out.bias", &p["out.bias"], &[0.092086256, 0.035230637, 0.16855747]);
    let extra = m.extra_params();
    let table = extra[0].1.shallow_clone();
    assert_eq!(table.size(), [16, 4]);
    assert_values(
        "bow table, first two rows",
        &table.narrow(0, 0, 2),
        &[0.01746127, -0.1505984, 0.07960585, 0.07844514, -0.13361922, -0.037469298, -0.14645699, 0.06486818],
    );
    assert_values(
        "bow table, last row",
        &table.narrow(0, 15, 1),
        &[-0.029316247, 0.027523965, 0.06803408, -0.19595587],
    );
}

fn config(arch: Arch, hidden: i64, range: f64) -> Config {
    let v = serde_json::json!({
        "model_type": arch.name(), "vocab_size": 50, "hidden_size": hidden, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 20,
        "initializer_range": range,
    });
    Config::from_json(&v, Path::new("config.json"), arch).unwrap()
}

/// `t` looks drawn from N(0, sd).
fn assert_normal(name: &str, t: &Tensor, sd: f64, tol: f64) {
    let s = std(t);
    assert!((s / sd - 1.0).abs() < tol, "{name}: std {s}, initializer_range {sd}");
    assert!(mean(t).abs() < 5.0 * sd / (t.numel() as f64).sqrt(), "{name}: mean {}", mean(t));
    assert!(max_abs(t) > 2.0 * sd, "{name}: no tail (max |x| {})", max_abs(t));
}

fn assert_zero(name: &str, t: &Tensor) {
    assert_eq!(max_abs(t), 0.0, "{name}: transformers starts biases at zero");
}

/// A checkpoint without a classification head gets a fresh one drawn as
/// BertForSequenceClassification / RobertaClassificationHead draw it:
/// `_init_weights` puts every Linear at N(0, initializer_range), bias 0.
#[test]
fn a_fresh_transformer_head_starts_as_in_transformers() {
    let _turn = TORCH_RNG.lock().unwrap_or_else(|p| p.into_inner());
    tch::manual_seed(5);
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = Transformer::new(&vs.root(), &config(Arch::Bert, 128, 0.05), 4);
    let v = vs.variables();
    assert_eq!(v["classifier.weight"].size(), [4, 128]);
    assert_normal("bert classifier.weight", &v["classifier.weight"], 0.05, 0.15);
    assert_zero("bert classifier.bias", &v["classifier.bias"]);
    assert_normal("bert pooler.dense.weight", &v["bert.pooler.dense.weight"], 0.05, 0.05);
    assert_zero("bert pooler.dense.bias", &v["bert.pooler.dense.bias"]);

    let vs = nn::VarStore::new(Device::Cpu);
    let _net = Transformer::new(&vs.root(), &config(Arch::Roberta, 128, 0.02), 3);
    let v = vs.variables();
    assert_eq!(v["classifier.dense.weight"].size(), [128, 128]);
    assert_eq!(v["classifier.out_proj.weight"].size(), [3, 128]);
    assert_normal("roberta classifier.dense.weight", &v["classifier.dense.weight"], 0.02, 0.05);
    assert_zero("roberta classifier.dense.bias", &v["classifier.dense.bias"]);
    assert_normal("roberta classifier.out_proj.weight", &v["classifier.out_proj.weight"], 0.02, 0.15);
    assert_zero("roberta classifier.out_proj.bias", &v["classifier.out_proj.bias"]);
}
