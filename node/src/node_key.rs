//! The node's long-term ed25519 key: a 32-byte seed in `<data-dir>/node.key`, created
//! on first start with mode 0600. Federation derives the libp2p identity from it.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, bail};
use ed25519_dalek::SigningKey;

/// The key file's name inside the data dir.
pub const FILE_NAME: &str = "node.key";

/// Loads the node key from `data_dir`, creating it (mode 0600) if absent. Refuses a key
/// file that other users can read or write.
pub fn load_or_create(data_dir: &Path) -> anyhow::Result<SigningKey> {
    let path = data_dir.join(FILE_NAME);
    match OpenOptions::new().read(true).open(&path) {
        Ok(mut file) => {
            check_private(&file.metadata()?, &path)?;
            let mut seed = [0u8; 32];
            let mut rest = Vec::new();
            file.read_exact(&mut seed)
                .and_then(|()| file.read_to_end(&mut rest))
                .ok()
                .filter(|&n| n == 0)
                .with_context(|| {
                    format!(
                        "node key {} is not a 32-byte seed: damaged?",
                        path.display()
                    )
                })?;
            Ok(SigningKey::from_bytes(&seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(&path),
        Err(e) => Err(e).with_context(|| format!("cannot read node key {}", path.display())),
    }
}

fn create(path: &Path) -> anyhow::Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts
        .open(path)
        .with_context(|| format!("cannot create node key {}", path.display()))?;
    file.write_all(&seed)?;
    file.sync_all()?;
    tracing::info!(path = %path.display(), "created node key");
    Ok(SigningKey::from_bytes(&seed))
}

#[cfg(unix)]
fn check_private(meta: &std::fs::Metadata, path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "node key {} has mode {mode:o}, open to other users; run `chmod 600 {}` \
             (and consider the key leaked if others could read it)",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_meta: &std::fs::Metadata, _path: &Path) -> anyhow::Result<()> {
    Ok(())
}

/// The public key as lowercase hex, for logs and the admin.
pub fn public_hex(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().to_bytes())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn created_with_mode_0600_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_create(dir.path()).unwrap();
        let meta = std::fs::metadata(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), 32);
        let b = load_or_create(dir.path()).unwrap();
        assert_eq!(public_hex(&a), public_hex(&b));
        assert_eq!(public_hex(&a).len(), 64);
    }

    #[test]
    fn refuses_a_world_readable_key() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path()).unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(dir.path()).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(load_or_create(dir.path()).is_err(), "group-readable too");
    }

    #[test]
    fn refuses_a_truncated_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, [1u8; 31]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load_or_create(dir.path()).is_err());
        std::fs::write(&path, [1u8; 33]).unwrap();
        assert!(load_or_create(dir.path()).is_err());
    }
}
