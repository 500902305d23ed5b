//! Where remote users may point the coordinator: `carto serve --data-root DIR`
//! (datasets and checkpoints read) and `--out-root DIR` (outputs written).
//! A path is checked after resolving it the way the file system will: relative
//! paths against the root, symlinks followed, `..` applied; anything that ends
//! outside the root is refused with PERMISSION_DENIED. Messages name the field
//! and the root, never what the directories hold.

use std::path::{Component, Path, PathBuf};

use carto_common::CartoError;

use crate::config::CoordinatorConfig;

/// The roots a coordinator confines remote paths to. `None`: anywhere.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roots {
    pub data: Option<PathBuf>,
    pub out: Option<PathBuf>,
}

impl Roots {
    /// From `data_root` / `out_root`, which should already be canonical
    /// (`carto serve` canonicalises them at start; see [`Roots::canonical_root`]).
    pub fn from_config(config: &CoordinatorConfig) -> Self {
        let canonical = |p: &Option<PathBuf>| p.as_ref().map(|p| p.canonicalize().unwrap_or_else(|_| p.clone()));
        Roots { data: canonical(&config.data_root), out: canonical(&config.out_root) }
    }

    /// A root directory as given on the command line, canonical. It must
    /// exist and be a directory; `flag` names it in the message.
    pub fn canonical_root(dir: &Path, flag: &str) -> Result<PathBuf, CartoError> {
        let c = dir
            .canonicalize()
            .map_err(|e| CartoError::invalid(format!("{flag} {}: {e}", dir.display())))?;
        if !c.is_dir() {
            return Err(CartoError::invalid(format!("{flag} {}: not a directory", dir.display())));
        }
        Ok(c)
    }

    /// An input path (`field`: the job field, e.g. `data`, `eval_data`,
    /// `pretrained`), resolved and checked against the data root. Must exist
    /// under a root; without a data root, returned as given.
    pub fn data_path(&self, field: &str, path: &str) -> Result<PathBuf, CartoError> {
        let Some(root) = &self.data else { return Ok(PathBuf::from(path)) };
        let resolved = resolve(&root.join(path)).map_err(|e| match e {
            Resolve::Loop => CartoError::invalid(format!("{field} {path}: too many levels of symbolic links")),
            // Outside the root, say no more than for any other outside path.
            Resolve::Io(at, _) if !at.starts_with(root) => outside(field, "--data-root", root),
            Resolve::Io(_, e) => CartoError::invalid(format!("{field} {path}: {}", e.kind())),
        })?;
        if !resolved.starts_with(root) {
            return Err(outside(field, "--data-root", root));
        }
        // Only now, knowing it lies under the root, say whether it exists.
        if !resolved.exists() {
            return Err(CartoError::NotFound(format!(
                "{field} {path}: no such file under --data-root {}",
                root.display()
            )));
        }
        Ok(resolved)
    }

    /// An output directory, resolved and checked against the out root. It
    /// need not exist yet: its nearest existing ancestor is resolved and the
    /// rest appended. Without an out root, returned as given.
    pub fn out_path(&self, path: &str) -> Result<PathBuf, CartoError> {
        let Some(root) = &self.out else { return Ok(PathBuf::from(path)) };
        let resolved = resolve(&root.join(path)).map_err(|e| match e {
            Resolve::Loop => CartoError::invalid(format!("out {path}: too many levels of symbolic links")),
            Resolve::Io(at, _) if !at.starts_with(root) => outside("out", "--out-root", root),
            Resolve::Io(_, e) => CartoError::invalid(format!("out {path}: {}", e.kind())),
        })?;
        if !resolved.starts_with(root) {
            return Err(outside("out", "--out-root", root));
        }
        Ok(resolved)
    }
}

fn outside(field: &str, flag: &str, root: &Path) -> CartoError {
    CartoError::denied(format!("{field} must lie under this coordinator's {flag} {}", root.display()))
}

enum Resolve {
    /// Too many symlinks in a row (a loop).
    Loop,
    /// Failed to read the metadata of this (partly resolved) path.
    Io(PathBuf, std::io::Error),
}

/// `path` (absolute) as the file system will see it: component by
/// component, each symlink replaced by its target (resolved the same way),
/// `..` applied to the resolved directory. Past the first component that does
/// not exist the rest is appended as written (with `..` applied to it), so an
/// output directory that is yet to be created resolves too. Reads only
/// metadata and link targets.
fn resolve(path: &Path) -> Result<PathBuf, Resolve> {
    walk(path, 0)
}

