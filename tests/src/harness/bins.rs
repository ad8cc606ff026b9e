//! The binaries under test live in `target/<profile>/`, next to the `deps/`
//! directory holding the test executable. `cargo test -p bastion-tests` only
//! builds this package's binaries, hence the hint to build the workspace.

use std::path::PathBuf;

use anyhow::{Context as _, bail};

/// `target/<profile>/<name>`, or a clear error if it was not built.
pub fn path(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the test executable")?;
    let profile_dir = exe
        .parent()
        .filter(|dir| dir.ends_with("deps"))
        .and_then(|deps| deps.parent())
        .or_else(|| exe.parent())
        .context("the test executable has no parent directory")?;
    let path = profile_dir.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: run `cargo build --workspace` first",
            path.display()
        );
    }
    Ok(path)
}
