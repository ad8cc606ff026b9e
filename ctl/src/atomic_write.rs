//! Replacing a user's file safely: a temporary file beside it (created
//! owner-only, so a secret never sits readable even for a moment), fsync,
//! then a rename over the original, so a crash leaves the old file or the
//! new one, never half of either. An existing file keeps its permissions.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::Context as _;

/// Mode of the temporary file while it is written: owner only.
const TEMP_MODE: u32 = 0o600;

/// Writes `contents` to `path` (its directory created if needed). A new file
/// gets `new_mode`; an existing one keeps its own.
pub fn write(path: &Path, contents: &[u8], new_mode: u32) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file_name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?
        .to_string_lossy();
    let temp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(TEMP_MODE)
            .open(&temp)?;
        let permissions = match std::fs::metadata(path) {
            Ok(meta) => meta.permissions(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::os::unix::fs::PermissionsExt::from_mode(new_mode)
            }
            Err(e) => return Err(e),
        };
        file.write_all(contents)?;
        file.set_permissions(permissions)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        anyhow::Error::new(e).context(format!("cannot write {}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_with_the_new_mode_and_keeps_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/config");
        write(&path, b"one", 0o600).unwrap();
        assert_eq!(
            (std::fs::read(&path).unwrap(), mode(&path)),
            (b"one".to_vec(), 0o600)
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write(&path, b"two", 0o600).unwrap();
        assert_eq!(
            (std::fs::read(&path).unwrap(), mode(&path)),
            (b"two".to_vec(), 0o640)
        );
        let left: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left behind");
    }
}
