//! `voicechat backup` / `restore`: one file holding a consistent copy of the store and the
//! data dir's other files (node key, TURN secret, TLS material), sealed with a SHA-256
//! digest so a damaged or foreign file is refused before anything is written.
//!
//! Layout: `MAGIC`, then records `[tag u8][len u32 BE][bytes]…`, then the digest of
//! everything before it. Tags: file (path, mode, content), tree (name), entry (key,
//! value; belongs to the last tree), end.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, anyhow, bail};

use crate::store::{Snapshot, Store};

/// The first bytes of every backup (format version 1).
pub const MAGIC: &[u8] = b"VOICECHAT-BACKUP 1\n";
/// The socket and the store are not copied as files.
const SKIPPED: &[&str] = &["db", crate::admin::SOCKET];
/// Files larger than this are not part of a data dir (the store is copied separately).
const MAX_FILE: u64 = 16 << 20;

const FILE: u8 = 1;
const TREE: u8 = 2;
const ENTRY: u8 = 3;
const END: u8 = 0;

/// A data dir's content, ready to write or just read.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Backup {
    /// Files relative to the data dir, with their permission bits.
    pub files: Vec<(PathBuf, u32, Vec<u8>)>,
    /// The store.
    pub store: Snapshot,
}

impl Backup {
    /// Copies a data dir whose store is open as `store` (the running node's own, or one
    /// opened by the CLI while the node is stopped).
    pub fn take(data_dir: &Path, store: &Store) -> anyhow::Result<Backup> {
        let mut files = Vec::new();
        collect(data_dir, Path::new(""), &mut files)?;
        let store = store.snapshot().context("cannot copy the store")?;
        Ok(Backup { files, store })
    }

    /// The backup file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for (path, mode, content) in &self.files {
            let mut rec = Vec::new();
            field(&mut rec, path.to_string_lossy().as_bytes());
            rec.extend_from_slice(&mode.to_be_bytes());
            rec.extend_from_slice(content);
            field_tagged(&mut out, FILE, &rec);
        }
        for (name, kv) in &self.store.trees {
            field_tagged(&mut out, TREE, name);
            for (k, v) in kv {
                let mut rec = Vec::new();
                field(&mut rec, k);
                rec.extend_from_slice(v);
                field_tagged(&mut out, ENTRY, &rec);
            }
        }
        field_tagged(&mut out, END, &[]);
        let digest = ring::digest::digest(&ring::digest::SHA256, &out);
        out.extend_from_slice(digest.as_ref());
        out
    }

    /// Reads a backup file's bytes; every way it can be wrong is a clear error.
    pub fn decode(bytes: &[u8]) -> anyhow::Result<Backup> {
        if !bytes.starts_with(MAGIC) {
            bail!("not a VoiceChat backup (it does not start with {:?})", String::from_utf8_lossy(MAGIC).trim());
        }
        let Some(body_len) = bytes.len().checked_sub(32) else {
            bail!("the backup is truncated");
        };
        let (body, digest) = bytes.split_at(body_len);
        if ring::digest::digest(&ring::digest::SHA256, body).as_ref() != digest {
            bail!("the backup is damaged or truncated (its SHA-256 digest does not match)");
        }
        let mut r = Reader(&body[MAGIC.len()..]);
        let mut b = Backup::default();
        loop {
            let (tag, rec) = r.record()?;
            match tag {
                END if r.0.is_empty() => return Ok(b),
                END => bail!("the backup has bytes after its end"),
                FILE => {
                    let mut f = Reader(rec);
                    let path = PathBuf::from(String::from_utf8(f.field()?.to_vec()).map_err(|_| anyhow!("a file name is not UTF-8"))?);
                    check_relative(&path)?;
                    let mode = u32::from_be_bytes(f.take(4)?.try_into().expect("4 bytes"));
                    b.files.push((path, mode & 0o777, f.0.to_vec()));
                }
                TREE => b.store.trees.push((rec.to_vec(), Vec::new())),
                ENTRY => {
                    let mut e = Reader(rec);
                    let k = e.field()?.to_vec();
                    let tree = b.store.trees.last_mut().ok_or_else(|| anyhow!("the backup has an entry outside any tree"))?;
                    tree.1.push((k, e.0.to_vec()));
                }
                t => bail!("the backup has an unknown record type {t}: made by a newer version?"),
            }
        }
    }

    /// Writes this backup into `dir`, which must not exist or be empty: files first (the
    /// node key 0600 whatever it was), then the store. Built in a sibling directory and
    /// renamed into place, so a failure leaves no half-restored data dir.
    pub async fn restore(&self, dir: &Path) -> anyhow::Result<()> {
        if let Ok(mut entries) = std::fs::read_dir(dir)
            && entries.next().is_some()
        {
            bail!("{} is not empty: restore into a new directory", dir.display());
        }
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        let work = tempfile::Builder::new()
            .prefix(".voicechat-restore-")
            .tempdir_in(parent)
            .with_context(|| format!("cannot create a directory in {}", parent.display()))?;
        for (path, mode, content) in &self.files {
            let to = work.path().join(path);
            if let Some(p) = to.parent() {
                std::fs::create_dir_all(p)?;
            }
            let mode = if path == Path::new(crate::node_key::FILE_NAME) { 0o600 } else { *mode };
            write_file(&to, mode, content).with_context(|| format!("cannot write {}", to.display()))?;
        }
        let store = Store::open(work.path()).context("cannot create the store")?;
        store.load_snapshot(&self.store).await.context("cannot load the store")?;
        drop(store);
        let _ = std::fs::remove_dir(dir); // empty, checked above
        let work = work.keep();
        std::fs::rename(&work, dir).with_context(|| format!("cannot move the restored data to {}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    }
}

fn collect(root: &Path, rel: &Path, out: &mut Vec<(PathBuf, u32, Vec<u8>)>) -> anyhow::Result<()> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = rel.join(e.file_name());
        if rel.as_os_str().is_empty() && SKIPPED.iter().any(|s| e.file_name() == *s) {
            continue;
        }
        let meta = e.metadata()?;
        if meta.is_dir() {
            collect(root, &name, out)?;
        } else if meta.is_file() && meta.len() <= MAX_FILE {
            #[cfg(unix)]
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777;
            #[cfg(not(unix))]
            let mode = 0o600;
            let content = std::fs::read(e.path()).with_context(|| format!("cannot read {}", e.path().display()))?;
            // An earlier backup kept in the data dir is not part of the node.
            if !content.starts_with(MAGIC) {
                out.push((name, mode, content));
            }
        }
    }
    Ok(())
}

