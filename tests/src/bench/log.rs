//! Clean output: the terminal gets the table and a few notes, everything else
//! goes to one log file the bench names at the start: progress and failures
//! as they happen, the emulator's own warnings (tracing in this process), the
//! stderr of `bench-bare` and of every `bastionctl connect`, and each run's
//! `bastiond` stderr (copied in when its daemon has stopped).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;

/// Appends to the bench's log file; clones share it.
#[derive(Clone)]
pub struct BenchLog {
    path: PathBuf,
    file: Arc<Mutex<File>>,
}

impl BenchLog {
    /// Creates (or empties) `path` and its directory. The file is opened for
    /// appending, so child processes writing to it through their own handles
    /// never overwrite each other's lines.
    pub fn create(path: &Path) -> anyhow::Result<BenchLog> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok(BenchLog {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(file)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One line (or several); a log that cannot be written is not worth
    /// failing a measurement for.
    pub fn line(&self, text: &str) {
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        let _ = writeln!(file, "{text}");
    }

    /// A handle for a child's stderr.
    pub fn stdio(&self) -> Stdio {
        let file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.try_clone().map_or_else(|_| Stdio::null(), Stdio::from)
    }

    /// This process's tracing (the emulator's, the bench's) into the log,
    /// filtered by `RUST_LOG` or else `default_filter`.
    pub fn init_tracing(&self, default_filter: &str) {
        let writer = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
            )
            .init();
    }
}

/// tracing writes through a clone per event; each write goes to the shared file.
impl std::io::Write for BenchLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
