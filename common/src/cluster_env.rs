//! Where a process runs on a cluster, read from the launcher's environment:
//! Slurm (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`,
//! `SLURM_JOB_NODELIST`), torchrun (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `MASTER_ADDR`), Kubernetes Indexed Jobs (`JOB_COMPLETION_INDEX`), in that
//! order; explicit flags override all of it.
//!
//! carto's coordinator assigns the ranks of a job itself, so these numbers
//! serve a worker's defaults: which local GPU to take (local rank modulo the
//! GPUs it can see — `CUDA_VISIBLE_DEVICES` already limits those), where the
//! coordinator runs (the first Slurm node, or `MASTER_ADDR`), its own name and
//! the address its peers reach it at.

use crate::{CartoError, Result};

/// Which launcher started this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    Slurm,
    Torchrun,
    KubernetesIndexedJob,
    /// Nothing recognised: flags only.
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEnv {
    pub launcher: Launcher,
    /// This process's index among all launched processes.
    pub rank: Option<u32>,
    pub world_size: Option<u32>,
    /// This process's index on its host.
    pub local_rank: u32,
    /// The host the coordinator is expected on (first Slurm node, MASTER_ADDR).
    pub head_host: Option<String>,
    /// This host's name as the launcher knows it.
    pub node_name: Option<String>,
    /// `CUDA_VISIBLE_DEVICES`, when set.
    pub visible_gpus: Option<Vec<String>>,
}

fn parse<T: std::str::FromStr>(name: &str, v: Option<String>) -> Result<Option<T>> {
    match v {
        None => Ok(None),
        Some(s) => s.trim().parse().map(Some).map_err(|_| CartoError::invalid(format!("environment variable {name}='{s}' is not a number"))),
    }
}

impl ClusterEnv {
    /// Reads the process environment.
    pub fn detect() -> Result<ClusterEnv> {
        Self::from_vars(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    }

    /// Reads variables through `get` (tests pass a map).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<ClusterEnv> {
        let visible_gpus = get("CUDA_VISIBLE_DEVICES").map(|v| {
            v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect::<Vec<_>>()
        });
        let env = if get("SLURM_PROCID").is_some() {
            let head = match get("SLURM_JOB_NODELIST").or_else(|| get("SLURM_NODELIST")) {
                Some(list) => expand_hostlist(&list)?.into_iter().next(),
                None => None,
            };
            ClusterEnv {
                launcher: Launcher::Slurm,
                rank: parse("SLURM_PROCID", get("SLURM_PROCID"))?,
                world_size: parse("SLURM_NTASKS", get("SLURM_NTASKS"))?,
                local_rank: parse("SLURM_LOCALID", get("SLURM_LOCALID"))?.unwrap_or(0),
                head_host: head,
                node_name: get("SLURMD_NODENAME"),
                visible_gpus,
            }
        } else if get("RANK").is_some() && get("WORLD_SIZE").is_some() {
            ClusterEnv {
                launcher: Launcher::Torchrun,
                rank: parse("RANK", get("RANK"))?,
                world_size: parse("WORLD_SIZE", get("WORLD_SIZE"))?,
                local_rank: parse("LOCAL_RANK", get("LOCAL_RANK"))?.unwrap_or(0),
                head_host: get("MASTER_ADDR"),
                node_name: None,
                visible_gpus,
            }
        } else if get("JOB_COMPLETION_INDEX").is_some() {
            // One pod per GPU: the index is global; each pod sees its GPU as 0.
            ClusterEnv {
                launcher: Launcher::KubernetesIndexedJob,
                rank: parse("JOB_COMPLETION_INDEX", get("JOB_COMPLETION_INDEX"))?,
                world_size: None,
                local_rank: parse("LOCAL_RANK", get("LOCAL_RANK"))?.unwrap_or(0),
                head_host: None,
                node_name: None,
                visible_gpus,
            }
        } else {
            ClusterEnv {
                launcher: Launcher::None,
                rank: None,
                world_size: None,
                local_rank: parse("LOCAL_RANK", get("LOCAL_RANK"))?.unwrap_or(0),
                head_host: None,
                node_name: None,
                visible_gpus,
            }
        };
        Ok(env)
    }

    /// The index of this process's GPU among the `visible` ones the CUDA
    /// runtime reports (it numbers `CUDA_VISIBLE_DEVICES` from 0).
    pub fn gpu_index(&self, visible: usize) -> usize {
        self.local_rank as usize % visible.max(1)
    }

    /// `http://HEAD:port` when the launcher says where the coordinator runs.
    pub fn coordinator_url(&self, port: u16) -> Option<String> {
        self.head_host.as_ref().map(|h| format!("http://{h}:{port}"))
    }