/// Only plain relative paths: a crafted backup cannot write outside the new data dir.
fn check_relative(path: &Path) -> anyhow::Result<()> {
    let ok = !path.as_os_str().is_empty() && path.components().all(|c| matches!(c, Component::Normal(_)));
    if !ok {
        bail!("the backup names a file outside the data dir: {}", path.display());
    }
    Ok(())
}

fn write_file(path: &Path, mode: u32, content: &[u8]) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode & 0o700);
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(path)?;
    f.write_all(content)?;
    f.sync_all()
}

fn field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&u32::try_from(bytes.len()).expect("under 4 GiB").to_be_bytes());
    out.extend_from_slice(bytes);
}

fn field_tagged(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    field(out, bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> anyhow::Result<&'a [u8]> {
        if self.0.len() < n {
            bail!("the backup is malformed (a record runs past its end)");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn field(&mut self) -> anyhow::Result<&'a [u8]> {
        let n = u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")) as usize;
        self.take(n)
    }

    fn record(&mut self) -> anyhow::Result<(u8, &'a [u8])> {
        let tag = self.take(1)?[0];
        Ok((tag, self.field()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Backup {
        Backup {
            files: vec![("node.key".into(), 0o600, vec![7; 32]), ("tls/acme/cert".into(), 0o644, b"pem".to_vec())],
            store: Snapshot {
                trees: vec![
                    (b"meta".to_vec(), vec![(b"schema_version".to_vec(), crate::store::SCHEMA_VERSION.to_be_bytes().to_vec())]),
                    (b"users".to_vec(), vec![(b"alice".to_vec(), b"{}".to_vec()), (b"bob".to_vec(), vec![])]),
                ],
            },
        }
    }

    #[test]
    fn round_trips() {
        let b = sample();
        assert_eq!(Backup::decode(&b.encode()).unwrap(), b);
    }

    #[test]
    fn damaged_foreign_and_hostile_files_are_refused() {
        let bytes = sample().encode();
        let err = |b: &[u8]| Backup::decode(b).unwrap_err().to_string();
        assert!(err(b"PK\x03\x04 a zip file").contains("not a VoiceChat backup"));
        let mut flipped = bytes.clone();
        flipped[MAGIC.len() + 10] ^= 1;
        assert!(err(&flipped).contains("damaged"));
        assert!(err(&bytes[..bytes.len() - 1]).contains("damaged"));
        assert!(err(MAGIC).contains("truncated") || err(MAGIC).contains("damaged"));
        // A correctly sealed file that names ../x is still refused.
        let evil = Backup { files: vec![("../x".into(), 0o600, vec![])], store: Snapshot::default() };
        assert!(err(&evil.encode()).contains("outside the data dir"));
        let evil = Backup { files: vec![("/etc/x".into(), 0o600, vec![])], store: Snapshot::default() };
        assert!(err(&evil.encode()).contains("outside the data dir"));
    }

    #[tokio::test]
    async fn restore_refuses_a_non_empty_dir_and_keeps_the_key_private() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), b"keep me").unwrap();
        let e = sample().restore(dir.path()).await.unwrap_err().to_string();
        assert!(e.contains("not empty"), "{e}");
        assert_eq!(std::fs::read(dir.path().join("x")).unwrap(), b"keep me");

        let target = dir.path().join("new");
        let mut b = sample();
        b.files[0].1 = 0o644; // a key made readable by mistake is restored private anyway
        b.restore(&target).await.unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(target.join("node.key")).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let store = Store::open(&target).unwrap();
        let snap = store.snapshot().unwrap();
        let users = snap.trees.iter().find(|(n, _)| n == b"users").unwrap();
        assert_eq!(users.1.len(), 2);
    }
}
