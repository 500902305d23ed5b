//! Text → hashed n-gram ids for the `bow` model (fastText-like): lower-cased
//! word tokens, unigrams and bigrams, FNV-1a hashed into 2^bits buckets.

/// Token ids of all rows in CSR form: row i owns `ids[offsets[i]..offsets[i+1]]`.
#[derive(Debug, Clone, Default)]
pub struct HashedText {
    pub ids: Vec<i64>,
    pub offsets: Vec<usize>,
}

impl HashedText {
    pub fn row(&self, i: usize) -> &[i64] {
        &self.ids[self.offsets[i]..self.offsets[i + 1]]
    }
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a(state: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(state, |h, &b| (h ^ b as u64).wrapping_mul(FNV_PRIME))
}

/// Lower-cased alphanumeric runs (apostrophes inside words kept: "don't").
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let inner_apostrophe = c == '\''
            && !cur.is_empty()
            && chars.get(i + 1).is_some_and(|n| n.is_alphanumeric());
        if c.is_alphanumeric() || inner_apostrophe {
            cur.extend(c.to_lowercase());
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Hashes every text's unigrams and bigrams into `[0, 2^bits)`.
pub fn hash_texts(texts: &[String], bits: u32) -> HashedText {
    let mask = (1u64 << bits) - 1;
    let mut ids = Vec::new();
    let mut offsets = Vec::with_capacity(texts.len() + 1);
    offsets.push(0);
    for text in texts {
        let toks = tokens(text);
        let hashes: Vec<u64> = toks.iter().map(|t| fnv1a(FNV_OFFSET, t.as_bytes())).collect();
        for &h in &hashes {
            ids.push((h & mask) as i64);
        }
        for pair in toks.windows(2) {
            // Bigram "a b": hash of a, a separator, then b, so ("ab","c") ≠ ("a","bc").
            let h = fnv1a(fnv1a(fnv1a(FNV_OFFSET, pair[0].as_bytes()), &[0x1f]), pair[1].as_bytes());
            ids.push((h & mask) as i64);
        }
        offsets.push(ids.len());
    }
    HashedText { ids, offsets }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_lowercased_words() {
        assert_eq!(tokens("Don't PANIC -- it's 42!"), vec!["don't", "panic", "it's", "42"]);
        assert!(tokens("  ... ").is_empty());
    }

    #[test]
    fn unigrams_and_bigrams_are_hashed_deterministically() {
        let h = hash_texts(&["a b c".into(), "".into(), "A B".into()], 20);
        assert_eq!(h.len(), 3);
        assert_eq!(h.row(0).len(), 3 + 2);
        assert!(h.row(1).is_empty());
        // Case-insensitive: "A B" hashes like the first two unigrams and first bigram of "a b c".
        assert_eq!(h.row(2), &[h.row(0)[0], h.row(0)[1], h.row(0)[3]]);
        assert!(h.ids.iter().all(|&i| (0..1 << 20).contains(&i)));
        let again = hash_texts(&["a b c".into()], 20);
        assert_eq!(again.row(0), h.row(0));
    }
}
