//! A job's data map as it stands (GetDataMap): the metrics over the epochs
//! committed so far, read from the job's aggregator while it runs, or the
//! finished job's `metrics.parquet`. The live page of `carto serve --http`
//! refetches it whenever a job commits an epoch, so built maps are kept per
//! (job, epochs) and texts per job: a page polling many times costs one build.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow::array::RecordBatch;
use carto_common::proto::v1 as pb;
use carto_common::spec::JobSpec;
use carto_common::{CartoError, Result};

use crate::aggregator::Aggregator;
use crate::locking::lock;
use crate::reports::{self, SUSPECTS_AT_JOB_END};
use crate::{datamap_html, outputs, suspects};

/// Maps and text columns kept, most recent first.
const KEPT_MAPS: usize = 8;
const KEPT_TEXTS: usize = 4;

/// What the coordinator knows of a job when a map is asked for.
pub struct Source {
    pub job_id: String,
    pub spec: JobSpec,
    pub state: pb::JobState,
    pub out: PathBuf,
    pub aggregator: Option<Arc<Mutex<Aggregator>>>,
    pub label_names: Option<Vec<String>>,
    /// Committed epochs.
    pub committed: u32,
}

/// Built maps (without texts) and text columns, both bounded.
#[derive(Default)]
pub struct MapCache {
    maps: Mutex<Vec<((String, u32, bool), Arc<pb::DataMap>)>>,
    texts: Mutex<Vec<(String, Arc<Vec<String>>)>>,
}

fn keep<K: PartialEq, V: Clone>(list: &Mutex<Vec<(K, V)>>, key: K, value: V, max: usize) {
    let mut l = lock(list);
    l.retain(|(k, _)| *k != key);
    l.insert(0, (key, value));
    l.truncate(max);
}

fn find<K: PartialEq, V: Clone>(list: &Mutex<Vec<(K, V)>>, key: &K) -> Option<V> {
    lock(list).iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

impl MapCache {
    /// The job's map; blocking (it may read the metrics, the dynamics and the
    /// dataset): call it off the async threads.
    pub fn data_map(&self, src: &Source, with_texts: bool) -> Result<pb::DataMap> {
        let finished = src.state == pb::JobState::Succeeded && src.out.join(outputs::METRICS_FILE).is_file();
        let live = !finished && src.committed > 0 && src.aggregator.is_some();
        let epochs = if finished { src.spec.epochs() } else { src.committed };
        let key = (src.job_id.clone(), epochs, finished);
        let map = match find(&self.maps, &key) {
            Some(m) => m,
            None if finished || live => {
                let m = Arc::new(self.build(src, finished)?);
                keep(&self.maps, key, m.clone(), KEPT_MAPS);
                m
            }
            None => Arc::new(self.empty(src)),
        };
        let mut map = (*map).clone();
        if with_texts && !map.label.is_empty() {
            if let Some(texts) = self.texts(src) {
                map.texts = if map.sample_id.is_empty() {
                    texts.iter().map(|t| datamap_html::cut_text(t)).collect()
                } else {
                    map.sample_id.iter().map(|&s| texts.get(s as usize).map(|t| datamap_html::cut_text(t)).unwrap_or_default()).collect()
                };
            }
        }
        Ok(map)
    }

    /// A map with no points yet, saying why.
    fn empty(&self, src: &Source) -> pb::DataMap {
        let note = match src.state {
            pb::JobState::Queued => "queued: the map appears when the first epoch is committed",
            pb::JobState::Running => "training: the map appears when the first epoch is committed",
            pb::JobState::Succeeded => "the job's metrics.parquet cannot be read",
            _ => "the job ended before its map was written",
        };
        pb::DataMap {
            job_id: src.job_id.clone(),
            title: reports::job_title(&src.spec),
            note: note.into(),
            label_names: src.label_names.clone().unwrap_or_default(),
            ..Default::default()
        }
    }

    fn build(&self, src: &Source, finished: bool) -> Result<pb::DataMap> {
        let (table, label_names): (RecordBatch, Option<Vec<String>>) = if finished {
            let path = src.out.join(outputs::METRICS_FILE);
            (crate::recompute::read_metrics(&path)?, suspects::label_names_of(&path).or_else(|| src.label_names.clone()))
        } else {
            let agg = src.aggregator.as_ref().expect("a live map has an aggregator");
            (lock(agg).live_metrics()?, src.label_names.clone())
        };
        let what = format!("job {}", src.job_id);
        let mut rows = suspects::rank(&table, SUSPECTS_AT_JOB_END, &what)?;
        if finished {
            // The most predicted class of each suspect, from the stored dynamics
            // (read once per finished job; a running job's map goes without).
            // Best effort: without it the map still draws.
            let _ = suspects::add_most_predicted(&mut rows, &src.out.join(outputs::DYNAMICS_DIR));
        }
        let ids = table.column_by_name("id").map(|_| suspects::column_text(&table, "id", &what)).transpose()?;
        let title = reports::job_title(&src.spec);
        let page = datamap_html::Page {
            title: &title,
            metrics: &table,
            label_names: label_names.as_deref(),
            ids: ids.as_deref(),
            texts: None,
            suspects: &rows,
            max_points: crate::datamap_html::MAX_POINTS,
        };
        let mut map = datamap_html::data_map(&page)?;
        map.job_id = src.job_id.clone();
        map.r#final = finished;
        if !finished {
            // The threshold runs' epochs are not the map's.
            map.epochs = if src.spec.is_external() { src.committed } else { src.committed.min(src.spec.epochs()) };
            let of = if src.spec.is_external() { String::new() } else { format!(" of {}", src.spec.epochs()) };
            let live = format!("live: the metrics over the first {}{of} epochs, redrawn after each epoch", map.epochs);
            map.note = if map.note.is_empty() { live } else { format!("{live}; {}", map.note) };
        }
        Ok(map)
    }

    /// The job's text column, when it trains on texts (loaded once per job).
    fn texts(&self, src: &Source) -> Option<Arc<Vec<String>>> {
        if let Some(t) = find(&self.texts, &src.job_id) {
            return Some(t);
        }
        let texts = Arc::new(reports::job_texts(&src.spec)?);
        keep(&self.texts, src.job_id.clone(), texts.clone(), KEPT_TEXTS);
        Some(texts)
    }
}

/// A job without metrics yet: the map's error when the job is unknown is the
/// coordinator's NOT_FOUND; this one is for a map that cannot be built.
pub fn unavailable(job_id: &str, e: CartoError) -> CartoError {
    CartoError::FailedPrecondition(format!("job {job_id}: its data map cannot be built: {e}"))
}