    /// A readable name for this process, e.g. `slurm-3`.
    pub fn process_name(&self) -> Option<String> {
        let rank = self.rank?;
        Some(match self.launcher {
            Launcher::Slurm => format!("slurm-{rank}"),
            Launcher::Torchrun => format!("torchrun-{rank}"),
            Launcher::KubernetesIndexedJob => format!("k8s-{rank}"),
            Launcher::None => return None,
        })
    }
}

/// Expands a Slurm host list: `node[01-03,07],gpu-a,rack[1-2]-n[1-2]` →
/// node01 node02 node03 node07 gpu-a rack1-n1 rack1-n2 rack2-n1 rack2-n2.
/// Zero padding follows the range's first number.
pub fn expand_hostlist(list: &str) -> Result<Vec<String>> {
    let bad = || CartoError::invalid(format!("SLURM_JOB_NODELIST '{list}' is not a Slurm host list"));
    // Split at commas outside brackets.
    let mut items = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        if depth < 0 {
            return Err(bad());
        }
    }
    if depth != 0 {
        return Err(bad());
    }
    items.push(&list[start..]);
    let mut hosts = Vec::new();
    for item in items.into_iter().map(str::trim).filter(|s| !s.is_empty()) {
        hosts.extend(expand_item(item).ok_or_else(bad)?);
    }
    if hosts.is_empty() {
        return Err(bad());
    }
    Ok(hosts)
}

/// One item, possibly with several bracket groups.
fn expand_item(item: &str) -> Option<Vec<String>> {
    let Some(open) = item.find('[') else { return Some(vec![item.to_string()]) };
    let close = open + item[open..].find(']')?;
    let (prefix, ranges, rest) = (&item[..open], &item[open + 1..close], &item[close + 1..]);
    let tails = expand_item(rest)?;
    let mut out = Vec::new();
    for part in ranges.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (a, b): (u64, u64) = (lo.parse().ok()?, hi.parse().ok()?);
        if b < a {
            return None;
        }
        let width = lo.len();
        for n in a..=b {
            for t in &tails {
                out.push(format!("{prefix}{n:0width$}{t}"));
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> ClusterEnv {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        ClusterEnv::from_vars(|k| map.get(k).cloned()).unwrap()
    }

    #[test]
    fn host_lists_expand_like_scontrol() {
        assert_eq!(expand_hostlist("node[01-03,07],gpu-a").unwrap(), ["node01", "node02", "node03", "node07", "gpu-a"]);
        assert_eq!(expand_hostlist("rack[1-2]-n[8-9]").unwrap(), ["rack1-n8", "rack1-n9", "rack2-n8", "rack2-n9"]);
        assert_eq!(expand_hostlist("localhost").unwrap(), ["localhost"]);
        assert_eq!(expand_hostlist("n[9-11]").unwrap(), ["n9", "n10", "n11"]);
        for bad in ["n[1-", "n[3-1]", "n[a-b]", "", "n]1["] {
            assert!(expand_hostlist(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn slurm_comes_first_and_names_the_head_node() {
        let e = env(&[
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_NODELIST", "gpu[07-08]"),
            ("SLURMD_NODENAME", "gpu08"),
            ("RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("CUDA_VISIBLE_DEVICES", "2,3"),
        ]);
        assert_eq!(e.launcher, Launcher::Slurm);
        assert_eq!((e.rank, e.world_size, e.local_rank), (Some(5), Some(8), 1));
        assert_eq!(e.coordinator_url(7070).as_deref(), Some("http://gpu07:7070"));
        assert_eq!(e.node_name.as_deref(), Some("gpu08"));
        assert_eq!(e.visible_gpus, Some(vec!["2".into(), "3".into()]));
        assert_eq!(e.gpu_index(2), 1, "local rank 1 of 2 visible GPUs");
        assert_eq!(e.process_name().as_deref(), Some("slurm-5"));
    }

    #[test]
    fn torchrun_then_kubernetes_then_nothing() {
        let t = env(&[("RANK", "3"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "3"), ("MASTER_ADDR", "head")]);
        assert_eq!(t.launcher, Launcher::Torchrun);
        assert_eq!(t.coordinator_url(9000).as_deref(), Some("http://head:9000"));
        assert_eq!(t.gpu_index(2), 1);
        let k = env(&[("JOB_COMPLETION_INDEX", "6")]);
        assert_eq!((k.launcher, k.rank, k.local_rank), (Launcher::KubernetesIndexedJob, Some(6), 0));
        assert_eq!(k.gpu_index(1), 0, "one GPU per pod");
        let n = env(&[]);
        assert_eq!(n.launcher, Launcher::None);
        assert_eq!(n.coordinator_url(7070), None);
        assert_eq!(n.gpu_index(0), 0);
    }

    #[test]
    fn garbage_is_named() {
        let err = ClusterEnv::from_vars(|k| (k == "SLURM_PROCID").then(|| "x".to_string())).unwrap_err();
        assert!(err.to_string().contains("SLURM_PROCID='x'"), "{err}");
    }
}