fn walk(path: &Path, links: usize) -> Result<PathBuf, Resolve> {
    if links > 40 {
        return Err(Resolve::Loop);
    }
    let comps: Vec<Component> = path.components().collect();
    let mut cur = PathBuf::new();
    let mut missing = false;
    for (i, c) in comps.iter().enumerate() {
        match c {
            Component::Prefix(_) | Component::RootDir => cur.push(c.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                // The parent of a resolved directory is real; at `/`, `..` is `/`.
                cur.pop();
                if missing && cur.exists() {
                    missing = false;
                }
            }
            Component::Normal(name) => {
                cur.push(name);
                if missing {
                    continue;
                }
                match std::fs::symlink_metadata(&cur) {
                    Ok(m) if m.file_type().is_symlink() => {
                        let target = std::fs::read_link(&cur).map_err(|e| Resolve::Io(cur.clone(), e))?;
                        cur.pop();
                        let mut next = cur.join(target);
                        for rest in &comps[i + 1..] {
                            next.push(rest.as_os_str());
                        }
                        return walk(&next, links + 1);
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => missing = true,
                    Err(e) => return Err(Resolve::Io(cur, e)),
                }
            }
        }
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree {
        _dir: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    fn tree() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(root.join("sets")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("sets/a.csv"), "text,label\n").unwrap();
        std::fs::write(outside.join("secret.csv"), "ssn,label\n").unwrap();
        Tree { _dir: dir, root, outside }
    }

    fn roots(t: &Tree) -> Roots {
        Roots { data: Some(t.root.clone()), out: Some(t.root.clone()) }
    }

    fn denied(r: Result<PathBuf, CartoError>) -> String {
        match r {
            Err(CartoError::PermissionDenied(m)) => m,
            other => panic!("expected PermissionDenied, got {other:?}"),
        }
    }

    #[test]
    fn inside_absolute_and_relative() {
        let t = tree();
        let r = roots(&t);
        let abs = t.root.join("sets/a.csv");
        assert_eq!(r.data_path("data", abs.to_str().unwrap()).unwrap(), abs);
        assert_eq!(r.data_path("data", "sets/a.csv").unwrap(), abs);
        assert_eq!(r.data_path("data", "./sets/../sets/a.csv").unwrap(), abs);
        assert_eq!(r.out_path("runs/one").unwrap(), t.root.join("runs/one"));
        assert_eq!(r.out_path(t.root.join("sets").to_str().unwrap()).unwrap(), t.root.join("sets"));
    }

    #[test]
    fn outside_is_denied_without_listing_anything() {
        let t = tree();
        let r = roots(&t);
        let m = denied(r.data_path("data", t.outside.join("secret.csv").to_str().unwrap()));
        assert!(m.contains("data") && m.contains("--data-root") && m.contains(t.root.to_str().unwrap()), "{m}");
        assert!(!m.contains("secret"), "{m}");
        // Existence outside the root is not revealed either.
        let m2 = denied(r.data_path("data", t.outside.join("nothing.csv").to_str().unwrap()));
        assert_eq!(m, m2);
        denied(r.data_path("eval_data", "/etc/passwd"));
        let m = denied(r.out_path(t.outside.join("new").to_str().unwrap()));
        assert!(m.contains("out") && m.contains("--out-root"), "{m}");
        denied(r.out_path("/"));
    }

    #[test]
    fn dot_dot_cannot_climb_out() {
        let t = tree();
        let r = roots(&t);
        denied(r.data_path("data", "../outside/secret.csv"));
        denied(r.data_path("data", "sets/../../outside/secret.csv"));
        denied(r.out_path("../outside/new"));
        denied(r.out_path("new/deeper/../../../outside/x"));
        denied(r.out_path("../../../../../../../../../.."));
        // `..` that stays inside is fine, existing or not.
        assert_eq!(r.out_path("new/../other").unwrap(), t.root.join("other"));
    }

    #[test]
    fn symlinks_are_followed() {
        let t = tree();
        let r = roots(&t);
        std::os::unix::fs::symlink(&t.outside, t.root.join("link")).unwrap();
        std::os::unix::fs::symlink(t.outside.join("secret.csv"), t.root.join("sets/b.csv")).unwrap();
        denied(r.data_path("data", "link/secret.csv"));
        denied(r.data_path("data", "sets/b.csv"));
        denied(r.out_path("link/new-out"));
        denied(r.out_path("link"));
        // A dangling link pointing outside: writing through it would escape.
        std::os::unix::fs::symlink(t.outside.join("not-yet"), t.root.join("dangling")).unwrap();
        denied(r.out_path("dangling"));
        denied(r.out_path("dangling/sub"));
        // A link inside pointing inside is fine.
        std::os::unix::fs::symlink(t.root.join("sets"), t.root.join("alias")).unwrap();
        assert_eq!(r.data_path("data", "alias/a.csv").unwrap(), t.root.join("sets/a.csv"));
    }

    #[test]
    fn missing_data_under_the_root_is_not_found() {
        let t = tree();
        let r = roots(&t);
        assert!(matches!(r.data_path("data", "sets/none.csv"), Err(CartoError::NotFound(_))));
    }

    #[test]
    fn without_roots_anything_goes() {
        let r = Roots::default();
        assert_eq!(r.data_path("data", "/etc/passwd").unwrap(), PathBuf::from("/etc/passwd"));
        assert_eq!(r.out_path("rel/out").unwrap(), PathBuf::from("rel/out"));
    }

    #[test]
    fn roots_come_from_the_config_and_must_exist() {
        let t = tree();
        let config = CoordinatorConfig { data_root: Some(t.root.clone()), ..Default::default() };
        assert_eq!(Roots::from_config(&config), Roots { data: Some(t.root.clone()), out: None });
        assert!(Roots::canonical_root(&t.root.join("nope"), "--data-root").is_err());
        assert!(Roots::canonical_root(&t.root.join("sets/a.csv"), "--data-root").is_err());
        assert_eq!(Roots::canonical_root(&t.root.join("sets/.."), "--data-root").unwrap(), t.root);
    }
}
