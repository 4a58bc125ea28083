//! The file-system view the OS rules look through (ISO 9660 and FAT implement it), with
//! case-insensitive path lookup and a directory cache.

use std::collections::HashMap;

use crate::source::Reader;

/// Largest directory read.
pub(crate) const MAX_DIR_BYTES: usize = 1 << 20;
/// Largest file read (configuration files).
pub(crate) const MAX_FILE_BYTES: usize = 64 << 10;
/// Deepest path looked up.
pub(crate) const MAX_DEPTH: usize = 8;
/// Most directories one walker reads.
const MAX_DIR_READS: usize = 64;
/// Most entries kept from one directory.
pub(crate) const MAX_DIR_ENTRIES: usize = 4096;

/// One directory entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirEntry {
    /// Name as shown (Rock Ridge or long name when there is one, version suffix stripped).
    pub(crate) name: String,
    /// The 8.3 / ISO 9660 name when it differs from `name`.
    pub(crate) alt: Option<String>,
    /// A directory.
    pub(crate) is_dir: bool,
    /// Length in bytes.
    pub(crate) size: u64,
    /// Where the data starts, in the file system's own unit (ISO block, FAT cluster).
    pub(crate) loc: u64,
}

impl DirEntry {
    /// Whether the entry is called `name` (ASCII case-insensitive), under either name.
    pub(crate) fn is_named(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
            || self
                .alt
                .as_deref()
                .is_some_and(|a| a.eq_ignore_ascii_case(name))
    }
}

/// A read-only file system over a [`Reader`].
pub(crate) trait FileSystem {
    /// The root directory.
    fn root(&self) -> DirEntry;
    /// The entries of `dir` (at most [`MAX_DIR_BYTES`] of it), without `.` and `..`.
    fn read_dir(&self, r: &mut Reader<'_>, dir: &DirEntry) -> Option<Vec<DirEntry>>;
    /// The first `cap` bytes of `file`.
    fn read_file(&self, r: &mut Reader<'_>, file: &DirEntry, cap: usize) -> Option<Vec<u8>>;
}

/// Splits `path` into its components, resolving `.` and `..`; `None` if too deep.
pub(crate) fn components(path: &str) -> Option<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for c in path.split(['/', '\\']) {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
        if out.len() > MAX_DEPTH {
            return None;
        }
    }
    Some(out)
}

/// Path lookups on one file system, with cached directories.
pub(crate) struct Walker<'f> {
    fs: &'f dyn FileSystem,
    cache: HashMap<String, Option<Vec<DirEntry>>>,
    dir_reads: usize,
}

impl<'f> Walker<'f> {
    /// A walker over `fs`.
    pub(crate) fn new(fs: &'f dyn FileSystem) -> Self {
        Self {
            fs,
            cache: HashMap::new(),
            dir_reads: 0,
        }
    }

    fn list_entry(
        &mut self,
        r: &mut Reader<'_>,
        key: &str,
        dir: &DirEntry,
    ) -> Option<Vec<DirEntry>> {
        if let Some(hit) = self.cache.get(key) {
            return hit.clone();
        }
        let list = if self.dir_reads < MAX_DIR_READS {
            self.dir_reads += 1;
            self.fs.read_dir(r, dir)
        } else {
            None
        };
        self.cache.insert(key.to_string(), list.clone());
        list
    }

    /// The entry at `path` (`""` or `"/"` is the root).
    pub(crate) fn lookup(&mut self, r: &mut Reader<'_>, path: &str) -> Option<DirEntry> {
        let parts = components(path)?;
        let mut cur = self.fs.root();
        let mut key = String::new();
        for part in parts {
            if !cur.is_dir {
                return None;
            }
            let list = self.list_entry(r, &key, &cur)?;
            cur = list.into_iter().find(|e| e.is_named(&part))?;
            key.push('/');
            key.push_str(&part.to_ascii_lowercase());
        }
        Some(cur)
    }

    /// The entries of the directory at `path`.
    pub(crate) fn list(&mut self, r: &mut Reader<'_>, path: &str) -> Option<Vec<DirEntry>> {
        let e = self.lookup(r, path)?;
        if !e.is_dir {
            return None;
        }
        let key: String = components(path)?
            .iter()
            .map(|c| format!("/{}", c.to_ascii_lowercase()))
            .collect();
        self.list_entry(r, &key, &e)
    }

    /// Whether a file (not a directory) exists at `path`.
    pub(crate) fn is_file(&mut self, r: &mut Reader<'_>, path: &str) -> bool {
        self.lookup(r, path).is_some_and(|e| !e.is_dir)
    }

    /// Whether a directory exists at `path`.
    pub(crate) fn is_dir(&mut self, r: &mut Reader<'_>, path: &str) -> bool {
        self.lookup(r, path).is_some_and(|e| e.is_dir)
    }

    /// The first [`MAX_FILE_BYTES`] of the file at `path`.
    pub(crate) fn read(&mut self, r: &mut Reader<'_>, path: &str) -> Option<Vec<u8>> {
        let e = self.lookup(r, path)?;
        if e.is_dir {
            return None;
        }
        self.fs.read_file(r, &e, MAX_FILE_BYTES)
    }

    /// Every cached entry whose data starts at `loc` (for naming an El Torito boot image).
    pub(crate) fn cached_at(&self, loc: u64) -> Option<(String, DirEntry)> {
        let mut keys: Vec<&String> = self.cache.keys().collect();
        keys.sort();
        for k in keys {
            if let Some(Some(list)) = self.cache.get(k) {
                if let Some(e) = list.iter().find(|e| !e.is_dir && e.loc == loc) {
                    return Some((format!("{k}/{}", e.name), e.clone()));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_resolve_dots_and_cap_depth() {
        assert_eq!(components("/a/./b/../c").unwrap(), vec!["a", "c"]);
        assert_eq!(components("").unwrap(), Vec::<String>::new());
        assert!(components("/1/2/3/4/5/6/7/8/9").is_none());
    }
}
