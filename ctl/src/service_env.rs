//! The environment file of the user service: a systemd service starts
//! without the user's shell environment, so `az` in `~/.local/bin` or an
//! `AZURE_CLIENT_ID` set in `.profile` would be missing, and so would the
//! proxy and CA settings that let the terminal reach Azure from behind a
//! corporate proxy. `service install` records them in `$XDG_CONFIG_HOME/bastiond/environment` (mode 0600, read
//! by the unit's `EnvironmentFile=`), never in the unit itself.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// Variables the credentials read: `PATH` (to find `az`/`azd`) and Azure's own.
const KEPT_PREFIX: &str = "AZURE_";
/// How the daemon (and the `az` it runs) reach Azure from a managed network:
/// proxies, and the CA bundles a TLS-inspecting proxy needs trusted.
const KEPT_NAMES: [&str; 13] = [
    "PATH",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
];
/// Names whose values are secrets: masked when shown.
const SECRET_MARKERS: [&str; 4] = ["SECRET", "PASSWORD", "TOKEN", "CERTIFICATE"];

/// How values are written.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Show {
    Plain,
    /// Secret values replaced by a note (for `--dry-run`).
    Masked,
}

/// `$XDG_CONFIG_HOME`, else `~/.config`.
pub fn config_home() -> anyhow::Result<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .context("neither XDG_CONFIG_HOME nor HOME is set")
}

/// Where the unit reads it (`%E/bastiond/environment`).
pub fn path() -> anyhow::Result<PathBuf> {
    Ok(config_home()?.join("bastiond").join("environment"))
}

/// The variables to record, from `vars` (the current environment), sorted.
pub fn from_environment(vars: impl Iterator<Item = (OsString, OsString)>) -> Vec<(String, String)> {
    let mut kept: Vec<(String, String)> = vars
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .filter(|(name, value)| {
            (KEPT_NAMES.contains(&name.as_str()) || name.starts_with(KEPT_PREFIX))
                && !value.contains('\n')
        })
        .collect();
    kept.sort();
    kept
}

/// The file's text: `NAME="value"` lines, quoted as systemd reads them.
pub fn render(vars: &[(String, String)], show: Show) -> String {
    vars.iter()
        .map(|(name, value)| {
            let secret = SECRET_MARKERS.iter().any(|m| name.contains(m));
            let value = match show {
                Show::Masked if secret => {
                    format!("(hidden: {} characters)", value.chars().count())
                }
                Show::Masked => without_password(value),
                Show::Plain => value.clone(),
            };
            let value = value.replace('\\', "\\\\").replace('"', "\\\"");
            format!("{name}=\"{value}\"\n")
        })
        .collect()
}

/// `value` with the password of a URL in it (`http://user:pass@proxy:3128`)
/// masked; anything else as it is.
fn without_password(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_string();
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return value.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:hidden{}", &rest[userinfo.len()..]),
        None => value.to_string(),
    }
}

/// Writes `text` to `path`, private to the user from the first byte.
pub fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // An existing file keeps its mode on open: make sure it is private.
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("cannot make {} private", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        from_environment(
            pairs
                .iter()
                .map(|(n, v)| (OsString::from(n), OsString::from(v))),
        )
    }

    #[test]
    fn keeps_path_and_azure_settings_and_masks_secrets_when_shown() {
        let kept = vars(&[
            ("HOME", "/home/u"),
            ("PATH", "/home/u/.local/bin:/usr/bin"),
            ("AZURE_CLIENT_ID", "app-1"),
            ("AZURE_CLIENT_SECRET", "s3cret\"x"),
        ]);
        let names: Vec<&str> = kept.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "PATH"]);
        let plain = render(&kept, Show::Plain);
        assert!(
            plain.contains("AZURE_CLIENT_SECRET=\"s3cret\\\"x\"\n"),
            "{plain}"
        );
        assert!(
            plain.contains("PATH=\"/home/u/.local/bin:/usr/bin\"\n"),
            "{plain}"
        );
        let masked = render(&kept, Show::Masked);
        assert!(!masked.contains("s3cret"), "{masked}");
        assert!(masked.contains("AZURE_CLIENT_SECRET=\"(hidden: 8 characters)\""));
        assert!(masked.contains("AZURE_CLIENT_ID=\"app-1\""));
    }

    #[test]
    fn proxy_and_ca_settings_are_kept_and_proxy_passwords_masked_when_shown() {
        let kept = vars(&[
            ("HTTPS_PROXY", "http://me:pr0xy-pass@proxy.corp:3128"),
            ("no_proxy", "localhost,.corp"),
            ("SSL_CERT_FILE", "/etc/corp/ca.pem"),
            ("REQUESTS_CA_BUNDLE", "/etc/corp/ca.pem"),
            ("EDITOR", "vi"),
        ]);
        let names: Vec<&str> = kept.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "HTTPS_PROXY",
                "REQUESTS_CA_BUNDLE",
                "SSL_CERT_FILE",
                "no_proxy"
            ]
        );
        let plain = render(&kept, Show::Plain);
        assert!(
            plain.contains("http://me:pr0xy-pass@proxy.corp:3128"),
            "{plain}"
        );
        let masked = render(&kept, Show::Masked);
        assert!(!masked.contains("pr0xy-pass"), "{masked}");
        assert!(
            masked.contains("http://me:hidden@proxy.corp:3128"),
            "{masked}"
        );
        assert!(masked.contains("no_proxy=\"localhost,.corp\""), "{masked}");
    }

    #[test]
    fn the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bastiond/environment");
        write(&file, "PATH=\"/usr/bin\"\n").unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&file).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
