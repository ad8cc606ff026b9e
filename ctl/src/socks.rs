//! `socks add`: a SOCKS5 listener, which the daemon keeps as a forward whose
//! clients name the target (listed and removed with `forward`).

use std::path::PathBuf;

use anyhow::Context as _;
use bastion_proto::v1::AddForwardRequest;

use crate::cli::SocksAddArgs;
use crate::daemon::{self, rpc_error};
use crate::forward::print_added;

pub async fn add(socket: Option<PathBuf>, args: SocksAddArgs) -> anyhow::Result<()> {
    let mut client = daemon::connect_checked(socket).await?;
    let request = AddForwardRequest {
        target: None,
        local_port: u32::from(args.local_port),
        bind_address: args.bind.unwrap_or_default(),
        bastion: args.via.bastion.unwrap_or_default(),
        name: args.name.unwrap_or_default(),
        allow_other_users: args.allow_other_users,
        resource_group: args.via.resource_group.unwrap_or_default(),
        socks5: true,
    };
    let forward = client
        .add_forward(request)
        .await
        .map_err(rpc_error)?
        .into_inner()
        .forward
        .context("the daemon's answer carries no listener")?;
    print_added(&forward, args.json)
}
