//! JSON Lines reader: one JSON object per line; blank lines are skipped.
//!
//! Each line is parsed with a seed that keeps only the wanted keys as
//! `serde_json::Value`s and skips everything else without building it.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int64Array, StringArray};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde_json::Value;

use super::labels::{float_label, RawLabels};
use super::{finite_f32, snippet, DatasetSpec, FeatureSource, Features, Loc, RawTable};
use crate::{CartoError, Result};

pub(crate) fn read(spec: &DatasetSpec) -> Result<RawTable> {
    let path = spec.path.display().to_string();
    let file = File::open(&spec.path)
        .map_err(|e| CartoError::invalid(format!("{path}: cannot open: {e}")))?;
    let mut reader = BufReader::with_capacity(1 << 20, file);

    // The distinct keys we need, and where each role finds its key.
    let mut names: Vec<String> = Vec::new();
    let mut index = |name: &str| -> usize {
        match names.iter().position(|k| k == name) {
            Some(i) => i,
            None => {
                names.push(name.to_owned());
                names.len() - 1
            }
        }
    };
    let label_k = index(&spec.label_col);
    let id_k = spec.id_col.as_deref().map(&mut index);
    let feat_ks: Vec<usize> = match &spec.features {
        FeatureSource::Text(c) | FeatureSource::List(c) => vec![index(c)],
        FeatureSource::Columns(cs) => cs.iter().map(|c| index(c)).collect(),
    };
    let feat_names: Vec<&str> = match &spec.features {
        FeatureSource::Text(c) | FeatureSource::List(c) => vec![c.as_str()],
        FeatureSource::Columns(cs) => cs.iter().map(|c| c.as_str()).collect(),
    };
    let wanted: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
    let label_col = spec.label_col.as_str();
    let id_col = spec.id_col.as_deref().unwrap_or("");

    let mut loc = Loc::new(&spec.path, Some(Vec::new()));
    let mut label_vals: Vec<Value> = Vec::new();
    let mut id_vals: Vec<Value> = Vec::new();
    let mut dense: Vec<f32> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    let mut list_dim: Option<usize> = None;

    let mut buf: Vec<u8> = Vec::new();
    let mut line_no: u64 = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| CartoError::invalid(format!("{path}: cannot read: {e}")))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let mut bytes: &[u8] = &buf;
        if line_no == 1 {
            bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
        }
        let bytes = bytes.trim_ascii();
        if bytes.is_empty() {
            continue;
        }
        let row = label_vals.len();
        loc.lines.as_mut().expect("jsonl has lines").push(line_no);
        if row == 0 && bytes[0] == b'[' {
            return Err(CartoError::invalid(format!(
                "{}: expected one JSON object per line (JSON Lines), found an array; \
                 convert a JSON array file with `jq -c '.[]'`",
                loc.row(row)
            )));
        }

        if bytes[0] != b'{' {
            return Err(CartoError::invalid(format!(
                "{}: expected a JSON object, found {}",
                loc.row(row),
                json_kind_at(bytes[0])
            )));
        }
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let vals = RowSeed { wanted: &wanted }
            .deserialize(&mut de)
            .and_then(|v| de.end().map(|_| v))
            .map_err(|e| malformed(&loc, row, &e))?;

        // A key missing from the first row is a missing column.
        if row == 0 {
            if let Some(k) = vals.iter().position(|v| v.is_none()) {
                let present = keys_in_order(bytes);
                let list = if present.is_empty() {
                    "none".to_string()
                } else {
                    present.join(", ")
                };
                return Err(CartoError::invalid(format!(
                    "{}: column '{}' not found (columns: {list})",
                    loc.row(0),
                    wanted[k]
                )));
            }
        }

        // Label.
        match vals[label_k].as_ref() {
            None => return Err(loc.cell(row, label_col, "null label (key missing)")),
            Some(Value::Null) => return Err(loc.cell(row, label_col, "null label")),
            Some(v @ (Value::Array(_) | Value::Object(_))) => {
                return Err(loc.cell(
                    row,
                    label_col,
                    format!("label must be an integer or a string, found {}", kind(v)),
                ))
            }
            Some(v) => label_vals.push(v.clone()),
        }
        // Id.
        if let Some(k) = id_k {
            match vals[k].as_ref() {
                None => return Err(loc.cell(row, id_col, "null id (key missing)")),
                Some(Value::Null) => return Err(loc.cell(row, id_col, "null id")),
                Some(v @ (Value::Array(_) | Value::Object(_))) => {
                    return Err(loc.cell(
                        row,
                        id_col,
                        format!("id must be a number or a string, found {}", kind(v)),
                    ))
                }
                Some(v) => id_vals.push(v.clone()),
            }
        }

        // Features.
        match &spec.features {
            FeatureSource::Text(col) => match vals[feat_ks[0]].as_ref() {
                Some(Value::String(s)) => texts.push(s.clone()),
                None => return Err(loc.cell(row, col, "null text (key missing)")),
                Some(Value::Null) => return Err(loc.cell(row, col, "null text")),
                Some(v) => {
                    return Err(loc.cell(
                        row,
                        col,
                        format!("text must be a string, found {}", kind(v)),
                    ))
                }
            },
            FeatureSource::Columns(_) => {
                for (j, &k) in feat_ks.iter().enumerate() {
                    let col = feat_names[j];
                    match vals[k].as_ref() {
                        Some(Value::Number(n)) => {
                            let f = n.as_f64().unwrap_or(f64::NAN);
                            dense.push(finite_f32(f).map_err(|m| loc.cell(row, col, m))?);
                        }
                        None => return Err(loc.cell(row, col, "null feature value (key missing)")),
                        Some(Value::Null) => return Err(loc.cell(row, col, "null feature value")),
                        Some(v) => {
                            return Err(loc.cell(
                                row,
                                col,
                                format!("feature value must be a number, found {}", describe(v)),
                            ))
                        }
                    }
                }
            }
            FeatureSource::List(col) => {
                let items = match vals[feat_ks[0]].as_ref() {
                    Some(Value::Array(items)) => items,
                    None => return Err(loc.cell(row, col, "null feature list (key missing)")),
                    Some(Value::Null) => return Err(loc.cell(row, col, "null feature list")),
                    Some(v) => {
                        return Err(loc.cell(
                            row,
                            col,
                            format!(
                                "features must be an array of numbers, found {}",
                                describe(v)
                            ),
                        ))
                    }
                };
                let n = items.len();
                if n == 0 {
                    return Err(loc.cell(row, col, "empty feature list"));
                }
                if let Some(d) = list_dim {
                    if d != n {
                        return Err(loc.cell(
                            row,
                            col,
                            format!(
                                "feature list has length {n}, but {} has length {d}; all rows need the same length",
                                loc.row(0).trim_start_matches(&format!("{}: ", loc.path))
                            ),
                        ));
                    }
                } else {
                    list_dim = Some(n);
                }
                dense.reserve(n);
                for (e, item) in items.iter().enumerate() {
                    match item {
                        Value::Number(num) => {
                            let f = num.as_f64().unwrap_or(f64::NAN);
                            dense.push(finite_f32(f).map_err(|m| {
                                loc.cell(row, col, format!("list element {e}: {m}"))
                            })?);
                        }
                        other => {
                            return Err(loc.cell(
                                row,
                                col,
                                format!(
                                    "list element {e} must be a number, found {}",
                                    describe(other)
                                ),
                            ))
                        }
                    }
                }
            }
        }
    }

    let labels = json_labels(label_vals, &loc, label_col)?;
    let ids: Option<ArrayRef> = id_k.map(|_| json_ids(id_vals));
    let features = match &spec.features {
        FeatureSource::Text(_) => Features::Text(texts),
        FeatureSource::Columns(cs) => Features::Dense {
            dim: cs.len(),
            values: dense,
        },
        FeatureSource::List(_) => Features::Dense {
            dim: list_dim.unwrap_or(0),
            values: dense,
        },
    };
    Ok(RawTable {
        loc,
        labels,
        ids,
        features,
    })
}

