//! A throwaway OpenSSH server on 127.0.0.1 (OS-chosen port), for the tests
//! that put real ssh sessions through `bastionctl connect` and forwards.
//! Keys are generated in the test's temp dir; it logs in as the current user.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context as _, bail, ensure};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::harness::net::{free_port, local};
use crate::harness::{POLL_INTERVAL, STEP_TIMEOUT, TestEnv, within};

pub const SSHD: &str = "/usr/sbin/sshd";
/// sshd (as root) insists on its privilege separation directory.
const PRIVSEP_DIR: &str = "/run/sshd";

pub struct Sshd {
    child: Child,
    pub addr: SocketAddr,
    /// The client's private key, authorized for `user`.
    pub key: PathBuf,
    pub user: String,
    log: PathBuf,
}

impl Sshd {
    /// None when OpenSSH's server is not installed (the caller skips).
    pub async fn start(dir: &Path) -> anyhow::Result<Option<Sshd>> {
        if !Path::new(SSHD).is_file() {
            return Ok(None);
        }
        std::fs::create_dir_all(dir)?;
        let host_key = dir.join("host_ed25519");
        let key = dir.join("id_ed25519");
        keygen(&host_key).await?;
        keygen(&key).await?;
        std::fs::copy(key.with_extension("pub"), dir.join("authorized_keys"))?;
        let user = nix::unistd::User::from_uid(nix::unistd::getuid())?
            .context("the current uid has no user name")?
            .name;
        if nix::unistd::getuid().is_root() {
            std::fs::create_dir_all(PRIVSEP_DIR)?;
        }
        let port = free_port()?;
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\n\
                 ListenAddress 127.0.0.1\n\
                 HostKey {host_key}\n\
                 PidFile none\n\
                 AuthorizedKeysFile {authorized}\n\
                 StrictModes no\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM no\n\
                 PermitRootLogin prohibit-password\n\
                 LogLevel VERBOSE\n",
                host_key = host_key.display(),
                authorized = dir.join("authorized_keys").display(),
            ),
        )?;
        let log = dir.join("sshd.log");
        let child = Command::new(SSHD)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(&log)?))
            .kill_on_drop(true)
            .spawn()
            .context("cannot start sshd")?;
        let mut sshd = Sshd {
            child,
            addr: local(port),
            key,
            user,
            log,
        };
        sshd.await_banner().await?;
        Ok(Some(sshd))
    }

    /// Ready once it greets with `SSH-2.0`; fails early if sshd exits.
    async fn await_banner(&mut self) -> anyhow::Result<()> {
        let addr = self.addr;
        let child = &mut self.child;
        let ready = within("sshd to accept connections", STEP_TIMEOUT, async {
            loop {
                if let Some(status) = child.try_wait()? {
                    bail!("sshd exited ({status})");
                }
                if let Ok(mut stream) = TcpStream::connect(addr).await {
                    let mut banner = [0u8; 7];
                    if stream.read_exact(&mut banner).await.is_ok() && &banner == b"SSH-2.0" {
                        return Ok(());
                    }
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
        })
        .await;
        ready.with_context(|| format!("--- sshd stderr ---\n{}", self.logs()))
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `ssh` with this server's key, no config files and no host key
    /// checks, in `env`'s environment (so a ProxyCommand finds the daemon).
    pub fn ssh(&self, env: &TestEnv, args: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        env.apply(&mut cmd);
        cmd.args(["-F", "none", "-i"])
            .arg(&self.key)
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "LogLevel=ERROR",
                "-l",
                &self.user,
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

async fn keygen(path: &Path) -> anyhow::Result<()> {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .await
        .context("cannot run ssh-keygen")?;
    ensure!(status.success(), "ssh-keygen failed ({status})");
    Ok(())
}
