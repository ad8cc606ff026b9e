//! `socks add`: a SOCKS5 listener, which the daemon keeps as a forward whose
//! clients name the target (listed and removed with `forward`).

use std::path::PathBuf;

use crate::cli::Listen;
use crate::forward::{add_listener, print_added};

pub async fn add(socket: Option<PathBuf>, listen: Listen) -> anyhow::Result<()> {
    let json = listen.json;
    let listener = add_listener(socket, None, listen).await?;
    print_added(&listener, json)
}