/// JSON integers → integer labels; any string → all labels as text; whole floats
/// and booleans count as integers.
fn json_labels(vals: Vec<Value>, loc: &Loc, col: &str) -> Result<RawLabels> {
    if vals.iter().any(|v| v.is_string()) {
        return Ok(RawLabels::Str(vals.into_iter().map(text_form).collect()));
    }
    let mut out = Vec::with_capacity(vals.len());
    for (row, v) in vals.iter().enumerate() {
        let i = match v {
            Value::Bool(b) => *b as i64,
            Value::Number(n) => {
                if let Some(i) = n.as_i64() {
                    i
                } else if let Some(u) = n.as_u64() {
                    return Err(loc.cell(
                        row,
                        col,
                        format!("label {u} is out of the integer range"),
                    ));
                } else {
                    float_label(n.as_f64().unwrap_or(f64::NAN))
                        .map_err(|m| loc.cell(row, col, m))?
                }
            }
            other => {
                return Err(loc.cell(
                    row,
                    col,
                    format!(
                        "label must be an integer or a string, found {}",
                        kind(other)
                    ),
                ))
            }
        };
        out.push(i);
    }
    Ok(RawLabels::Int(out))
}

/// Int64 when every id is a JSON integer, else strings (numbers in their text form).
fn json_ids(vals: Vec<Value>) -> ArrayRef {
    let ints: Option<Vec<i64>> = vals.iter().map(|v| v.as_i64()).collect();
    match ints {
        Some(ints) => Arc::new(Int64Array::from(ints)),
        None => Arc::new(StringArray::from(
            vals.into_iter().map(text_form).collect::<Vec<_>>(),
        )),
    }
}

fn text_form(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// What a JSON text starting with `b` is, for messages.
fn json_kind_at(b: u8) -> &'static str {
    match b {
        b'[' => "an array",
        b'"' => "a string",
        b'-' | b'0'..=b'9' => "a number",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        _ => "text that is not JSON",
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("the string {}", snippet(s)),
        other => kind(other).to_string(),
    }
}

fn malformed(loc: &Loc, row: usize, e: &serde_json::Error) -> CartoError {
    let msg = e.to_string();
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => &msg,
    };
    CartoError::invalid(format!(
        "{}: malformed JSON: {msg} (at character {})",
        loc.row(row),
        e.column()
    ))
}

/// Deserializes one object, keeping the values of `wanted` keys only.
struct RowSeed<'a> {
    wanted: &'a [&'a str],
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Vec<Option<Value>>;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = Vec<Option<Value>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut out = vec![None; self.wanted.len()];
        while let Some(k) = map.next_key_seed(KeySeed {
            wanted: self.wanted,
        })? {
            match k {
                Some(i) => out[i] = Some(map.next_value::<Value>()?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(out)
    }
}

/// Maps a key to its index in `wanted`, without allocating.
struct KeySeed<'a> {
    wanted: &'a [&'a str],
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
        Ok(self.wanted.iter().position(|w| *w == v))
    }
}

/// The keys of one JSON object, in the order they appear.
fn keys_in_order(bytes: &[u8]) -> Vec<String> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<Self::Value, A::Error> {
            let mut out: Vec<String> = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                if !out.contains(&k) {
                    out.push(k);
                }
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de::Deserializer::deserialize_map(&mut de, Keys).unwrap_or_default()
}
