//! Epoch checkpoints: everything needed to rerun the next epoch exactly as an
//! uninterrupted job would — parameters and Adam state (moments and step
//! counts). Written by rank 0 at each epoch's end, before it reports the
//! epoch, so a committed epoch always has its checkpoint.
//!
//! `bow`'s embedding table is stored sparsely: only the rows Adam ever
//! updated (nonzero second moment). The others still hold their seeded
//! initial values, which a new model rebuilds identically.

use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::model::Model;
use crate::optim::Adam;
use crate::WorkerError;

/// `DIR/epoch-K.safetensors`.
pub fn path_for(dir: &Path, epoch: u32) -> PathBuf {
    dir.join(format!("epoch-{epoch}.safetensors"))
}

fn err(path: &Path, e: impl std::fmt::Display) -> WorkerError {
    WorkerError::Internal(format!("checkpoint {}: {e}", path.display()))
}

/// Writes the checkpoint of `epoch` into `dir` (atomically) and removes the
/// one two epochs older (the previous stays until this epoch commits).
pub fn save(dir: &Path, epoch: u32, model: &mut Model, opt: &Adam) -> Result<PathBuf, WorkerError> {
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let path = path_for(dir, epoch);
    let mut named: Vec<(String, Tensor)> = vec![("meta/epoch".into(), Tensor::from_slice(&[epoch as i64]))];
    for ((name, p), st) in model.dense_params().into_iter().zip(opt.state()) {
        named.push((format!("adam/{name}/m"), st.m.shallow_clone()));
        named.push((format!("adam/{name}/v"), st.v.shallow_clone()));
        named.push((format!("adam/{name}/step"), Tensor::from_slice(&[st.step])));
        named.push((format!("param/{name}"), p.detach()));
    }
    if let Some((table, lazy)) = model.sparse_parts() {
        let st = lazy.state();
        let rows = tch::no_grad(|| st.v.abs().sum_dim_intlist([1i64].as_slice(), false, Kind::Float).gt(0.0).nonzero().view([-1]));
        named.push(("sparse/rows".into(), rows.shallow_clone()));
        named.push(("sparse/table".into(), table.index_select(0, &rows)));
        named.push(("sparse/m".into(), st.m.index_select(0, &rows)));
        named.push(("sparse/v".into(), st.v.index_select(0, &rows)));
        named.push(("sparse/step".into(), Tensor::from_slice(&[st.step])));
    }
    let tmp = path.with_extension("safetensors.inprogress");
    Tensor::write_safetensors(&named, &tmp).map_err(|e| err(&path, e))?;
    // Durable before it is named: the coordinator resumes from it after a crash.
    std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| err(&path, e))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| err(dir, e))?;
    if epoch >= 2 {
        let _ = std::fs::remove_file(path_for(dir, epoch - 2));
    }
    Ok(path)
}

/// Restores a model (built from the job's seed) and its optimizer from a
/// checkpoint; returns the checkpoint's epoch.
pub fn load(path: &Path, model: &mut Model, opt: &mut Adam) -> Result<u32, WorkerError> {
    let tensors = Tensor::read_safetensors(path).map_err(|e| err(path, e))?;
    let map: std::collections::HashMap<String, Tensor> = tensors.into_iter().collect();
    let get = |k: &str| map.get(k).ok_or_else(|| err(path, format!("'{k}' is missing")));
    let scalar = |k: &str| -> Result<i64, WorkerError> { Ok(get(k)?.int64_value(&[0])) };
    let epoch = scalar("meta/epoch")? as u32;
    let device = model.vs.device();
    tch::no_grad(|| -> Result<(), WorkerError> {
        let params = model.dense_params();
        for ((name, mut p), st) in params.into_iter().zip(opt.state_mut().iter_mut()) {
            p.copy_(&get(&format!("param/{name}"))?.to_device(device));
            st.m.copy_(&get(&format!("adam/{name}/m"))?.to_device(device));
            st.v.copy_(&get(&format!("adam/{name}/v"))?.to_device(device));
            st.step = scalar(&format!("adam/{name}/step"))?;
        }
        if let Some((table, lazy)) = model.sparse_parts() {
            let rows = get("sparse/rows")?.to_device(device);
            let _ = table.index_copy_(0, &rows, &get("sparse/table")?.to_device(device));
            let st = lazy.state_mut();
            let _ = st.m.index_copy_(0, &rows, &get("sparse/m")?.to_device(device));
            let _ = st.v.index_copy_(0, &rows, &get("sparse/v")?.to_device(device));
            st.step = scalar("sparse/step")?;
        }
        Ok(())
    })?;
    Ok(epoch)
}
