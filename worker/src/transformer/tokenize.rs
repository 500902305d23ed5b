//! Texts → token ids with the checkpoint's own `tokenizer.json` (the
//! `tokenizers` crate, the library behind transformers' fast tokenizers),
//! truncated at `--max-len`. Ids are kept per row, unpadded; each batch is
//! padded to its own longest row (dynamic padding) with an attention mask.

use std::path::{Path, PathBuf};

use tch::{Device, Tensor};
use tokenizers::{Tokenizer, TruncationParams};

use super::{Config, PretrainedError};

pub struct SubwordTokenizer {
    inner: Tokenizer,
    path: PathBuf,
    vocab_size: i64,
    pad_id: i64,
}

impl SubwordTokenizer {
    pub fn open(path: &Path, max_len: usize, config: &Config) -> Result<SubwordTokenizer, PretrainedError> {
        if !path.exists() {
            return Err(PretrainedError::file(
                path,
                "not found: carto reads the fast tokenizer's tokenizer.json (save the tokenizer with save_pretrained)",
            ));
        }
        let mut inner = Tokenizer::from_file(path).map_err(|e| PretrainedError::file(path, format!("not a tokenizer: {e}")))?;
        // The checkpoint's own truncation and padding settings give way to
        // --max-len and to padding per batch.
        inner
            .with_truncation(Some(TruncationParams { max_length: max_len, ..Default::default() }))
            .map_err(|e| PretrainedError::file(path, e.to_string()))?;
        inner.with_padding(None);
        Ok(SubwordTokenizer { inner, path: path.to_path_buf(), vocab_size: config.vocab_size, pad_id: config.pad_token_id })
    }

    /// Token ids of every text, with the tokenizer's special tokens
    /// (`[CLS] … [SEP]`, `<s> … </s>`). `file` names the data in errors.
    pub fn encode(&self, texts: &[String], file: &str) -> Result<Tokens, PretrainedError> {
        let inputs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let encodings = self
            .inner
            .encode_batch(inputs, true)
            .map_err(|e| PretrainedError::file(&self.path, format!("tokenizing {file}: {e}")))?;
        let mut ids = Vec::new();
        let mut offsets = Vec::with_capacity(texts.len() + 1);
        offsets.push(0);
        for (row, enc) in encodings.iter().enumerate() {
            if enc.get_ids().is_empty() {
                return Err(PretrainedError::file(&self.path, format!("{file}: row {row}: the text has no tokens")));
            }
            for &id in enc.get_ids() {
                if id as i64 >= self.vocab_size {
                    return Err(PretrainedError::file(
                        &self.path,
                        format!("token id {id} (in {file}, row {row}) is outside config.json's vocab_size {}", self.vocab_size),
                    ));
                }
                ids.push(id as i64);
            }
            offsets.push(ids.len());
        }
        Ok(Tokens { ids, offsets, pad_id: self.pad_id, id: next_id() })
    }
}

/// Token ids of all rows in CSR form: row i owns `ids[offsets[i]..offsets[i+1]]`.
#[derive(Debug, Clone)]
pub struct Tokens {
    ids: Vec<i64>,
    offsets: Vec<usize>,
    pad_id: i64,
    /// Which tokenized dataset this is (the training or the held-out set):
    /// the key of the frozen layers' cache.
    id: u64,
}

fn next_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Tokens {
    pub fn new(rows: &[Vec<i64>], pad_id: i64) -> Tokens {
        let mut offsets = vec![0];
        let mut ids = Vec::new();
        for r in rows {
            ids.extend_from_slice(r);
            offsets.push(ids.len());
        }
        Tokens { ids, offsets, pad_id, id: next_id() }
    }

    /// The identity of this tokenized dataset (distinct per dataset, shared by clones).
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn row(&self, i: usize) -> &[i64] {
        &self.ids[self.offsets[i]..self.offsets[i + 1]]
    }

    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(ids, mask)`, both `[samples.len(), longest row]` int64 on `device`:
    /// shorter rows are filled with the pad id and masked out.
    pub fn batch(&self, samples: &[i64], device: Device) -> (Tensor, Tensor) {
        let width = samples.iter().map(|&s| self.row(s as usize).len()).max().unwrap_or(0).max(1);
        let mut ids = vec![self.pad_id; samples.len() * width];
        let mut mask = vec![0i64; samples.len() * width];
        for (b, &s) in samples.iter().enumerate() {
            let row = self.row(s as usize);
            ids[b * width..b * width + row.len()].copy_from_slice(row);
            mask[b * width..b * width + row.len()].fill(1);
        }
        let shape = [samples.len() as i64, width as i64];
        (
            Tensor::from_slice(&ids).view(shape).to_device(device),
            Tensor::from_slice(&mask).view(shape).to_device(device),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_pad_to_their_longest_row() {
        let t = Tokens::new(&[vec![5, 6, 7], vec![8], vec![9, 10]], 1);
        let (ids, mask) = t.batch(&[1, 2], Device::Cpu);
        assert_eq!(ids.size(), [2, 2], "padded to the batch's longest row, not the dataset's");
        assert_eq!(Vec::<i64>::try_from(ids.view([-1])).unwrap(), vec![8, 1, 9, 10]);
        assert_eq!(Vec::<i64>::try_from(mask.view([-1])).unwrap(), vec![1, 0, 1, 1]);
        let (ids, _) = t.batch(&[0], Device::Cpu);
        assert_eq!(ids.size(), [1, 3]);
    }
}
